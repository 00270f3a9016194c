"""The reference cache's shard store: O(1) files, crash-safe scans, several writing processes, pickled lookups.

Most tests use :class:`nbtools.shard_store.ShardStore` (no torch import, so spawned processes start fast); the
ones about the cache's own rules (log-probs only, 64-hex keys, ``lookup_for`` in a worker) use
:class:`~nbtools.packing.ref_cache.ReferenceLogpsStore`.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import multiprocessing
import os
import pickle
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbtools.shard_store import ENTRY, HEADER, MAGIC, SUFFIX, ShardStore, encode_entry

SPAWN = multiprocessing.get_context("spawn")


def key(i: int) -> bytes:
    return hashlib.sha256(str(i).encode()).digest()


def value(i: int) -> tuple[float, float]:
    return -1.0 - i, -0.5 * i


def shards(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"*{SUFFIX}"))


def write_keys(folder: str, numbers: list[int]) -> None:
    """Runs in a spawned process: put ``numbers``' values."""
    store = ShardStore(folder)
    for i in numbers:
        store.put(key(i), *value(i))
    store.close()


def read_keys(folder: str, numbers: list[int]) -> list:
    """Runs in a spawned process: what a fresh store reads for ``numbers``."""
    store = ShardStore(folder)
    return [len(store)] + [store.get(key(i)) for i in numbers]


def run_lookup(pickled: bytes, examples: list[dict]) -> list:
    """Runs in a spawned process: unpickle a ``lookup_for`` callable (as a data-loader worker does) and call it."""
    lookup = pickle.loads(pickled)
    found = lookup(examples)
    return None if found is None else [tensor.tolist() for tensor in found]


@pytest.fixture(scope="module", autouse=True)
def torch_worker():
    """One spawned process with nbtools.packing already imported: that import takes seconds, so it runs while
    the other tests do."""
    pool = SPAWN.Pool(1, initializer=importlib.import_module, initargs=("nbtools.packing.ref_cache",))
    yield pool
    pool.terminate()  # idle by now; joining would wait for torch's exit handlers


@pytest.fixture(scope="module")
def workers():
    pool = SPAWN.Pool(2)
    yield pool
    pool.terminate()  # idle by now; joining would wait for torch's exit handlers


def test_round_trip_and_reopen(tmp_path):
    store = ShardStore(tmp_path)
    assert store.get(key(0)) is None and len(store) == 0
    for i in range(5):
        assert store.put(key(i), *value(i))
    assert [store.get(key(i)) for i in range(5)] == [value(i) for i in range(5)]
    assert store.put(key(1), -7.0, -8.0) and store.get(key(1)) == (-7.0, -8.0)  # a later put wins
    store.close()
    again = ShardStore(tmp_path)
    assert again.get(key(1)) == (-7.0, -8.0) and again.get(key(4)) == value(4) and len(again) == 5
    assert sorted(again.keys()) == sorted(key(i) for i in range(5))


def test_ten_thousand_puts_make_one_file(tmp_path):
    store = ShardStore(tmp_path)
    for i in range(10_000):
        store.put(key(i), *value(i))
    store.flush()
    assert [p.name for p in tmp_path.rglob("*")] == [shards(tmp_path)[0].name]
    assert shards(tmp_path)[0].stat().st_size == HEADER.size + 10_000 * ENTRY.size
    fresh = ShardStore(tmp_path)
    assert len(fresh) == 10_000 and fresh.get(key(9_999)) == value(9_999)


def test_a_torn_last_entry_and_a_flipped_byte_are_skipped(tmp_path):
    store = ShardStore(tmp_path)
    for i in range(100):
        store.put(key(i), *value(i))
    store.close()
    [shard] = shards(tmp_path)
    data = bytearray(shard.read_bytes())
    data[HEADER.size + 50 * ENTRY.size + 40] ^= 0x01  # entry 50's first value
    shard.write_bytes(bytes(data[:-7]))  # entry 99 torn
    fresh = ShardStore(tmp_path)
    assert len(fresh) == 98
    assert fresh.get(key(50)) is None and fresh.get(key(99)) is None
    assert all(fresh.get(key(i)) == value(i) for i in range(100) if i not in (50, 99))
    assert fresh.put(key(99), *value(99))  # recomputed: goes to a new shard, the torn one stays as it is
    assert len(shards(tmp_path)) == 2 and ShardStore(tmp_path).get(key(99)) == value(99)


def test_two_processes_write_and_a_third_reads_everything(tmp_path, workers):
    first, second = list(range(0, 600)), list(range(400, 1000))  # 200 keys written by both
    for done in [workers.apply_async(write_keys, (str(tmp_path), numbers)) for numbers in (first, second)]:
        done.get(timeout=60)
    assert len(shards(tmp_path)) == 2  # one per writing process, never a shared file
    read = workers.apply(read_keys, (str(tmp_path), list(range(1000))))
    assert read[0] == 1000 and read[1:] == [value(i) for i in range(1000)]


def test_values_from_another_store_appear_on_a_miss(tmp_path):
    reader, writer = ShardStore(tmp_path), ShardStore(tmp_path)
    assert reader.get(key(1)) is None
    writer.put(key(1), *value(1))
    assert reader.get(key(1)) == value(1)
    other = tmp_path / f"otherhost-1-abcd{SUFFIX}"  # another node's shard, appearing later
    other.write_bytes(HEADER.pack(MAGIC, 1, ENTRY.size) + encode_entry(key(2), *value(2)))
    assert reader.get(key(2)) == value(2)
    with open(other, "ab") as handle:  # and growing
        handle.write(encode_entry(key(3), *value(3)))
    assert reader.get_many([key(1), key(2), key(3)]) == [value(1), value(2), value(3)]


