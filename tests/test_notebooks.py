"""The committed notebooks: clean, thin, and parameterisable by papermill (no kernel needed here)."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest
import papermill

from nbtools.config import RunConfig
from nbtools.prepare import PrepareConfig

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))

EXPECTED = ["00_prepare_data.ipynb", "01_inspect_data.ipynb", "02_configure.ipynb", "03_train.ipynb", "04_evaluate.ipynb"]
# Parameter names that are not RunConfig fields, by notebook (paths and switches of that step).
EXTRA_PARAMETERS = {
    "00_prepare_data.ipynb": {"preview_rows"},
    "01_inspect_data.ipynb": {"preview_rows"},
    "02_configure.ipynb": {"config_file"},
    "03_train.ipynb": {"config_file", "resume", "runs_dir"},
    "04_evaluate.ipynb": {"eval_file", "lab_samples", "max_new_tokens", "export_dir", "merged", "runs_dir", "base_url",
                          "tuned_url", "benchmark_file", "benchmark_images", "benchmark_items"},
}
CONTROL_FLOW = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.For, ast.While, ast.If, ast.With,
                ast.Try, ast.Lambda)


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def code_source(cell: dict) -> str:
    source = "".join(cell["source"])
    # IPython magics are not Python; the notebooks use only line magics such as %matplotlib inline
    return "\n".join("pass" if line.startswith("%") else line for line in source.splitlines())


def parameters_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]


def test_the_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    nb = load(path)
    dirty = [i for i, c in enumerate(nb["cells"])
             if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
    assert dirty == [], f"{path.name}: cells {dirty} have outputs; clear them (jupyter nbconvert --clear-output)"
    assert "widgets" not in nb["metadata"], f"{path.name}: saved widget state; clear outputs before committing"
    assert "papermill" not in nb["metadata"], f"{path.name}: this is an executed copy, not the source"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_exactly_one_parameters_cell_of_typed_commented_literals(path):
    cells = parameters_cells(load(path))
    assert len(cells) == 1
    for line in "".join(cells[0]["source"]).splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        statement = ast.parse(line.split("  #")[0]).body
        assert len(statement) == 1 and isinstance(statement[0], ast.AnnAssign), line
        ast.literal_eval(statement[0].value)  # a literal: nothing derived in the parameters cell
        assert "  # " in line, f"{path.name}: parameter without a help comment: {line}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_papermill_lists_every_parameter_with_its_help(path):
    nb = load(path)
    cell_names = [ast.parse(line.split("  #")[0]).body[0].target.id
                  for line in "".join(parameters_cells(nb)[0]["source"]).splitlines()
                  if line.strip() and not line.lstrip().startswith("#")]
    listed = papermill.inspect_notebook(str(path))  # what `papermill --help-notebook` prints
    assert list(listed) == cell_names  # papermill skips lines it cannot parse (e.g. a '=' in a comment)
    assert all(p["help"] for p in listed.values())
    assert all(p["inferred_type_name"] not in ("None", "") for p in listed.values())


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameter_names_follow_the_config(path):
    listed = set(papermill.inspect_notebook(str(path)))
    config_class = PrepareConfig if path.name == "00_prepare_data.ipynb" else RunConfig  # step 0 has its own
    fields = {f.name for f in dataclasses.fields(config_class)}
    assert listed - fields - EXTRA_PARAMETERS[path.name] == set()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_logic_in_notebooks(path):
    for cell in load(path)["cells"]:
        if cell["cell_type"] != "code":
            continue
        tree = ast.parse(code_source(cell))
        flow = [type(node).__name__ for node in ast.walk(tree) if isinstance(node, CONTROL_FLOW)]
        assert flow == [], f"{path.name}: move this logic into nbtools: {''.join(cell['source'])[:200]}"
        assert len(code_source(cell).splitlines()) <= 25


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.name not in ("00_prepare_data.ipynb", "02_configure.ipynb")], ids=lambda p: p.name)
def test_figures_render_whatever_the_matplotlib_backend(path):
    # make test exports MPLBACKEND=Agg; without %matplotlib inline the executed notebook keeps no plot
    sources = ["".join(c["source"]) for c in load(path)["cells"] if c["cell_type"] == "code"]
    assert any("%matplotlib inline" in s for s in sources)


def parameter_defaults(path: Path) -> dict:
    cell = parameters_cells(load(path))[0]
    return {node.target.id: ast.literal_eval(node.value) for node in ast.parse("".join(cell["source"])).body
            if isinstance(node, ast.AnnAssign)}


def test_01_checks_the_data_with_the_settings_02_trains_with():
    # 01 counts too-long pairs and image tokens with its own parameters: a default that differs from 02's
    # would report "nothing too long" for pairs 03 then drops
    checking, training = (parameter_defaults(NOTEBOOKS_DIR / name) for name in ("01_inspect_data.ipynb",
                                                                                 "02_configure.ipynb"))
    shared = set(checking) & set(training)
    assert {"model", "max_pixels", "max_context_length", "validation_file"} <= shared
    assert {name: (checking[name], training[name]) for name in shared if checking[name] != training[name]} == {}


def test_demo_passes_only_parameters_the_notebooks_take():
    # papermill injects unknown names without complaint; a typo here would silently do nothing
    from nbtools.demo import DEMO_TRAINING, NOTEBOOKS as DEMO_ORDER, demo_parameters

    fields = {f.name for f in dataclasses.fields(RunConfig)}
    parameters = demo_parameters(Path("/tmp/demo"), "tiny-qwen3-vl-warm", None)
    assert list(parameters) == list(DEMO_ORDER) == [p.stem for p in NOTEBOOKS if p.name != "00_prepare_data.ipynb"]
    for name, values in parameters.items():
        listed = set(papermill.inspect_notebook(str(NOTEBOOKS_DIR / f"{name}.ipynb")))
        # 02 and 03 read every RunConfig field from their namespace (config_from_parameters(globals()))
        known = listed | fields if name in ("02_configure", "03_train") else listed
        assert set(values) <= known, (name, set(values) - known)
    training = RunConfig(**{k: v for k, v in parameters["02_configure"].items() if k in fields})
    assert training.max_steps == DEMO_TRAINING["max_steps"] and training.save_steps % training.eval_steps == 0


def test_configure_defaults_are_the_demo_run():
    # users who open the notebooks and run them top to bottom get the run `make demo` shows
    from nbtools.demo import DEMO_TRAINING

    defaults = {name: ast.literal_eval(p["default"])
                for name, p in papermill.inspect_notebook(str(NOTEBOOKS_DIR / "02_configure.ipynb")).items()}
    assert {k: defaults[k] for k in DEMO_TRAINING} == DEMO_TRAINING


def _payload(base, base_ci, tuned, tuned_ci):
    return {"n_pairs": 60, "base": {"preference_accuracy": base, "ci95": {"preference_accuracy": base_ci}},
            "tuned": {"preference_accuracy": tuned, "ci95": {"preference_accuracy": tuned_ci}}}


def test_demo_headline_says_whether_the_intervals_separate():
    from nbtools.demo import accuracy_headline

    separated = accuracy_headline(_payload(0.5, [0.37, 0.63], 1.0, [1.0, 1.0]))
    assert separated.splitlines() == [
        "preference accuracy on 60 held-out pairs: base 0.50 [0.37, 0.63] -> tuned 1.00 [1.00, 1.00]",
        "the 95% intervals do not overlap: the tuned model is better beyond sampling noise"]
    overlapping = accuracy_headline(_payload(0.9, [0.82, 0.97], 0.95, [0.9, 1.0]))
    assert overlapping.endswith("the 95% intervals overlap: this run shows no difference beyond sampling noise")
    worse = accuracy_headline(_payload(0.9, [0.82, 0.97], 0.5, [0.37, 0.63]))
    assert worse.endswith("the tuned model is WORSE than the base model")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_with_the_metadata_jupyterlab_writes_when_the_kernel_starts(path):
    """Otherwise JupyterLab marks the notebook modified as soon as it is opened (the browser test checks that)."""
    nb = load(path)
    assert nb["metadata"]["kernelspec"] == {"display_name": "Python 3 (ipykernel)", "language": "python",
                                            "name": "python3"}
    info = nb["metadata"]["language_info"]
    assert set(info) == {"codemirror_mode", "file_extension", "mimetype", "name", "nbconvert_exporter",
                         "pygments_lexer", "version"}
    assert info["codemirror_mode"] == {"name": "ipython", "version": 3} and info["pygments_lexer"] == "ipython3"
