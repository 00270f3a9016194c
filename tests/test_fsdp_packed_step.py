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
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distributed_runs import assert_sharded_step_matches_single, launch, torchrun, write_subset  # noqa: E402

pytestmark = pytest.mark.slow


def test_fully_shard_packed_step_matches_unsharded(tmp_path):
    train_file = write_subset(tmp_path / "train.jsonl", 4)
    launch(torchrun("fsdp_packed_step.py", tmp_path, train_file, port=29537))
    found = json.loads((tmp_path / "fsdp.json").read_text())

    assert found["world_size"] == 2
    assert_sharded_step_matches_single(found)
    assert found["trainable_sharded"] == found["trainable_parameters"]
    assert found["reused_image_features"]  # images encoded once per step under FSDP too
    # control: one rank's half of the batch alone gives different gradients, so the match above is not trivial
    assert found["half_batch_grad_difference"] > 1e-3
    # control: called directly instead of inside the root's forward, the step meets still-sharded root
    # parameters (torch 2.14: "got mixed torch.Tensor and DTensor"): the redirection is what makes it work
    direct = found["direct_call_outcome"]
    assert not direct.startswith("loss") or abs(float(direct.split()[1]) - found["loss_single"]) > 1e-4, direct
