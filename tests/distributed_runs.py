"""Helpers for the several-process tests: a small shapes subset, host-sync counting, launching torchrun, the
packed step on a sharded model and its comparison with one process, and the torchrun entry.

Run by ``tests/test_train_distributed_packing.py`` as
``torchrun --nproc_per_node 2 tests/distributed_runs.py OUT_DIR TRAIN_FILE``: in the same two
processes it trains the packed run, then the unpacked one (one start-up and model cache for both),
and each rank writes the host syncs it counted per training step to ``OUT_DIR/syncs-<rank>.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
SHAPES = REPO / "data_samples" / "shapes"
# Tensor methods that copy a value to the host (a device sync on a GPU); truth tests and int()/float() too.
SYNC_METHODS = ("item", "cpu", "tolist", "numpy", "__bool__", "__int__", "__float__")


def write_subset(path: Path, pairs: int) -> Path:
    """The first ``pairs`` shapes training pairs, with absolute image paths."""
    rows = []
    for line in (SHAPES / "train.jsonl").read_text().splitlines()[:pairs]:
        row = json.loads(line)
        row["images"] = [str(SHAPES / image) for image in row["images"]]
        rows.append(json.dumps(row))
    path.write_text("\n".join(rows) + "\n")
    return path


def run_config(output_dir, train_file, **changes):
    """Tiny warm Qwen3-VL, fp32, no dropout (so that batch splits cannot change the numbers), no validation."""
    from nbtools.config import RunConfig

    settings = dict(model="tiny-qwen3-vl-warm", train_file=str(train_file), validation_split=0.0,
                    output_dir=str(output_dir), task_display_name="ddp-packing", seed=0, max_steps=4,
                    batch_size=2, learning_rate=2e-3, lora_rank=8, lora_dropout=0.0, warmup_ratio=0.0,
                    lr_scheduler_type="linear", logging_steps=1, save_steps=1000, eval_steps=1000,
                    gradient_checkpointing=False, num_workers=0, max_pixels=128 * 128, max_context_length=256,
                    precision="fp32")
    settings.update(changes)
    return RunConfig(**settings)


class SyncCounter:
    """Counts host syncs (``SYNC_METHODS`` calls on tensors) inside each training step."""

    def __init__(self):
        self.per_step: list[int] = []
        self._active = False
        self._count = 0

    @contextlib.contextmanager
    def installed(self):
        originals = {name: getattr(torch.Tensor, name) for name in SYNC_METHODS}
        counter = self

        def wrap(original):
            def counted(self, *args, **kwargs):
                if counter._active:
                    counter._count += 1
                return original(self, *args, **kwargs)
            return counted

        from nbtools.train.trainer import NbDPOTrainer

        training_step = NbDPOTrainer.training_step

        def counted_step(trainer, *args, **kwargs):
            counter._active, counter._count = True, 0
            try:
                return training_step(trainer, *args, **kwargs)
            finally:
                counter._active = False
                counter.per_step.append(counter._count)

        for name, original in originals.items():
            setattr(torch.Tensor, name, wrap(original))
        NbDPOTrainer.training_step = counted_step
        try:
            yield self
        finally:
            for name, original in originals.items():
                setattr(torch.Tensor, name, original)
            NbDPOTrainer.training_step = training_step


# --------------------------------------------------------------------------- launching (the test's side)

def cold_cache(root: Path) -> Path:
    """An nbtools cache folder under ``root`` with no reference log-probs, sharing the built tiny models."""
    cache = root / "cache"
    cache.mkdir()
    (cache / "models").symlink_to(Path(os.environ.get("NBTOOLS_CACHE_DIR") or Path.home() / ".cache" / "nbtools")
                                  / "models")
    return cache


def torchrun(script: str, *args, port: int) -> list[str]:
    """The command that runs ``tests/SCRIPT ARGS`` in two processes (gloo on the CPU) meeting on ``port``."""
    launcher = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    return [launcher, "--nproc_per_node", "2", "--master_port", str(port), str(REPO / "tests" / script),
            *map(str, args)]


def launch(command: list, **env: str) -> None:
    """Run ``command`` in the repository, offline, one thread a process (``env``: more variables); a failure
    fails the test with the end of its output."""
    settings = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
                    PYTHONPATH=str(REPO), **env)
    done = subprocess.run(command, cwd=REPO, env=settings, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{command[-3:]}: " + done.stdout[-4000:] + done.stderr[-4000:]


def assert_sharded_step_matches_single(found: dict) -> None:
    """What :func:`compared_with_single` wrote: the sharded packed step gives one process's loss, metrics and
    LoRA gradients, on a model that is really sharded and moved off the reference."""
    import pytest

    # really sharded: every parameter a DTensor, LoRA included, and LoRA is what trains
    assert found["sharded_parameters"] == found["parameters"] > found["trainable_parameters"] > 0
    assert abs(found["loss_single"] - 0.6931) > 1e-3  # LoRA B off zero moved the policy: not the trivial ln 2
    assert found["loss_sharded"] == pytest.approx(found["loss_single"], abs=1e-4)
    for name, value in found["metrics_single"].items():
        assert found["metrics_sharded"][name] == pytest.approx(value, abs=1e-4), name
    assert len(found["grad_max_abs_difference"]) == found["trainable_parameters"]
    for name, difference in found["grad_max_abs_difference"].items():
        assert found["grad_max_abs_single"][name] > 1e-4, name  # a real gradient, not zeros on both sides
        assert difference < 1e-4, name


# --------------------------------------------------------------------------- inside torchrun (each rank's side)

def sharded_packed_step(model, batch: dict, beta: float):
    """The packed step inside the sharded root's forward (as the trainer runs it), metrics summed over the
    ranks, then backward (FSDP2 reduce-scatters the gradients, mean over ranks, into the shards).
    Returns (the step's result, the loss averaged over the ranks)."""
    import torch.distributed as dist

    from nbtools.packing import packed_dpo_step
    from nbtools.packing.trainer_hook import run_inside_forward

    def reduce_sum(tensor):
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    result = run_inside_forward(model, lambda: packed_dpo_step(model, batch, beta=beta, reduce_metrics=reduce_sum))
    result.loss.backward()
    loss = result.loss.detach().clone()
    dist.all_reduce(loss)
    return result, (loss / dist.get_world_size()).item()


def full_grads(model) -> dict:
    """Every trainable parameter's whole gradient (a sharded one gathered from the ranks)."""
    from torch.distributed.tensor import DTensor

    return {name: parameter.grad.full_tensor() if isinstance(parameter.grad, DTensor) else parameter.grad
            for name, parameter in model.named_parameters() if parameter.requires_grad}


def compared_with_single(result, loss: float, grads: dict, expected, expected_grads: dict) -> dict:
    """The sharded step (``result``, ``loss``, ``grads``) next to one process's on the whole batch."""
    return {"loss_sharded": loss, "loss_single": expected.loss.item(),
            "metrics_sharded": result.metrics, "metrics_single": expected.metrics,
            "grad_max_abs_difference": {n: (grads[n] - g).abs().max().item() for n, g in expected_grads.items()},
            "grad_max_abs_single": {n: g.abs().max().item() for n, g in expected_grads.items()}}


def main(out_dir: str, train_file: str) -> None:
    from nbtools.train import train

    out = Path(out_dir)
    counter = SyncCounter()
    with counter.installed():
        train(run_config(out / "packed", train_file), live=False)
    rank = int(os.environ.get("RANK", "0"))
    (out / f"syncs-{rank}.json").write_text(json.dumps(counter.per_step))
    train(run_config(out / "unpacked", train_file, packing=False), live=False)


if __name__ == "__main__":
    main(*sys.argv[1:3])
