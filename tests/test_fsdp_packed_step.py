"""The packed step under torch's FSDP2 (``fully_shard``), two CPU processes (gloo).

accelerate does not run its FSDP plugin on the CPU (with ``cpu=True`` it silently uses DDP), so the
Trainer's FSDP path cannot run here; torch's own ``fully_shard`` can. This checks the part that is
ours: the packed forward and backward, run through :func:`run_inside_forward` as the trainer does,
on a model whose decoder layers, vision blocks and root are sharded (DTensor parameters, LoRA
trainable), give the loss, metrics and LoRA gradients of the unsharded model on the whole batch.
The end-to-end FSDP run through the Trainer is in ``benchmarks/gpu_check.sh``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distributed_runs import write_subset  # noqa: E402

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


def test_fully_shard_packed_step_matches_unsharded(tmp_path):
    train_file = write_subset(tmp_path / "train.jsonl", 4)
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO))
    done = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", "29537",
                           str(REPO / "tests" / "fsdp_packed_step.py"), str(tmp_path), str(train_file)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    found = json.loads((tmp_path / "fsdp.json").read_text())

    assert found["world_size"] == 2
    # really sharded: every parameter is a DTensor, the LoRA ones included, and LoRA is what trains
    assert found["sharded_parameters"] == found["parameters"] > found["trainable_parameters"] > 0
    assert found["trainable_sharded"] == found["trainable_parameters"]
    assert found["reused_image_features"]  # images encoded once per step under FSDP too

    assert abs(found["loss_single"] - 0.6931) > 1e-3  # the adapter moved the policy: not the trivial ln 2
    assert found["loss_sharded"] == pytest.approx(found["loss_single"], abs=1e-4)
    for name, value in found["metrics_single"].items():
        assert found["metrics_sharded"][name] == pytest.approx(value, abs=1e-4), name
    assert len(found["grad_max_abs_difference"]) == found["trainable_parameters"]
    for name, difference in found["grad_max_abs_difference"].items():
        assert found["grad_max_abs_single"][name] > 1e-4, name  # a real gradient, not zeros on both sides
        assert difference < 1e-4, name
    # control: one rank's half of the batch alone gives different gradients, so the match above is not trivial
    assert found["half_batch_grad_difference"] > 1e-3
    # control: called directly instead of inside the root's forward, the step meets still-sharded root
    # parameters (torch 2.14: "got mixed torch.Tensor and DTensor"): the redirection is what makes it work
    direct = found["direct_call_outcome"]
    assert not direct.startswith("loss") or abs(float(direct.split()[1]) - found["loss_single"]) > 1e-4, direct