def test_an_unknown_shard_version_is_ignored(tmp_path):
    store = ShardStore(tmp_path)
    for i in range(3):
        store.put(key(i), *value(i))
    store.close()
    [shard] = shards(tmp_path)
    data = shard.read_bytes()
    shard.write_bytes(data[:8] + struct.pack("<I", 2) + data[12:])
    fresh = ShardStore(tmp_path)
    assert len(fresh) == 0 and fresh.get(key(0)) is None
    fresh.put(key(0), *value(0))  # this process's shard cannot be extended: a new one
    assert len(shards(tmp_path)) == 2 and ShardStore(tmp_path).get(key(0)) == value(0)


def test_the_cache_refuses_values_that_are_not_log_probs(tmp_path):
    from nbtools.packing.ref_cache import ReferenceLogpsStore

    store = ReferenceLogpsStore(tmp_path)
    hexkey = key(0).hex()
    for chosen, rejected in [(math.nan, -1.0), (-1.0, math.inf), (-math.inf, -1.0), (0.5, -1.0), (-1.0, 1e-9)]:
        assert store.put(hexkey, chosen, rejected) is False
    assert store.get(hexkey) is None and len(store) == 0 and not list(tmp_path.iterdir())
    assert store.put(hexkey, -1.0, 0.0) and store.get(hexkey) == (-1.0, 0.0) and store.keys() == [hexkey]
    with pytest.raises(ValueError):
        store.put("cd34", -1.0, -2.0)
    assert store.get("cd34") is None and store.get("not hex") is None
    # an entry with a good checksum but values that are not log-probs (written some other way) is never returned
    store.close()
    with open(next(tmp_path.iterdir()), "ab") as handle:
        handle.write(encode_entry(key(1), math.nan, -1.0) + encode_entry(key(2), 3.0, -1.0))
    fresh = ReferenceLogpsStore(tmp_path)
    assert fresh.get(key(1).hex()) is None and fresh.get(key(2).hex()) is None and len(fresh) == 1


def test_lookup_for_works_in_a_spawned_process(tmp_path, torch_worker):
    from nbtools.packing.ref_cache import ReferenceFingerprint, ReferenceLogpsStore, pair_key

    fingerprint = ReferenceFingerprint("model", "rev", "", "tokenizer", "images", None, "float32")
    examples = [{"prompt": [{"role": "user", "content": f"q{i}"}], "chosen": [{"role": "assistant", "content": "a"}],
                 "rejected": [{"role": "assistant", "content": "b"}]} for i in range(3)]
    store = ReferenceLogpsStore(tmp_path)
    for i, example in enumerate(examples[:2]):
        store.put(pair_key(example, fingerprint), -1.0 - i, -2.0 - i)
    store.flush()
    pickled = pickle.dumps(store.lookup_for(fingerprint))
    assert len(pickled) < 2_000  # the folder travels, not the index
    assert torch_worker.apply(run_lookup, (pickled, examples[:2])) == [[-1.0, -2.0], [-2.0, -3.0]]
    assert torch_worker.apply(run_lookup, (pickled, examples)) is None  # one pair missing: computed, not read


@st.composite
def programs(draw):
    ops = st.one_of(
        st.tuples(st.just("put"), st.integers(0, 7)),
        st.tuples(st.just("get"), st.integers(0, 9)),
        st.tuples(st.just("reopen")),
        st.tuples(st.just("truncate"), st.integers(0, 2**20), st.booleans()),
    )
    values = draw(st.lists(st.floats(max_value=0.0, allow_nan=False, allow_infinity=False), min_size=8,
                           max_size=8))
    return values, draw(st.lists(ops, max_size=40))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_a_get_returns_the_value_put_or_nothing_after_a_truncation(program):
    """Random puts, reopens, truncations of the newest shard at any byte and gets: never a wrong number.

    Each key has one value (as in the cache, whose key covers every input of its value)."""
    values, ops = program
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        store, put, cut = ShardStore(folder), set(), set()
        for op in ops:
            if op[0] == "put":
                store.put(key(op[1]), values[op[1]], -1.0)
                put.add(op[1])
                cut.discard(op[1])
            elif op[0] == "reopen":
                store.close()
                store = ShardStore(folder)
            elif op[0] == "truncate" and shards(folder):
                if op[2]:
                    store.close()  # a crash between runs; otherwise another process dies mid-write
                newest = max(shards(folder), key=lambda p: (p.stat().st_mtime_ns, p.name))
                os.truncate(newest, op[1] % (newest.stat().st_size + 1))
                cut |= put
                if op[2]:
                    store = ShardStore(folder)
            elif op[0] == "get":
                got = store.get(key(op[1]))
                if op[1] not in put:
                    assert got is None
                elif op[1] in cut:
                    assert got in (None, (values[op[1]], -1.0))
                else:
                    assert got == (values[op[1]], -1.0)
        store.close()


def test_a_scan_in_chunks_reads_past_damage_at_a_chunk_end(tmp_path, monkeypatch):
    import nbtools.shard_store as shard_store

    store = ShardStore(tmp_path)
    for i in range(10):
        store.put(key(i), *value(i))
    store.close()
    [shard] = shards(tmp_path)
    data = bytearray(shard.read_bytes())
    data[HEADER.size + 2 * ENTRY.size + 33] ^= 0x01  # the last entry of the first chunk of three
    shard.write_bytes(bytes(data))
    monkeypatch.setattr(shard_store, "READ_CHUNK", 3 * ENTRY.size)
    fresh = ShardStore(tmp_path)
    assert len(fresh) == 9 and fresh.get(key(2)) is None and fresh.get(key(9)) == value(9)

