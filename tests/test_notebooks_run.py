"""The four notebooks run headless, keep their outputs, and reproduce under nbval.

How (and why this way): the committed notebooks carry no outputs, and nbval compares a cell's
new output with the output stored in the notebook. So the test first executes 01 -> 04 with
papermill on the tiny model with short parameters (injected, so the committed defaults can
stay meaningful for users), keeps those executed notebooks as artifacts, and then runs them
under ``nbval --nbval-lax`` in a fresh project folder: every cell must run without error, and
the cells marked ``# NBVAL_CHECK_OUTPUT`` must reproduce their outputs (after
tests/nbval_sanitize.cfg masks paths, durations and addresses).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import papermill
import pytest

from nbtools.config import RunConfig

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts" / "notebooks"
SANITIZE = REPO / "tests" / "nbval_sanitize.cfg"
ORDER = ["01_inspect_data", "02_configure", "03_train", "04_evaluate"]
# The random tiny Qwen3-VL: same architecture and cost as the warm one the defaults name, and
# built in seconds (the warm start is exercised by `make demo` and the models' tests).
MODEL = "tiny-qwen3-vl"
SHORT_RUN = {"model": MODEL, "max_steps": 2, "eval_steps": 2, "save_steps": 2, "logging_steps": 1, "batch_size": 2}

pytestmark = pytest.mark.slow


def make_project(folder: Path) -> Path:
    """A scratch copy of the project layout: notebooks/ plus the sample data (linked)."""
    (folder / "notebooks").mkdir(parents=True)
    (folder / "data_samples").symlink_to(REPO / "data_samples")
    return folder


def small_validation_file(folder: Path, n: int = 12) -> Path:
    """The first n sample validation pairs (image paths made absolute): evaluations stay quick."""
    source = REPO / "data_samples" / "shapes" / "validation.jsonl"
    lines = []
    for line in source.read_text().splitlines()[:n]:
        row = json.loads(line)
        row["images"] = [str(source.parent / image) for image in row["images"]]
        lines.append(json.dumps(row))
    path = folder / "validation_small.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def the_run(project: Path) -> Path:
    """The run 03 made: its own folder <task name>-<UTC time> in runs/notebooks (02 leaves output_dir empty)."""
    runs = sorted((project / "runs" / "notebooks").glob("nb-test-*"))
    assert len(runs) == 1, runs
    return runs[0]


def outputs(nb: dict) -> list[dict]:
    return [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]


def has_output(nb: dict, mime: str, containing: str = "") -> bool:
    """An output of that MIME type containing the text; printed text counts as text/plain."""
    for o in outputs(nb):
        if o["output_type"] == "stream" and mime == "text/plain" and o["name"] == "stdout":
            if containing in "".join(o["text"]):
                return True
        elif mime in o.get("data", {}) and containing in "".join(o["data"][mime]):
            return True
    return False


@pytest.fixture(scope="session")
def executed(tmp_path_factory):
    """01 -> 04 executed once with papermill, as `make demo` does, in a scratch project."""
    shared = tmp_path_factory.mktemp("notebook-data")
    validation = small_validation_file(shared)
    project = make_project(tmp_path_factory.mktemp("papermill") / "project")
    parameters = {
        "01_inspect_data": {"validation_file": str(validation), "model": MODEL},
        "02_configure": {**SHORT_RUN, "validation_file": str(validation), "task_display_name": "nb-test"},
        "03_train": {},
        "04_evaluate": {"lab_samples": 2, "max_new_tokens": 8, "benchmark_items": 4},
    }
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    results = {}
    for name in ORDER:
        out = project / "notebooks" / f"{name}.ipynb"
        try:
            papermill.execute_notebook(str(REPO / "notebooks" / f"{name}.ipynb"), str(out),
                                       parameters=parameters[name], cwd=str(project / "notebooks"),
                                       progress_bar=False, kernel_name="python3")
        finally:
            if out.exists():
                shutil.copy(out, ARTIFACTS / out.name)
        results[name] = json.loads(out.read_text())
    return {"project": project, "notebooks": results, "validation": validation}


def test_inspect_notebook_keeps_report_plots_and_gallery(executed):
    nb = executed["notebooks"]["01_inspect_data"]
    assert has_output(nb, "text/plain", "240 rows, 240 valid; 0 errors")
    assert has_output(nb, "text/plain", "Pairs: 240 with 1 image.")  # the checked summary, not a raw dict
    assert has_output(nb, "image/png")  # the statistics figure
    assert has_output(nb, "text/html", "nbt-preview")  # the gallery of pairs with thumbnails
    assert has_output(nb, "text/html", "<img src=\"data:image/")  # thumbnails inlined: the saved notebook keeps them


def test_configure_notebook_saves_the_parameters_without_a_click(executed):
    project = executed["project"]
    nb = executed["notebooks"]["02_configure"]
    saved = RunConfig.from_yaml(project / "runs" / "notebooks" / "config.yaml")
    assert (saved.max_steps, saved.eval_steps, saved.task_display_name) == (2, 2, "nb-test")
    assert saved.validation_file == str(executed["validation"])
    assert saved.train_file == str(project / "data_samples" / "shapes" / "train.jsonl")
    assert has_output(nb, "application/vnd.jupyter.widget-view+json")  # the form
    assert has_output(nb, "text/html", "<b>2</b>")  # the saved summary: max_steps changed from 0
    assert not has_output(nb, "text/html", "Estimate unavailable")


def test_train_notebook_trains_from_the_saved_config_and_keeps_the_live_figure(executed):
    run_dir = the_run(executed["project"])
    nb = executed["notebooks"]["03_train"]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished"
    assert record["task_display_name"] == "nb-test"  # from 02's YAML, not the 03 parameters (None)
    assert RunConfig.from_yaml(run_dir / "config.yaml").max_steps == 2
    steps = [json.loads(line).get("step") for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert max(s for s in steps if s is not None) == 2
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert has_output(nb, "image/png")  # the live figure, final state
    assert has_output(nb, "text/html", "adapter/")  # the run folder listing


def test_evaluate_notebook_evaluates_exports_and_lists_runs(executed):
    run_dir = the_run(executed["project"])
    nb = executed["notebooks"]["04_evaluate"]
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert evaluation["n_pairs"] == 12
    assert set(evaluation) >= {"base", "tuned"}
    answers = json.loads((run_dir / "answers" / "colour_questions.json").read_text())  # the default benchmark
    assert (answers["mode"], answers["n_items"], answers["decoding"]["max_new_tokens"]) == ("short_answer", 4, 8)
    assert has_output(nb, "text/plain", "accuracy on 4 questions of colour_questions: base ")
    assert has_output(nb, "text/plain", "Both models answered 4 questions of colour_questions (short answers) with "
                      "the same greedy settings")
    assert has_output(nb, "text/html", "nbt-answers")  # the table
    assert "## Answers" in (run_dir / "export" / "merged" / "README.md").read_text()
    assert (run_dir / "export" / "merged" / "README.md").is_file()
    card = (run_dir / "export" / "merged" / "README.md").read_text()  # meant for the Hub: no path of this machine
    assert str(executed["project"]) not in card and "/tmp/" not in card and "ipykernel_launcher" not in card
    assert (run_dir / "export" / "merged" / "config.json").is_file()
    assert has_output(nb, "text/plain", "The export answers exactly as the tuned model did.")
    assert has_output(nb, "text/html", "nbt-card")  # the model card, shown inline
    assert has_output(nb, "text/html", "<img src=\"data:image/png;base64")
    assert has_output(nb, "text/html", "nb-test")  # the run list shows the run
    assert has_output(nb, "text/html", "<img src=\"data:image/png;base64")  # side by side, images inlined
    assert (run_dir / "lab" / "side_by_side.html").is_file()
    assert has_output(nb, "image/png")


def test_nbval_reruns_every_notebook_and_reproduces_checked_outputs(executed, tmp_path):
    project = make_project(tmp_path / "project")
    for name in ORDER:
        shutil.copy(executed["project"] / "notebooks" / f"{name}.ipynb", project / "notebooks")
    code_cells = sum(1 for name in ORDER for c in executed["notebooks"][name]["cells"] if c["cell_type"] == "code")
    checked = sum(1 for name in ORDER for c in executed["notebooks"][name]["cells"]
                  if c["cell_type"] == "code" and "# NBVAL_CHECK_OUTPUT" in "".join(c["source"]))
    assert checked >= 6
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax", "--nbval-current-env",
               f"--nbval-sanitize-with={SANITIZE}", "--nbval-cell-timeout=900",
               *[f"notebooks/{name}.ipynb" for name in ORDER]]
    done = subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=1800)
    report = done.stdout[-6000:] + done.stderr[-2000:]
    assert done.returncode == 0, report
    passed = re.search(r"(\d+) passed", done.stdout)
    assert passed and int(passed.group(1)) == code_cells, report


def test_train_notebook_resumes_an_interrupted_run(executed):
    # runs last: it rewrites the run folder the tests above read
    project = executed["project"]
    run_dir = the_run(project)
    record = json.loads((run_dir / "run.json").read_text())
    record["status"] = "interrupted"  # what a stopped kernel leaves (the checkpoint at step 2 is complete)
    (run_dir / "run.json").write_text(json.dumps(record))
    shutil.rmtree(run_dir / "adapter")
    out = project / "notebooks" / "03_train-resumed.ipynb"
    papermill.execute_notebook(str(REPO / "notebooks" / "03_train.ipynb"), str(out), parameters={"resume": True},
                               cwd=str(project / "notebooks"), progress_bar=False, kernel_name="python3")
    shutil.copy(out, ARTIFACTS / out.name)
    assert the_run(project) == run_dir  # resume=True continued the newest run: no new folder
    resumed = json.loads((run_dir / "run.json").read_text())
    assert resumed["status"] == "finished"
    assert resumed["resume_count"] == 1
    assert resumed["resumed_from"] == "checkpoints/checkpoint-2"
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
