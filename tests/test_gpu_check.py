"""What can be checked of the prepared GPU script on a CPU machine (the GPU stages themselves cannot run here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def _run(*args, **env):
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHON=sys.executable, **env))


def test_dry_run_plans_every_stage_and_writes_at_most_8_files(tmp_path):
    done = _run(tmp_path / "out", "--dry-run", "--wheels", tmp_path)
    assert done.returncode == 0, done.stderr
    for stage in ("install", "throughput 896x896", "throughput 1280x1280", "estimate check", "train bf16",
                  "train fsdp"):
        assert stage in done.stdout, stage
    assert "--image-size 1280" in done.stdout and "--distributed fsdp" in done.stdout
    # every file the real run writes is named inside OUT_DIR, and there are at most 8 of them
    planned = {"versions.txt", "throughput_896.json", "throughput_1280.json", "estimate_check.json",
               "train_bf16.json", "train_fsdp.json", "summary.md", "gpu_check.log"}
    mentioned = {name for name in planned if name in SCRIPT.read_text()}
    assert mentioned == planned and len(planned) <= 8
    assert {p.name for p in (tmp_path / "out").iterdir()} <= planned


def test_refuses_without_a_gpu_or_with_bad_arguments(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the script would run for real")
    done = _run(tmp_path / "out")
    assert done.returncode == 2 and "no CUDA GPU" in done.stderr
    assert _run(tmp_path / "out", "--bogus").returncode == 2
    assert _run().returncode == 2  # no output folder
    missing = _run(tmp_path / "out", "--wheels", tmp_path / "nowhere")
    assert missing.returncode == 2 and "is not a folder" in missing.stderr


def test_summary_states_the_goal_ratios(tmp_path):
    """The summary arithmetic, on made-up numbers (labelled as such: no GPU measured them)."""
    sides = {"TRL DPOTrainer": {"pairs_per_s": 2.0, "memory_above_weights_gib": 4.0},
             "nbtools": {"pairs_per_s": 6.4, "memory_above_weights_gib": 2.0, "logp_max_abs_diff": 0.03,
                         "logp_max_abs_value": 450.0}}
    (tmp_path / "throughput_896.json").write_text(json.dumps({"results": sides}))
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_train_run.py"), "--summarise", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "| 896x896 | 2.00 | 6.40 | 3.20 | 4.00 | 2.00 | 0.50 | 0.0300 (450) |" in done.stdout
    assert "| 1280 | not measured |" in done.stdout


def test_logp_difference_reports_packed_against_two_rows():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from train_throughput import logp_difference

    from nbtools.models import load_model_and_processor
    from test_packing import batches

    model, processor = load_model_and_processor("tiny-qwen3-vl", dtype="float32", device="cpu")
    found = logp_difference(model, processor, batches()["mixed"], "cpu")
    assert found["logp_max_abs_value"] > 10  # sums over whole answers
    assert found["logp_max_abs_diff"] < 1e-3  # fp32: the packed layout gives TRL's log-probs
