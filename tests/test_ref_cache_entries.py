"""The reference cache trusts only entries that can be log-probabilities; damaged ones are recomputed.

Before: a NaN written into one cache entry (by a broken run, a bad disk, a hand edit) was read back
forever, and every later run on those pairs stopped with "loss became nan".
"""

from __future__ import annotations

import json
import math

import pytest

from conftest import write_small_shapes
from nbtools.packing.ref_cache import ReferenceFingerprint, ReferenceLogpsStore, pair_key


DAMAGED = {
    "nan": '{"chosen": NaN, "rejected": -2.0}',
    "infinite": '{"chosen": -1.0, "rejected": -Infinity}',
    "positive": '{"chosen": 3.5, "rejected": -2.0}',
    "list": '{"chosen": [-1.0, -2.0], "rejected": -2.0}',
    "text": '{"chosen": "-1.0", "rejected": -2.0}',
    "bool": '{"chosen": false, "rejected": -2.0}',
    "null": '{"chosen": null, "rejected": -2.0}',
    "missing": '{"chosen": -1.0}',
    "not an object": '[-1.0, -2.0]',
    "truncated": '{"chosen": -1.0, "rej',
    "empty": "",
}


FINGERPRINT = ReferenceFingerprint("model", "rev", "", "tokenizer", "images", None, "float32")
EXAMPLES = [{"prompt": [{"role": "user", "content": f"question {i}"}], "chosen": [{"role": "assistant",
             "content": "yes"}], "rejected": [{"role": "assistant", "content": "no"}]} for i in range(2)]


@pytest.mark.parametrize("content", DAMAGED.values(), ids=DAMAGED.keys())
def test_a_damaged_entry_counts_as_missing_and_is_rewritten(tmp_path, content):
    store = ReferenceLogpsStore(tmp_path)
    keys = [pair_key(example, FINGERPRINT) for example in EXAMPLES]
    for key in keys:
        store.put(key, -1.0, -2.0)
    chosen, rejected = store.lookup(EXAMPLES, FINGERPRINT)
    assert chosen.tolist() == [-1.0, -1.0] and rejected.tolist() == [-2.0, -2.0]
    store._path(keys[1]).write_text(content)
    assert store.get(keys[1]) is None
    assert store.lookup(EXAMPLES, FINGERPRINT) is None  # the batch's reference is computed, not read
    store.put(keys[1], -1.5, -2.5)
    assert store.get(keys[1]) == (-1.5, -2.5)


@pytest.mark.parametrize("chosen, rejected", [(math.nan, -1.0), (-1.0, math.inf), (0.5, -1.0)])
def test_values_that_are_not_log_probs_are_never_stored(tmp_path, chosen, rejected):
    store = ReferenceLogpsStore(tmp_path)
    assert store.put("cd34", chosen, rejected) is False
    assert store.get("cd34") is None
    assert not list(tmp_path.rglob("*"))  # nothing written, no temporary file either


@pytest.mark.slow
def test_a_nan_entry_is_recomputed_and_the_next_run_trains(shapes_config, tmp_path, monkeypatch):
    """Two real runs on 4 + 2 pairs: the second finds a NaN and a damaged entry and recomputes them.

    The run is named with mathtext that cannot be drawn (``$\\frac{$``): it must still finish."""
    from nbtools.train import read_run, train

    monkeypatch.setattr("nbtools.packing.ref_cache.cache_dir", lambda: tmp_path / "cache")
    data = write_small_shapes(tmp_path / "data", n_train=4, n_val=2)
    settings = dict(train_file=str(data / "train.jsonl"), validation_file=str(data / "validation.jsonl"),
                    max_steps=1, eval_steps=1, save_steps=1, logging_steps=1, batch_size=2,
                    task_display_name="cost $\\frac{$ run", custom_model_name="$x^2$")
    first = train(shapes_config(tmp_path / "first", **settings), live=False)
    assert read_run(first.run_dir)["reference_logps"]["computed"] == 6
    entries = sorted((tmp_path / "cache" / "ref_logps").rglob("*.json"))
    assert len(entries) == 6
    entries[0].write_text('{"chosen": NaN, "rejected": NaN}')
    entries[1].write_text('{"chosen": [1, 2], "rejected": -3.0}')

    second = train(shapes_config(tmp_path / "second", **settings), live=False)
    record = read_run(second.run_dir)
    assert record["status"] == "finished"
    assert (record["reference_logps"]["computed"], record["reference_logps"]["reused"]) == (2, 4)
    assert all(math.isfinite(v) for k, v in record["metrics"].items() if isinstance(v, float))
    assert math.isfinite(record["metrics"]["eval_loss"])
    for entry in entries[:2]:
        value = json.loads(entry.read_text())
        assert all(isinstance(v, float) and math.isfinite(v) and v <= 0 for v in value.values())
    assert (second.run_dir / "plots" / "training.png").stat().st_size > 0
