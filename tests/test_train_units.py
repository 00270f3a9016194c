"""Training pieces that need no model: diagnosis, run record, live figure, checkpoints, DPOConfig mapping."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from nbtools.config import ConfigError, RunConfig
from nbtools.live import LiveMonitor, format_line
from nbtools.train import diagnose, read_run
from nbtools.run_folder.record import RunRecord
from nbtools.train.trainer import complete_checkpoints, remove_partial_checkpoints


def _history(train, evals, every=10):
    rows = [{"step": (i + 1) * every, "loss": v} for i, v in enumerate(train)]
    rows += [{"step": s, "eval_loss": v} for s, v in evals]
    return sorted(rows, key=lambda r: r["step"])


def test_diagnosis_learning_well():
    d = diagnose(_history([0.69, 0.6, 0.5, 0.4, 0.3, 0.25], [(20, 0.6), (40, 0.45), (60, 0.35)]))
    assert d.verdict == "learning"
    assert d.message.startswith("Learning well: training loss")
    assert d.best_step == 60


def test_diagnosis_overfitting_names_best_step():
    d = diagnose(_history([0.69, 0.5, 0.3, 0.2, 0.1, 0.05], [(20, 0.55), (40, 0.5), (60, 0.62)]))
    assert d.verdict == "overfitting"
    assert d.best_step == 40
    assert "Use the checkpoint of step 40" in d.message


def test_diagnosis_flat_or_rising_says_review():
    d = diagnose(_history([0.693, 0.694, 0.692, 0.695, 0.693, 0.696], [(20, 0.693), (40, 0.694), (60, 0.695)]))
    assert d.verdict == "not_learning"
    assert "Review the data" in d.message and "config" in d.message


def test_diagnosis_too_early_and_without_validation():
    assert diagnose([{"step": 1, "loss": 0.69}]).verdict == "too_early"
    assert diagnose(_history([0.69, 0.5, 0.4], [])).verdict == "no_validation"
    assert diagnose(_history([0.69, 0.5, 0.4], [(20, 0.5)])).verdict == "too_early"


def _stamp(seconds_ago: float) -> str:
    return (datetime.now(timezone.utc) - timedelta(seconds=seconds_ago)).isoformat(timespec="seconds")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_read_run_marks_stale_or_dead_runs_interrupted(tmp_path):
    base = {"status": "running", "started_at": _stamp(100)}
    (tmp_path / "run.json").write_text(json.dumps({**base, "heartbeat_at": _stamp(5),
                                                   "process": {"pid": os.getpid(), "hostname": "elsewhere"}}))
    assert read_run(tmp_path)["status"] == "running"  # fresh heartbeat, other machine: trust it
    (tmp_path / "run.json").write_text(json.dumps({**base, "heartbeat_at": _stamp(600),
                                                   "process": {"pid": os.getpid(), "hostname": "elsewhere"}}))
    record = read_run(tmp_path)
    assert record["status"] == "interrupted" and record["status_reason"].startswith("no heartbeat for 6")
    import socket

    (tmp_path / "run.json").write_text(json.dumps({**base, "heartbeat_at": _stamp(1),
                                                   "process": {"pid": _dead_pid(), "hostname": socket.gethostname()}}))
    assert read_run(tmp_path)["status"] == "interrupted"
    (tmp_path / "run.json").write_text(json.dumps({"status": "finished", "heartbeat_at": _stamp(9999)}))
    assert read_run(tmp_path)["status"] == "finished"  # finished runs are never rewritten


def test_run_record_heartbeat_moves_and_writes_atomically(tmp_path):
    record = RunRecord(tmp_path, {"status": "running", "started_at": _stamp(0)})
    first = json.loads((tmp_path / "run.json").read_text())["heartbeat_at"]
    record.start_heartbeat(interval_s=0.05)
    time.sleep(1.2)
    record.stop_heartbeat()
    assert json.loads((tmp_path / "run.json").read_text())["heartbeat_at"] > first
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temp files left behind


class FakeHandle:
    def __init__(self, obj):
        self.shown = [obj]

    def update(self, obj):
        self.shown.append(obj)


def test_live_figure_is_one_figure_updated_in_place(monkeypatch):
    import IPython.display

    displayed = []

    def fake_display(obj, display_id=None):
        assert display_id is True
        displayed.append(FakeHandle(obj))
        return displayed[-1]

    monkeypatch.setattr(IPython.display, "display", fake_display)
    monitor = LiveMonitor("notebook", title="t", min_redraw_s=0.0)
    monitor.start(max_steps=30)
    for step in (10, 20, 30):
        monitor.step(step)
        monitor.log({"step": step, "loss": 0.7 - step / 100, "rewards/accuracies": step / 40})
        monitor.log({"step": step, "eval_loss": 0.7 - step / 200, "eval_rewards/accuracies": step / 35})
    monitor.close()
    assert len(displayed) == 1  # displayed once...
    handle = displayed[0]
    assert len(handle.shown) >= 7 and all(obj is handle.shown[0] for obj in handle.shown)  # ...then updated
    loss_axis = handle.shown[0].axes[0]
    labels = [line.get_label() for line in loss_axis.get_lines()]
    assert "train" in labels and "validation" in labels
    train_line = loss_axis.get_lines()[labels.index("train")]
    assert list(train_line.get_xdata()) == [10, 20, 30]
    assert [ax.get_title() for ax in handle.shown[0].axes] == ["Loss", "Reward accuracy", "Reward margin",
                                                               "Log-probabilities"]


def test_headless_lines_and_png(tmp_path, capsys):
    monitor = LiveMonitor("headless")
    monitor.start(max_steps=20)
    monitor.log({"step": 10, "epoch": 0.5, "loss": 0.6123, "rewards/accuracies": 0.75})
    out = capsys.readouterr().out
    assert out.startswith("step 10/20 | epoch 0.50 | loss 0.6123 | rewards/accuracies 0.7500 | eta ")
    monitor.close()
    assert monitor.save(tmp_path / "p.png").stat().st_size > 5000
    assert format_line({"step": 3, "eval_loss": 0.5, "final": True}) == "final | step 3 | eval_loss 0.5000"


def test_only_complete_checkpoints_count(tmp_path):
    root = tmp_path / "checkpoints"
    for step, complete in ((4, True), (8, True), (12, False)):
        folder = root / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    (root / ".partial-16" / "checkpoint-16").mkdir(parents=True)
    assert [p.name for p in complete_checkpoints(root)] == ["checkpoint-4", "checkpoint-8"]
    removed = remove_partial_checkpoints(root)
    assert [p.name for p in removed] == [".partial-16"] and not (root / ".partial-16").exists()


def test_dpo_config_follows_run_config(tmp_path):
    from nbtools.train.runner import build_dpo_config, resolve_precision

    cfg = RunConfig(train_file="t.jsonl", max_steps=7, batch_size=3, gradient_accumulation_steps=2,
                    learning_rate=1e-4, warmup_ratio=0.2, loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.5],
                    beta=0.2, eval_steps=5, save_steps=10, save_total_limit=0, num_workers=0)
    args = build_dpo_config(cfg, tmp_path, "fp32", has_validation=True, on_cpu=True)
    assert (args.max_steps, args.per_device_train_batch_size, args.gradient_accumulation_steps) == (7, 3, 2)
    assert args.bf16 is False and args.fp16 is False  # TRL's bf16 default is off on CPU
    assert args.warmup_steps == 0.2 and args.learning_rate == 1e-4
    assert args.loss_type == ["sigmoid", "sft"] and args.loss_weights == [1.0, 0.5] and args.beta == 0.2
    assert args.max_length is None  # kept pairs all fit: TRL must never truncate (image tokens)
    assert args.output_dir == str(tmp_path / "checkpoints")
    assert args.load_best_model_at_end is True and args.metric_for_best_model == "eval_loss"
    assert args.save_total_limit is None and args.remove_unused_columns is False
    no_val = build_dpo_config(cfg, tmp_path, "fp32", has_validation=False, on_cpu=True)
    assert no_val.eval_strategy == "no" and no_val.load_best_model_at_end is False
    assert resolve_precision("auto", "cpu") == "fp32"
    with pytest.raises(ConfigError, match="precision: fp16 training needs a CUDA GPU"):
        resolve_precision("fp16", "cpu")


def test_quantization_without_bitsandbytes_is_a_clear_error(monkeypatch):
    import importlib.util

    from nbtools.train.runner import check_quantization

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(ConfigError) as err:
        check_quantization("4bit", "cuda")
    assert str(err.value) == ("quantization: 4bit loading needs the bitsandbytes package, which is not installed "
                              "(fix: pip install bitsandbytes (on a CUDA machine), or set quantization: none)")
    check_quantization("none", "cpu")


def test_cli_bad_config_is_one_line_and_exit_code_2(tmp_path, capsys):
    from nbtools.__main__ import main

    bad = tmp_path / "c.yaml"
    bad.write_text("lerning_rate: 0.1\n")
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: lerning_rate: unknown setting")
    assert "did you mean 'learning_rate'?" in err
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "config: file not found" in capsys.readouterr().err


def _finished(global_step, log_history, load_best=False, best=None):
    from types import SimpleNamespace

    return SimpleNamespace(args=SimpleNamespace(load_best_model_at_end=load_best),
                           state=SimpleNamespace(global_step=global_step, log_history=log_history,
                                                 best_model_checkpoint=best))


def test_closing_evaluation_reuses_the_one_at_the_final_step_only_for_the_same_weights():
    from nbtools.train.runner import _eval_at_final_step

    log = [{"loss": 0.6, "step": 3}, {"eval_loss": 0.5, "eval_runtime": 1.0, "epoch": 1.0, "step": 3},
           {"loss": 0.4, "step": 6}, {"eval_loss": 0.45, "eval_runtime": 1.2, "epoch": 2.0, "step": 6}]
    assert _eval_at_final_step(_finished(6, log)) == {"eval_loss": 0.45, "eval_runtime": 1.2, "epoch": 2.0}
    assert _eval_at_final_step(_finished(6, log, True, "/r/checkpoints/checkpoint-6"))["eval_loss"] == 0.45
    assert _eval_at_final_step(_finished(6, log, True, None))["eval_loss"] == 0.45  # nothing was reloaded
    # the best checkpoint (step 3) was reloaded: those weights need their own closing evaluation
    assert _eval_at_final_step(_finished(6, log, True, "/r/checkpoints/checkpoint-3")) is None
    assert _eval_at_final_step(_finished(7, log + [{"loss": 0.3, "step": 7}])) is None  # trained after it
    assert _eval_at_final_step(_finished(6, log[:1] + log[2:3])) is None  # no evaluation at all


def test_reference_precompute_record_and_precision_key():
    from nbtools.train.reference import ReferencePrecompute, fingerprint_dtype

    done = ReferencePrecompute(computed=0, reused=300, seconds=1.234)
    assert done.to_dict() == {"computed": 0, "reused": 300, "seconds": 1.23}
    assert done.message().startswith("reference log-probs: 0 pair(s) computed, 300 reused from the cache in 1.2 s")
    assert fingerprint_dtype("fp32", "none") == "float32"
    assert fingerprint_dtype("bf16", "4bit") == "bfloat16+4bit"
    assert fingerprint_dtype("fp16", "8bit") != fingerprint_dtype("fp16", "none")
