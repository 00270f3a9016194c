"""mDPO under torchrun: two CPU processes (gloo, batch 2 each) give the history of one process with batch 4,
the mDPO metrics included, and share the reference precompute of the contrast pairs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distributed_runs import cold_cache, launch, torchrun, write_subset  # noqa: E402

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
KEYS = ("loss", "rewards/chosen", "rewards/margins", "mdpo/conditional", "mdpo/conditional_accuracy", "mdpo/anchor")


def _rows(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if "loss" in row and "train_runtime" not in row]


def test_two_processes_match_one_with_the_mdpo_terms(tmp_path):
    cache = cold_cache(tmp_path)
    train_file = write_subset(tmp_path / "train.jsonl", 16)
    script = "mdpo_distributed_run.py"
    for command in (torchrun(script, tmp_path / "two", train_file, 2, port=29571),
                    [sys.executable, str(REPO / "tests" / script), str(tmp_path / "one"), str(train_file), "4"]):
        launch(command, NBTOOLS_CACHE_DIR=str(cache))

    two, one = _rows(tmp_path / "two"), _rows(tmp_path / "one")
    assert [r["step"] for r in two] == [r["step"] for r in one] == [1, 2, 3, 4]
    for mine, theirs in zip(two, one):
        for key in KEYS:
            assert mine[key] == pytest.approx(theirs[key], abs=1e-4), f"{key} at step {mine['step']}"
    assert two[-1]["mdpo/anchor"] < two[0]["mdpo/anchor"] - 0.03  # the terms trained (0.693 -> 0.613 measured)
    reference = json.loads((tmp_path / "two" / "run.json").read_text())["reference_logps"]
    # 16 pairs + their 16 contrast pairs, each computed once, half by each process
    assert reference["computed"] == 32 and [p["computed"] for p in reference["per_process"]] == [16, 16]
