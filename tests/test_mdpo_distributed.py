"""mDPO under torchrun: two CPU processes (gloo, batch 2 each) give the history of one process with batch 4,
the mDPO metrics included, and share the reference precompute of the contrast pairs."""

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
KEYS = ("loss", "rewards/chosen", "rewards/margins", "mdpo/conditional", "mdpo/conditional_accuracy", "mdpo/anchor")


def _rows(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if "loss" in row and "train_runtime" not in row]


def test_two_processes_match_one_with_the_mdpo_terms(tmp_path):
    cache = tmp_path / "cache"  # a cold reference cache; the built tiny models are shared
    cache.mkdir()
    (cache / "models").symlink_to(Path(os.environ.get("NBTOOLS_CACHE_DIR") or Path.home() / ".cache" / "nbtools")
                                  / "models")
    train_file = write_subset(tmp_path / "train.jsonl", 16)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO), NBTOOLS_CACHE_DIR=str(cache))
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    script = str(REPO / "tests" / "mdpo_distributed_run.py")
    runs = {"two": [torchrun, "--nproc_per_node", "2", "--master_port", "29571", script, str(tmp_path / "two"),
                    str(train_file), "2"],
            "one": [sys.executable, script, str(tmp_path / "one"), str(train_file), "4"]}
    for name, command in runs.items():
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, name + done.stdout[-3000:] + done.stderr[-3000:]

    two, one = _rows(tmp_path / "two"), _rows(tmp_path / "one")
    assert [r["step"] for r in two] == [r["step"] for r in one] == [1, 2, 3, 4]
    for mine, theirs in zip(two, one):
        for key in KEYS:
            assert mine[key] == pytest.approx(theirs[key], abs=1e-4), f"{key} at step {mine['step']}"
    assert two[-1]["mdpo/anchor"] < two[0]["mdpo/anchor"] - 0.03  # the terms trained (0.693 -> 0.613 measured)
    reference = json.loads((tmp_path / "two" / "run.json").read_text())["reference_logps"]
    # 16 pairs + their 16 contrast pairs, each computed once, half by each process
    assert reference["computed"] == 32 and [p["computed"] for p in reference["per_process"]] == [16, 16]
