"""One contract for every entry point: a result, or one line with exit 2 (input) or 3 (internal, details in a file).

Exit 1 stays reserved for "your data has errors" (validate); no entry point prints a traceback.
In-process ``main(argv)`` for most commands, a subprocess for two, IPython for the notebook view.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nbtools import __main__ as nbtools_main
from nbtools import demo, sweep
from nbtools.errors import UserError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """Internal-error logs go to $NBTOOLS_CACHE_DIR/errors (no tiny model is needed by these tests)."""
    root = tmp_path / "cache"
    monkeypatch.setenv("NBTOOLS_CACHE_DIR", str(root))
    return root


def _one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def _boom(*args, **kwargs):
    raise RuntimeError("boom\nsecond line")


def _bad(*args, **kwargs):
    raise UserError("data.jsonl:3: field: bad thing (fix: do this)")


# command -> (module, attribute the command calls, argv)
COMMANDS = {
    "validate": ("nbtools.data.validate", "validate_dataset", ["validate", "data.jsonl"]),
    "train": ("nbtools.train", "train", ["train", "{config}"]),
    "evaluate": ("nbtools.evaluate", "evaluate_run", ["evaluate", "run"]),
    "export": ("nbtools.export", "save_adapter", ["export", "run"]),
    "serve": ("nbtools.serve", "load_served", ["serve", "run", "--port", "0"]),
    "runs": ("nbtools.runs", "list_runs", ["runs", "{folder}"]),
    "convert": ("nbtools.data.convert_files", "convert", ["convert", "data.jsonl", "data.parquet"]),
}


def _argv(argv, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("task_display_name: t\n")
    return [a.format(config=config, folder=tmp_path) for a in argv]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_internal_error_is_one_line_exit_3_with_the_details_in_a_file(command, tmp_path, cache, monkeypatch,
                                                                        capsys):
    import importlib

    module, name, argv = COMMANDS[command]
    monkeypatch.setitem(vars(importlib.import_module(module)), name, _boom)  # (no lazy import of the original)
    assert nbtools_main.main(_argv(argv, tmp_path)) == 3
    line = _one_line(capsys.readouterr().err)
    logs = list((cache / "errors").glob("*.log"))
    assert len(logs) == 1
    assert line == (f"nbtools {command}: internal error: RuntimeError: boom second line (details: {logs[0]}; please "
                    "report this with that file)")
    details = logs[0].read_text()
    assert "Traceback (most recent call last)" in details and "RuntimeError: boom" in details


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_user_error_is_one_line_exit_2(command, tmp_path, cache, monkeypatch, capsys):
    import importlib

    module, name, argv = COMMANDS[command]
    monkeypatch.setitem(vars(importlib.import_module(module)), name, _bad)
    assert nbtools_main.main(_argv(argv, tmp_path)) == 2
    assert _one_line(capsys.readouterr().err) == "error: data.jsonl:3: field: bad thing (fix: do this)"
    assert not (cache / "errors").exists()


def test_a_full_disk_is_a_user_error_with_the_fix(tmp_path, cache, monkeypatch, capsys):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "run" / "run.json"))

    monkeypatch.setattr("nbtools.runs.list_runs", full)
    assert nbtools_main.main(["runs", str(tmp_path)]) == 2
    assert _one_line(capsys.readouterr().err) == (f"error: {tmp_path / 'run' / 'run.json'}: No space left on device "
                                                  "(fix: free disk space (or choose another output folder), then run "
                                                  "again)")


def test_sweep_entry_point(tmp_path, cache, monkeypatch, capsys):
    assert sweep.main(["--grid", "betta=0.1,0.5", "--out", str(tmp_path / "sweep")]) == 2
    assert _one_line(capsys.readouterr().err).startswith("error: betta: is not a RunConfig setting (fix: did you "
                                                         "mean 'beta'?")
    monkeypatch.setattr(sweep, "run_sweep", _boom)
    assert sweep.main(["--grid", "beta=0.1,0.5"]) == 3
    assert _one_line(capsys.readouterr().err).startswith("nbtools.sweep: internal error: RuntimeError: boom")


def test_demo_entry_point_never_returns_1_and_never_deletes_a_users_folder(tmp_path, cache, monkeypatch, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    assert demo.main(["--out", str(mine)]) == 2
    assert _one_line(capsys.readouterr().err) == (
        f"error: --out: {mine} already holds files that are not a previous demo; the demo replaces its folder on "
        "every run, so it will not use this one (fix: pass a new or empty folder)")
    assert (mine / "thesis.tex").read_text() == "years of work"

    def failed_notebook(*args, **kwargs):
        raise demo.DemoError("03_train.ipynb failed in cell 4: ConfigError: beta: ...; the executed notebook is x")

    monkeypatch.setattr(demo, "run_demo", failed_notebook)
    assert demo.main([]) == 2
    assert _one_line(capsys.readouterr().err).startswith("error: 03_train.ipynb failed in cell 4")
    monkeypatch.setattr(demo, "run_demo", _boom)
    assert demo.main([]) == 3
    assert _one_line(capsys.readouterr().err).startswith("nbtools.demo: internal error: RuntimeError: boom")


def test_a_notebook_shows_a_user_error_as_its_message_not_a_traceback(capfd):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        capfd.readouterr()
        shell.run_cell("from nbtools.config import RunConfig\nRunConfig(beta=-1)")
        shown = capfd.readouterr().out
        assert "Traceback" not in shown and "File " not in shown
        assert shown.strip() == ("ConfigError: beta: -1.0 is below the minimum 0.0001 (fix: set beta to 0.0001 or "
                                 "more)")
        shell.run_cell("raise ValueError('a bug')")  # anything else keeps its traceback for the bug report
        assert "Traceback" in capfd.readouterr().out
    finally:
        InteractiveShell.clear_instance()


# --- through a real process -----------------------------------------------------------------------

def _run(args, cwd, **env):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **env})


def test_cli_process_duplicate_yaml_key(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("beta: 0.1\nlearning_rate: 1e-4\nbeta: 0.5\n")
    done = _run(["-m", "nbtools", "train", str(config)], tmp_path)
    assert done.returncode == 2
    assert _one_line(done.stderr) == (f"error: {config}:3: beta: set twice (first on line 1); YAML would silently "
                                      "keep the last value (fix: delete one of the two lines)")


def test_cli_process_lists_runs_around_a_damaged_one(tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    (good / "run.json").write_text(json.dumps({"task_display_name": "good-run", "status": "finished",
                                               "started_at": "2026-01-01T00:00:00+00:00"}))
    for name, text in {"bad-json": "{", "bad-types": json.dumps({"best": [1], "status": "finished"}),
                       "deep": "[" * 5000 + "]" * 5000, "bad-number": json.dumps({"duration_s": "long"})}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(text)
    done = _run(["-m", "nbtools", "runs", str(tmp_path), "--json"], tmp_path)
    assert done.returncode == 0, done.stderr
    rows = {Path(r["run_dir"]).name: r for r in json.loads(done.stdout)}
    assert rows["good"]["status"] == "finished" and rows["good"]["task_display_name"] == "good-run"
    for name in ("bad-json", "bad-types", "deep", "bad-number"):
        assert rows[name]["status"] == "unreadable", name
        assert rows[name]["note"].startswith(f"{tmp_path / name / 'run.json'}: cannot read ("), name


# --- train: the run folder gets the details ---------------------------------------------------------

def _small_dataset(data_dir, make_pair, n=3):
    data_dir.image("img.jpg", size=(64, 64))
    return data_dir.jsonl([make_pair(chosen=f"It is red {i}.", rejected=f"It is blue {i}.") for i in range(n)])


def _train_yaml(tmp_path, train_file, **extra):
    settings = {"model": "tiny-qwen3-vl", "train_file": str(train_file), "output_dir": str(tmp_path / "run"),
                "validation_split": 0, "max_steps": 1, "num_workers": 0, **extra}
    path = tmp_path / "run.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in settings.items()))
    return path


def test_train_internal_error_goes_to_the_run_folder_error_log(tmp_path, data_dir, make_pair, monkeypatch, capsys):
    from nbtools.train import read_run, runner

    def broken_loader(*args, **kwargs):
        raise RuntimeError("weights are scrambled")

    monkeypatch.setattr(runner, "load_policy", broken_loader)
    config = _train_yaml(tmp_path, _small_dataset(data_dir, make_pair))
    assert nbtools_main.main(["train", str(config)]) == 3
    run = tmp_path / "run"
    assert _one_line(capsys.readouterr().err) == (
        f"nbtools train: internal error: RuntimeError: weights are scrambled (details: {run / 'error.log'}; please "
        "report this with that file)")
    assert "Traceback" in (run / "error.log").read_text() and "broken_loader" in (run / "error.log").read_text()
    record = read_run(run)
    assert (record["status"], record["error"]) == ("failed", "RuntimeError: weights are scrambled")
    assert not (run / ".nbtools-lock.json").exists()


def test_train_refusals_leave_no_run_folder(tmp_path, data_dir, make_pair, capsys):
    import importlib.util

    empty = data_dir.root / "empty.jsonl"
    empty.write_text("")
    assert nbtools_main.main(["train", str(_train_yaml(tmp_path, empty))]) == 2
    assert _one_line(capsys.readouterr().err) == (f"error: {empty}: the file holds no preference pairs (fix: write "
                                                  "one JSON object per line, see the data format in the README)")
    assert not (tmp_path / "run").exists()
    broken = data_dir.root / "broken.jsonl"
    broken.write_text("{not json\n")
    config = _train_yaml(tmp_path, _small_dataset(data_dir, make_pair), validation_file=str(broken))
    assert nbtools_main.main(["train", str(config)]) == 2
    assert f"{broken}:1: error: line: not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()

    if importlib.util.find_spec("wandb") is None:
        config = _train_yaml(tmp_path, _small_dataset(data_dir, make_pair), report_to="wandb")
        assert nbtools_main.main(["train", str(config)]) == 2
        assert _one_line(capsys.readouterr().err) == ("error: report_to: wandb needs the wandb package, which is not "
                                                      "installed (fix: pip install wandb, or set report_to: none)")
        assert not (tmp_path / "run").exists()

    user_files = tmp_path / "run"
    user_files.mkdir()
    (user_files / "metrics.jsonl").write_text("my metrics\n")
    (user_files / "adapter").mkdir()
    config = _train_yaml(tmp_path, _small_dataset(data_dir, make_pair))
    assert nbtools_main.main(["train", str(config)]) == 2
    assert "already holds files that are not a run (adapter)" in _one_line(capsys.readouterr().err)
    assert (user_files / "metrics.jsonl").read_text() == "my metrics\n"
    assert sorted(p.name for p in user_files.iterdir()) == ["adapter", "metrics.jsonl"]
