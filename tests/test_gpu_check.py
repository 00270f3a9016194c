"""What can be checked of the prepared GPU script on a CPU machine (the GPU stages themselves cannot run here)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def _run(*args, **env):
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHON=sys.executable, **env))


def test_dry_run_plans_every_stage_and_writes_at_most_9_files(tmp_path):
    done = _run(tmp_path / "out", "--dry-run", "--wheels", tmp_path)
    assert done.returncode == 0, done.stderr
    for stage in ("install", "throughput 896x896", "throughput 1280x1280", "estimate check", "train bf16",
                  "train fsdp", "long pairs 8k"):
        assert stage in done.stdout, stage
    assert "--image-size 1280" in done.stdout and "--distributed fsdp" in done.stdout
    assert "gpu_long_step.py --tokens 8192" in done.stdout
    # every file the real run writes is named inside OUT_DIR, and there are at most 9 of them
    planned = {"versions.txt", "throughput_896.json", "throughput_1280.json", "estimate_check.json",
               "train_bf16.json", "train_fsdp.json", "long_pairs_8k.json", "summary.md", "gpu_check.log"}
    mentioned = {name for name in planned if name in SCRIPT.read_text()}
    assert mentioned == planned and len(planned) <= 9
    assert "at most 9 files" in SCRIPT.read_text()
    assert {p.name for p in (tmp_path / "out").iterdir()} <= planned


def test_the_header_states_the_sum_of_the_stage_limits(tmp_path):
    done = _run(tmp_path / "out", "--dry-run")
    limits = [int(limit) for limit in re.findall(r"\(limit (\d+)s\)", done.stdout)]
    assert len(limits) == 6
    stated = re.search(r"stage limits add up to\s*#\s*(\d+) s", SCRIPT.read_text())
    assert stated and int(stated.group(1)) == sum(limits)


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


def test_long_pairs_stage_rehearsed_on_the_cpu(tmp_path):
    """The 8k stage's own code on the CPU (tiny-qwen3-vl, ~512 tokens per pair): TRL's step and the packed
    sdpa step through trainer.train(); the block-mask side is skipped (no FlexAttention backward on the CPU).
    Then the summary renders its table."""
    out = tmp_path / "long_pairs_8k.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_long_step.py"), "--rehearse", "--steps", "1",
                           "--warmup", "1", "--json", str(out)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    results = figures["results"]
    trl, sdpa = results["TRL DPOTrainer"], results["nbtools sdpa"]
    assert "skipped" in results["nbtools block mask"]
    assert figures["attention"] == {"TRL DPOTrainer": "sdpa", "nbtools sdpa": "sdpa"}
    # one packed row holds the prompt once: about the target, and fewer tokens than TRL's two rows
    assert 0.8 * figures["tokens_target"] <= sdpa["tokens_per_pair"] <= 1.3 * figures["tokens_target"]
    assert sdpa["tokens_per_pair"] < trl["tokens_per_pair"]
    assert sdpa["logp_max_abs_diff"] < 1e-3 < 10 < sdpa["logp_max_abs_value"]
    assert figures["ratios"]["time_block_vs_sdpa"] is None and figures["ratios"]["time_block_vs_trl"] is None
    summary = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_train_run.py"), "--summarise",
                              str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert summary.returncode == 0, summary.stderr
    assert "| nbtools block mask | not run: FlexAttention has no backward pass on the CPU |" in summary.stdout
    assert "| nbtools sdpa | sdpa |" in summary.stdout and "block mask / sdpa: memory above weights n/a" in summary.stdout
