"""Helpers for the several-process tests: a small shapes subset, host-sync counting, and the torchrun entry.

Run by ``tests/test_train_distributed_packing.py`` as
``torchrun --nproc_per_node 2 tests/distributed_runs.py OUT_DIR TRAIN_FILE``: in the same two
processes it trains the packed run, then the unpacked one (one start-up and model cache for both),
and each rank writes the host syncs it counted per training step to ``OUT_DIR/syncs-<rank>.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
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
