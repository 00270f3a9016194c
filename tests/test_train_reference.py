"""Reference log-probs precomputed before training: same losses as on the fly, reused from the cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nbtools.packing import ReferenceLogpsStore
from nbtools.train import read_run, train

pytestmark = pytest.mark.slow

SHAPES_DIR = Path(__file__).resolve().parent.parent / "data_samples" / "shapes"

# Timing and counters differ between any two runs; everything else in a metrics row must match.
# Reward accuracies are left out too: they count signs of per-pair margins that start at ~0, so
# rounding alone flips them (0.25 vs 0.0 at step 1 was seen); the rewards and margins themselves
# are compared with a tolerance below. The answer-length probe's token counts (nbtools.train.health) are not
# evaluation metrics (a closing evaluation's row does not carry them) and greedy decoding may take another
# token when weights differ by rounding.
NOT_COMPARED = ("runtime", "per_second", "final", "accuracies", "answer_tokens")


@pytest.fixture
def ref_cache(tmp_path, monkeypatch):
    """A fresh reference cache for this test (the built models stay in the shared cache)."""
    folder = tmp_path / "ref_cache"
    monkeypatch.setattr("nbtools.packing.ref_cache.cache_dir", lambda: folder)
    return folder / "ref_logps"


def _config(shapes_config, out, data, **changes):
    settings = dict(train_file=str(data / "train.jsonl"), validation_file=str(data / "validation.jsonl"),
                    max_steps=6, eval_steps=3, save_steps=6, logging_steps=1, learning_rate=5e-3)
    settings.update(changes)
    return shapes_config(out, **settings)


def _metric_rows(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [{k: v for k, v in row.items() if not any(part in k for part in NOT_COMPARED)} for row in rows]


def test_precomputed_reference_gives_the_same_history_and_is_reused(shapes_config, small_shapes, ref_cache,
                                                                     tmp_path, monkeypatch):
    import nbtools.packing.step as step

    passes = []
    original = step.reference_logps
    monkeypatch.setattr(step, "reference_logps", lambda *a, **k: passes.append(1) or original(*a, **k))

    on_the_fly = train(_config(shapes_config, tmp_path / "off", small_shapes, precompute_ref_log_probs=False),
                       live=False)
    assert "reference_logps" not in read_run(on_the_fly.run_dir)
    assert not ref_cache.exists()
    # a reference pass in every training step and evaluation batch (steps 3 and 6; the closing evaluation
    # reports step 6's, as the weights did not change after it)
    assert len(passes) == 6 + 2
    rows = _metric_rows(on_the_fly.run_dir)
    evaluations = [r for r in rows if "eval_loss" in r]
    assert [r["step"] for r in evaluations] == [3, 6]  # one row each: the closing evaluation adds none
    assert read_run(on_the_fly.run_dir)["metrics"]["eval_loss"] == evaluations[-1]["eval_loss"]
    passes.clear()

    stored = train(_config(shapes_config, tmp_path / "on", small_shapes), live=False)
    record = read_run(stored.run_dir)["reference_logps"]
    assert (record["computed"], record["reused"]) == (16, 0)
    assert len(ReferenceLogpsStore(ref_cache)) == 16
    assert passes == []  # every step and evaluation took the stored values

    expected, got = _metric_rows(on_the_fly.run_dir), _metric_rows(stored.run_dir)
    assert [r["step"] for r in got] == [r["step"] for r in expected]
    assert sum("eval_loss" in r for r in got) == 2  # steps 3 and 6
    assert any(r["rewards/margins"] != 0 for r in got if "rewards/margins" in r)  # the policy moved
    for want, have in zip(expected, got):
        assert set(have) == set(want)
        for key, value in want.items():
            if isinstance(value, float):
                assert have[key] == pytest.approx(value, abs=1e-5), (want["step"], key)
            else:
                assert have[key] == value, (want["step"], key)

    again = train(_config(shapes_config, tmp_path / "again", small_shapes), live=False)
    assert read_run(again.run_dir)["reference_logps"] | {"seconds": 0} == {"computed": 0, "reused": 16, "seconds": 0}
    assert _metric_rows(again.run_dir) == got


def test_changed_max_pixels_misses_the_cache(shapes_config, small_shapes, ref_cache, tmp_path):
    first = train(_config(shapes_config, tmp_path / "a", small_shapes, max_steps=1, eval_steps=1), live=False)
    assert read_run(first.run_dir)["reference_logps"]["computed"] == 16
    smaller = train(_config(shapes_config, tmp_path / "b", small_shapes, max_steps=1, eval_steps=1,
                            max_pixels=96 * 96), live=False)
    assert read_run(smaller.run_dir)["reference_logps"] == {**read_run(smaller.run_dir)["reference_logps"],
                                                            "computed": 16, "reused": 0}
    assert len(ReferenceLogpsStore(ref_cache)) == 32
