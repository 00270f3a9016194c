"""torchrun entry for tests/test_mdpo_distributed.py: one mDPO run (``OUT_DIR TRAIN_FILE BATCH_SIZE``)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distributed_runs import run_config  # noqa: E402

MDPO_LOSSES = ["sigmoid", "mdpo_conditional", "mdpo_anchor"]

if __name__ == "__main__":
    from nbtools.train import train

    out, train_file, batch_size = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    train(run_config(out, train_file, batch_size=batch_size, loss_type=MDPO_LOSSES), live=False)
