"""Runs that stop early: SIGKILL then resume, a NaN loss, and the CLI that drives them."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nbtools.train import NbDPOTrainer, NonFiniteLossError, read_run, train

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


def _short(shapes_config, out, **changes):
    # 16 steps, a checkpoint every 4: long enough to kill in the middle, short enough for CI.
    settings = dict(max_steps=16, eval_steps=4, save_steps=4, logging_steps=2, save_total_limit=0)
    settings.update(changes)
    return shapes_config(out, **settings)


def _env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_sigkill_then_resume_ends_like_an_uninterrupted_run(shapes_config, tmp_path):
    reference = train(_short(shapes_config, tmp_path / "reference"), live=False)

    config = _short(shapes_config, tmp_path / "killed")
    yaml_path = config.to_yaml(tmp_path / "killed.yaml")
    log = open(tmp_path / "killed.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "nbtools", "train", str(yaml_path)], cwd=REPO, env=_env(),
                            stdout=log, stderr=subprocess.STDOUT)
    target = Path(config.output_dir) / "checkpoints" / "checkpoint-8"
    deadline = time.time() + 300
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    log.close()

    # The record still says "running", but the reader knows the process is gone.
    raw = json.loads((Path(config.output_dir) / "run.json").read_text())
    assert raw["status"] == "running"
    record = read_run(config.output_dir)
    assert record["status"] == "interrupted"
    assert "no longer running" in record["status_reason"]

    # CLI: --resume continues from the last complete checkpoint (never a half-written one).
    done = subprocess.run([sys.executable, "-m", "nbtools", "train", str(yaml_path), "--resume"], cwd=REPO,
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = read_run(config.output_dir)
    assert record["status"] == "finished"
    assert record["resume_count"] == 1
    # the reference log-probs of all 300 pairs came from the cache the earlier runs filled
    assert (record["reference_logps"]["computed"], record["reference_logps"]["reused"]) == (0, 300)
    resumed_step = int(record["resumed_from"].rsplit("-", 1)[1])
    assert resumed_step >= 8
    assert not any(p.name.startswith(".partial") for p in (Path(config.output_dir) / "checkpoints").iterdir())
    for key in ("eval_loss", "eval_rewards/accuracies", "eval_rewards/margins"):
        assert record["metrics"][key] == pytest.approx(reference.metrics[key], abs=2e-4), key
    rows = [json.loads(line) for line in (Path(config.output_dir) / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r and "train_runtime" not in r]
    assert steps == sorted(set(steps)), "no step is logged twice after a resume"
    assert steps[-1] == 16


def test_resume_without_checkpoint_or_folder_says_what_to_do(shapes_config, tmp_path):
    from nbtools.train import RunFolderError

    with pytest.raises(RunFolderError, match="no such run folder to resume"):
        train(_short(shapes_config, tmp_path / "nowhere"), resume=True, live=False)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(shapes_config, tmp_path, monkeypatch):
    original = NbDPOTrainer.compute_loss

    def poisoned(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = original(self, model, inputs, return_outputs, num_items_in_batch)
        if self.model.training and self.state.global_step >= 5:
            return loss * float("nan")
        return loss

    monkeypatch.setattr(NbDPOTrainer, "compute_loss", poisoned)
    config = _short(shapes_config, tmp_path / "nan", save_steps=2, eval_steps=2)
    with pytest.raises(NonFiniteLossError) as err:
        train(config, live=False)
    run = Path(config.output_dir)
    assert str(err.value).startswith("Training stopped: the loss became nan at step 6. The last good checkpoint "
                                     f"is kept: {run / 'checkpoints' / 'checkpoint-4'}.")
    assert "lower learning_rate" in str(err.value)
    record = read_run(run)
    assert record["status"] == "failed"
    assert record["error"] == str(err.value)
    assert record["last_good_checkpoint"] == str(run / "checkpoints" / "checkpoint-4")
    state = json.loads((run / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text())
    assert all(math.isfinite(h.get("loss", 0.0)) for h in state["log_history"])
    assert not (run / "checkpoints" / "checkpoint-6").exists()
