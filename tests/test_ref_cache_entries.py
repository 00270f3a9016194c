"""The reference cache trusts only entries that can be log-probabilities; damaged ones are recomputed.

Before: a NaN written into one cache entry (by a broken run, a bad disk, a hand edit) was read back
forever, and every later run on those pairs stopped with "loss became nan".
"""

from __future__ import annotations

import math
import struct

import pytest

from conftest import write_small_shapes
from nbtools.packing.ref_cache import ReferenceFingerprint, ReferenceLogpsStore, pair_key
from nbtools.shard_store import ENTRY, HEADER, encode_entry


def _entry_offset(index: int) -> int:
    return HEADER.size + index * ENTRY.size


def _rewrite(key: bytes, chosen: float, rejected: float):
    """An entry holding values that are not log-probs, with a good checksum (as a broken run would have written)."""
    return lambda data, at: data[:at] + encode_entry(key, chosen, rejected) + data[at + ENTRY.size:]


def _flip(byte: int):
    return lambda data, at: data[:at + byte] + bytes([data[at + byte] ^ 0x40]) + data[at + byte + 1:]


DAMAGED = {
    "nan": lambda key: _rewrite(key, math.nan, -2.0),
    "infinite": lambda key: _rewrite(key, -1.0, -math.inf),
    "positive": lambda key: _rewrite(key, 3.5, -2.0),
    "flipped value byte": lambda key: _flip(40),
    "flipped checksum byte": lambda key: _flip(ENTRY.size - 1),
    "zeroed": lambda key: lambda data, at: data[:at] + bytes(ENTRY.size) + data[at + ENTRY.size:],
    "truncated": lambda key: lambda data, at: data[:at + ENTRY.size // 2],
    "other format version": lambda key: lambda data, at: data[:8] + struct.pack("<I", 99) + data[12:],
}


FINGERPRINT = ReferenceFingerprint("model", "rev", "", "tokenizer", "images", None, "float32")
EXAMPLES = [{"prompt": [{"role": "user", "content": f"question {i}"}], "chosen": [{"role": "assistant",
             "content": "yes"}], "rejected": [{"role": "assistant", "content": "no"}]} for i in range(2)]


@pytest.mark.parametrize("damage", DAMAGED.values(), ids=DAMAGED.keys())
def test_a_damaged_entry_counts_as_missing_and_is_rewritten(tmp_path, damage):
    store = ReferenceLogpsStore(tmp_path)
    keys = [pair_key(example, FINGERPRINT) for example in EXAMPLES]
    for key in keys:
        store.put(key, -1.0, -2.0)
    chosen, rejected = store.lookup(EXAMPLES, FINGERPRINT)
    assert chosen.tolist() == [-1.0, -1.0] and rejected.tolist() == [-2.0, -2.0]
    store.close()
    [shard] = list(tmp_path.iterdir())
    shard.write_bytes(damage(bytes.fromhex(keys[1]))(shard.read_bytes(), _entry_offset(1)))

    store = ReferenceLogpsStore(tmp_path)  # a later run reads the damaged shard
    assert store.get(keys[1]) is None
    assert store.lookup(EXAMPLES, FINGERPRINT) is None  # the batch's reference is computed, not read
    assert store.put(keys[1], -1.5, -2.5)
    assert store.get(keys[1]) == (-1.5, -2.5)
    store.close()
    assert ReferenceLogpsStore(tmp_path).get(keys[1]) == (-1.5, -2.5)  # and so does the run after it


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
    folder = tmp_path / "cache" / "ref_logps"
    assert len(ReferenceLogpsStore(folder)) == 6
    shard = next(folder.glob("*.nbref"))
    data = shard.read_bytes()
    damaged = [data[_entry_offset(i):_entry_offset(i) + 32] for i in range(2)]
    data = _rewrite(damaged[0], math.nan, math.nan)(data, _entry_offset(0))
    shard.write_bytes(_flip(36)(data, _entry_offset(1)))

    second = train(shapes_config(tmp_path / "second", **settings), live=False)
    record = read_run(second.run_dir)
    assert record["status"] == "finished"
    assert (record["reference_logps"]["computed"], record["reference_logps"]["reused"]) == (2, 4)
    assert all(math.isfinite(v) for k, v in record["metrics"].items() if isinstance(v, float))
    assert math.isfinite(record["metrics"]["eval_loss"])
    store = ReferenceLogpsStore(folder)
    assert len(store) == 6
    for key in damaged:
        value = store.get(key.hex())
        assert value is not None and all(isinstance(v, float) and math.isfinite(v) and v <= 0 for v in value)
    assert (second.run_dir / "plots" / "training.png").stat().st_size > 0
