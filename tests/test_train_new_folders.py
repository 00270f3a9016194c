"""Running 03 again is never a dead end: with the notebooks' defaults every run gets its own folder.

02 leaves output_dir empty and 03 passes its runs_dir to train(), so each run is made in a new
folder <task name>-<UTC time> there (RunConfig.resolved_output_dir's name, the CLI's default), and
04 evaluates the newest finished run of that folder (nbtools.runs.newest_run).
"""

from __future__ import annotations

import json
from pathlib import Path

import papermill
import pytest

from nbtools.errors import UserError
from nbtools.runs import newest_run
from nbtools.train import read_run, train

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def defaults(notebook: str) -> dict:
    """The parameters cell's values, as papermill reads them (literals, so eval is the literal's value)."""
    listed = papermill.inspect_notebook(str(NOTEBOOKS / notebook))
    return {name: eval(p["default"]) for name, p in listed.items()}  # noqa: S307 - literals checked by test_notebooks


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_training_twice_with_the_notebooks_defaults_makes_two_run_folders(shapes_config, small_shapes, tmp_path):
    output_dir, runs_dir = defaults("02_configure.ipynb")["output_dir"], defaults("03_train.ipynb")["runs_dir"]
    assert (output_dir, runs_dir) == ("", "runs/notebooks")
    runs = tmp_path / runs_dir
    config = shapes_config(output_dir, task_display_name="again", model="tiny-qwen3-vl",
                           train_file=str(small_shapes / "train.jsonl"),
                           validation_file=str(small_shapes / "validation.jsonl"), max_steps=1, eval_steps=1,
                           save_steps=1, logging_steps=1)
    first = train(config, live=False, runs_dir=runs)
    kept = snapshot(first.run_dir)
    second = train(config.replace(learning_rate=config.learning_rate / 2), live=False, runs_dir=runs)  # 02 edited
    assert first.run_dir != second.run_dir
    assert sorted(p.name for p in runs.iterdir()) == sorted([first.run_dir.name, second.run_dir.name])
    for run in (first, second):
        assert run.run_dir.parent == runs and run.run_dir.name.startswith("again-20")
        assert read_run(run.run_dir)["status"] == "finished"
    assert snapshot(first.run_dir) == kept  # nothing of the first run lost or changed
    assert read_run(second.run_dir)["config"]["learning_rate"] == config.learning_rate / 2
    assert newest_run(runs, "finished") == second.run_dir  # what 04 evaluates by default


def fake_run(folder: Path, status: str, started_at: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"status": status, "started_at": started_at,
                                                 "task_display_name": folder.name}))
    return folder


def test_newest_run_is_the_latest_started_of_the_asked_status(tmp_path):
    older = fake_run(tmp_path / "a-20260101-000000", "finished", "2026-01-01T00:00:00+00:00")
    newer = fake_run(tmp_path / "a-20260102-000000", "finished", "2026-01-02T00:00:00+00:00")
    failed = fake_run(tmp_path / "a-20260103-000000", "failed", "2026-01-03T00:00:00+00:00")
    same_second = fake_run(tmp_path / "a-20260102-000000-2", "finished", "2026-01-02T00:00:00+00:00")
    assert newest_run(tmp_path) == failed
    assert newest_run(tmp_path, "finished") == same_second
    assert {older, newer} < set(tmp_path.iterdir())


def test_no_run_to_pick_names_the_folder_and_the_fix(tmp_path):
    fake_run(tmp_path / "a", "failed", "2026-01-01T00:00:00+00:00")
    with pytest.raises(UserError) as info:
        newest_run(tmp_path, "finished")
    assert str(info.value) == (f"{tmp_path}: no finished run in this folder (fix: run 03_train.ipynb first, or set "
                               "output_dir to the run folder you mean)")


def test_the_command_line_puts_new_runs_in_runs_dir(shapes_config, small_shapes, tmp_path, monkeypatch, capsys):
    from nbtools.__main__ import main

    monkeypatch.chdir(tmp_path)  # the default runs/ would be here
    config = shapes_config("", task_display_name="cli", model="tiny-qwen3-vl",
                           train_file=str(small_shapes / "train.jsonl"),
                           validation_file=str(small_shapes / "validation.jsonl"), max_steps=1, eval_steps=1,
                           save_steps=1, logging_steps=1)
    config.to_yaml(tmp_path / "run.yaml")
    assert main(["train", str(tmp_path / "run.yaml"), "--runs-dir", str(tmp_path / "elsewhere"), "--quiet"]) == 0
    [made] = (tmp_path / "elsewhere").iterdir()
    assert made.name.startswith("cli-20") and read_run(made)["status"] == "finished"
    assert not (tmp_path / "runs").exists()
    assert capsys.readouterr().out.strip().startswith(f"finished: {made} (")
