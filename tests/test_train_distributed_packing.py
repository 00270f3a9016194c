"""Packed pairs under torchrun: two CPU processes (gloo) against one process and against unpacked.

One torchrun start trains, in the same two processes, a packed run (reference log-probs
precomputed on a cold cache, shared between the ranks) and an unpacked run of the same config;
this process then trains the packed run alone with the same global batch (batch_size 2 x 2
processes = 4 x 1 process). The three loss and reward histories must agree within 1e-4 (fp32).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distributed_runs import SyncCounter, cold_cache, launch, run_config, torchrun, write_subset  # noqa: E402
from nbtools.packing import ReferenceLogpsStore  # noqa: E402

pytestmark = pytest.mark.slow

PAIRS = 16
HISTORY_KEYS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                "logps/chosen", "logps/rejected")


def _train_rows(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if "loss" in row and "train_runtime" not in row]


def _assert_same_history(got: list[dict], expected: list[dict], what: str) -> None:
    assert [r["step"] for r in got] == [r["step"] for r in expected] == [1, 2, 3, 4], what
    for mine, theirs in zip(got, expected):
        for key in HISTORY_KEYS:
            assert mine[key] == pytest.approx(theirs[key], abs=1e-4), f"{what}: {key} at step {mine['step']}"


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory):
    """(folder with packed/, unpacked/, syncs-0.json, syncs-1.json; cache dir; training file)."""
    root = tmp_path_factory.mktemp("ddp-packing")
    cache = cold_cache(root)
    train_file = write_subset(root / "train.jsonl", PAIRS)
    launch(torchrun("distributed_runs.py", root, train_file, port=29533), NBTOOLS_CACHE_DIR=str(cache))
    return root, cache, train_file


def test_packed_two_processes_match_one_process_and_unpacked(two_process_runs, monkeypatch):
    from nbtools.train import read_run, train

    root, cache, train_file = two_process_runs
    packed = read_run(root / "packed")
    assert packed["status"] == "finished" and packed["process"]["world_size"] == 2
    assert packed["packing"]["on"], packed["packing"]  # packing stays on with several processes
    # reference precompute: each rank computed its half of the pairs, none twice, on a cold cache
    reference = packed["reference_logps"]
    assert reference["per_process"] == [{"computed": PAIRS // 2, "reused": 0}] * 2
    assert (reference["computed"], reference["reused"]) == (PAIRS, 0)
    assert len(ReferenceLogpsStore(cache / "ref_logps")) == PAIRS  # every value reached the node's cache
    unpacked = read_run(root / "unpacked")
    assert not unpacked["packing"]["on"] and unpacked["process"]["world_size"] == 2

    # one process, same global batch (4 pairs per micro-batch, same accumulation), same cache
    monkeypatch.setenv("NBTOOLS_CACHE_DIR", str(cache))
    counter = SyncCounter()
    with counter.installed():
        single = train(run_config(root / "single", train_file, batch_size=4), live=False)
    assert single.status == "finished"
    single_record = read_run(root / "single")
    assert single_record["packing"]["on"] and single_record["process"]["world_size"] == 1
    assert single_record["reference_logps"]["computed"] == 0  # the two-process run filled the cache

    two = _train_rows(root / "packed")
    _assert_same_history(two, _train_rows(root / "single"), "2 processes packed vs 1 process packed")
    _assert_same_history(two, _train_rows(root / "unpacked"), "2 processes packed vs 2 processes unpacked")
    assert two[-1]["rewards/margins"] > two[0]["rewards/margins"]  # it trained: the histories are not flat
    # the metrics describe the global batch, not rank 0's half: token counts add up over both ranks
    assert two[0]["num_tokens"] == pytest.approx(_train_rows(root / "single")[0]["num_tokens"])

    # host syncs per training step: no more with two processes than with one
    per_rank = [json.loads((root / f"syncs-{rank}.json").read_text()) for rank in (0, 1)]
    assert len(counter.per_step) == len(per_rank[0]) == len(per_rank[1]) > 0
    assert max(max(steps) for steps in per_rank) <= max(counter.per_step), (per_rank, counter.per_step)
