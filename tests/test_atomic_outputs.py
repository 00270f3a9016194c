"""Outputs written to a temporary name and renamed: a full disk never destroys the previous file.

Each test writes an output once, then again while the disk "fills up" part-way through the
write (ENOSPC after a few bytes, see tests/disk_full.py): the write fails, the old file is
byte-for-byte what it was, and no temporary file is left next to it.
"""

from __future__ import annotations

import errno
import json

import pytest

from disk_full import disk_full, snapshot
from nbtools.evaluate.report import plot_evaluation, write_evaluation
from nbtools.sweep import PLOT_FILE, SWEEP_FILE, Sweep, SweepRun


def _fails_with_enospc(call):
    with pytest.raises(OSError) as info:
        call()
    assert info.value.errno == errno.ENOSPC


def _payload(n_pairs=10):
    side = {m: 0.5 for m in ("preference_accuracy", "preference_accuracy_normalized", "reward_accuracy",
                             "logprob_margin", "reward_margin", "chosen_logprob", "rejected_logprob")}
    side["ci95"] = {m: [0.4, 0.6] for m in side}
    return {"base": side, "tuned": side, "difference": {}, "n_pairs": n_pairs, "confidence": 0.95, "warnings": []}


def test_evaluation_json_and_plot_survive_a_full_disk(tmp_path):
    write_evaluation(tmp_path, _payload(10))
    plot_evaluation(_payload(10), tmp_path / "plots" / "evaluation.png")
    before = snapshot(tmp_path)
    assert json.loads(before["evaluation.json"])["n_pairs"] == 10
    with disk_full(tmp_path, after_bytes=20):
        _fails_with_enospc(lambda: write_evaluation(tmp_path, _payload(20)))
        _fails_with_enospc(lambda: plot_evaluation(_payload(20), tmp_path / "plots" / "evaluation.png"))
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_evaluation_flipped_page_survives_a_full_disk(eval_run_model, eval_run_dir, tmp_path):
    """evaluate_run itself: a full disk while writing evaluation_flipped.html keeps the old page."""
    import shutil

    from nbtools.evaluate import evaluate_run

    run_dir = tmp_path / "run"
    shutil.copytree(eval_run_dir, run_dir, ignore=shutil.ignore_patterns("export", "lab"))
    (run_dir / "evaluation_flipped.html").write_text("<p>old page</p>")
    with disk_full(run_dir, after_bytes=100, names=("evaluation_flipped.html",)) as opened:
        _fails_with_enospc(lambda: evaluate_run(run_dir, run=eval_run_model, max_pairs=4, n_resamples=20,
                                                progress=False))
    assert opened
    assert (run_dir / "evaluation_flipped.html").read_text() == "<p>old page</p>"
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]


def test_sweep_json_and_plot_survive_a_full_disk(tmp_path):
    sweep = Sweep(str(tmp_path), {"beta": [0.1]}, [SweepRun("beta=0.1", {"beta": 0.1}, str(tmp_path / "r"), "nb")])
    sweep.save()
    sweep.plot(tmp_path / PLOT_FILE)
    before = snapshot(tmp_path)
    assert set(before) == {SWEEP_FILE, PLOT_FILE}
    sweep.runs.append(SweepRun("beta=0.5", {"beta": 0.5}, str(tmp_path / "s"), "nb"))
    with disk_full(tmp_path, after_bytes=10):
        _fails_with_enospc(sweep.save)
        _fails_with_enospc(lambda: sweep.plot(tmp_path / PLOT_FILE))
    assert snapshot(tmp_path) == before
