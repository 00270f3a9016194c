"""The list of runs: every run with its status, a stale heartbeat shown as interrupted."""

import json
import shutil
from datetime import datetime, timedelta, timezone

import pytest

from nbtools.__main__ import main
from nbtools.runs import list_runs, plot_validation_curves, runs_table_html, runs_table_text, validation_curve


def _iso(dt):
    return dt.isoformat(timespec="seconds")


def write_run(folder, name, status, *, started, heartbeat=None, finished=None, best=None, export_path=None,
              curve=(), custom=None):
    run = folder / name
    run.mkdir(parents=True)
    record = {"task_display_name": name, "custom_model_name": custom, "model": "tiny-qwen3-vl-warm",
              "status": status, "started_at": _iso(started), "heartbeat_at": _iso(heartbeat or started),
              "finished_at": _iso(finished) if finished else None,
              "duration_s": (finished - started).total_seconds() if finished else None,
              "best": best or {}, "export_path": export_path}
    (run / "run.json").write_text(json.dumps(record))
    lines = [json.dumps({"step": 1, "loss": 0.7})]  # a training log line: not a validation point
    lines += [json.dumps({"step": s, "eval_loss": v, "eval_rewards/accuracies": 1 - v}) for s, v in curve]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return run


@pytest.fixture
def runs_folder(tmp_path):
    now = datetime.now(timezone.utc)
    folder = tmp_path / "runs"
    write_run(folder, "done", "finished", started=now - timedelta(hours=2), finished=now - timedelta(hours=1),
              best={"step": 20, "eval_loss": 0.41, "eval_rewards/accuracies": 0.9}, curve=[(10, 0.6), (20, 0.41)],
              custom="shapes-v1", export_path="/models/shapes-v1")
    write_run(folder, "broken", "failed", started=now - timedelta(hours=3), finished=now - timedelta(hours=3) +
              timedelta(seconds=42))
    write_run(folder, "live", "running", started=now - timedelta(minutes=5), heartbeat=now - timedelta(seconds=3),
              curve=[(10, 0.65)])
    write_run(folder, "killed", "running", started=now - timedelta(hours=5),
              heartbeat=now - timedelta(hours=4, minutes=30))
    bad = folder / "garbled"
    bad.mkdir()
    (bad / "run.json").write_text("{not json")
    (folder / "not-a-run").mkdir()  # no run.json: not listed
    return folder


def test_every_run_listed_with_status(runs_folder):
    runs = {r.task_display_name: r for r in list_runs(runs_folder)}
    assert set(runs) == {"done", "broken", "live", "killed", "garbled"}
    assert {name: r.status for name, r in runs.items()} == {
        "done": "finished", "broken": "failed", "live": "running", "killed": "interrupted", "garbled": "unreadable"}
    assert "no heartbeat" in runs["killed"].note
    # an interrupted run lasted until its last heartbeat
    assert runs["killed"].duration_s == pytest.approx(30 * 60, abs=2)
    assert runs["broken"].duration_s == pytest.approx(42)
    assert runs["live"].duration_s == pytest.approx(5 * 60, abs=30)
    done = runs["done"]
    assert (done.custom_model_name, done.model, done.best_eval_loss, done.best_reward_accuracy, done.export_path) == (
        "shapes-v1", "tiny-qwen3-vl-warm", 0.41, 0.9, "/models/shapes-v1")
    assert "run.json: cannot read" in runs["garbled"].note
    # newest first
    assert [r.task_display_name for r in list_runs(runs_folder)][:2] == ["live", "done"]


def test_default_export_folder_is_reported(runs_folder):
    (runs_folder / "broken" / "export").mkdir()
    broken = next(r for r in list_runs(runs_folder) if r.task_display_name == "broken")
    assert broken.export_path == str(runs_folder / "broken" / "export")


def test_tables_and_validation_curves(runs_folder, tmp_path):
    runs = list_runs(runs_folder)
    text = runs_table_text(runs)
    assert "interrupted" in text and "shapes-v1" in text and "90.0%" in text and "1h00m" in text
    assert text.splitlines()[0].split() == ["run", "task_display_name", "custom_model_name", "model", "status",
                                            "started_at", "duration", "best_eval_loss", "best_reward_accuracy",
                                            "export_path"]
    html = runs_table_html(runs)
    assert html.count("<tr>") == 1 + 5 and "no heartbeat" in html
    done = next(r for r in runs if r.task_display_name == "done")
    assert validation_curve(done.run_dir) == ([10.0, 20.0], [0.6, 0.41])
    # a line cut short by a crash is skipped, not fatal
    with open(f"{done.run_dir}/metrics.jsonl", "a") as handle:
        handle.write('{"step": 30, "eval_lo')
    assert validation_curve(done.run_dir)[0] == [10.0, 20.0]
    fig = plot_validation_curves(runs, path=tmp_path / "curves.png")
    assert [len(ax.lines) for ax in fig.axes] == [2, 2]
    assert (tmp_path / "curves.png").stat().st_size > 5000


def test_real_training_run_is_listed(trained_run, tmp_path):
    """The run folder train() writes is read as it is (finished, with a best checkpoint)."""
    copy = tmp_path / "runs" / "trained"
    copy.mkdir(parents=True)
    for name in ("run.json", "metrics.jsonl"):
        shutil.copy2(trained_run / name, copy / name)
    (run,) = list_runs(tmp_path / "runs")
    record = json.loads((trained_run / "run.json").read_text())
    assert run.status == "finished"
    assert run.task_display_name == record["task_display_name"]
    assert run.best_eval_loss == record["best"]["eval_loss"]
    assert validation_curve(copy)[0], "train() logged no eval_loss to metrics.jsonl"


def test_cli_runs_json_and_exit_codes(runs_folder, capsys, tmp_path):
    assert main(["runs", str(runs_folder), "--json", "--plot", str(tmp_path / "p.png")]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted((r["task_display_name"], r["status"]) for r in rows) == [
        ("broken", "failed"), ("done", "finished"), ("garbled", "unreadable"), ("killed", "interrupted"),
        ("live", "running")]
    assert (tmp_path / "p.png").is_file()
    assert main(["runs", str(runs_folder)]) == 0
    assert "interrupted" in capsys.readouterr().out
    assert main(["runs", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["runs", str(empty)]) == 0
    assert capsys.readouterr().out.strip() == "no runs found"
