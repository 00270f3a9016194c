"""Reference-cache storage at scale: append-only shards (now) against one JSON file per pair (before).

For ``n_pairs`` pairs it reports, for each layout: files and folders made, bytes on disk (allocated blocks
and apparent size), puts per second, the time to open the store and read its first key, lookups per
second for present keys and for misses, and the growth of peak RSS (VmHWM, the scan's merges included) and of RSS
once done (VmRSS) while a fresh process opens the store and looks up every key.

The old layout is a small re-implementation kept here as the baseline (``OldJsonPerPair``): it writes
``<key[:2]>/<key>.json`` atomically (temporary file, fsync, rename) as the earlier ``ReferenceLogpsStore``
did. Its fsync per pair costs milliseconds, so by default only the first ``old_fsync_sample`` puts are timed
with fsync (that is the put rate reported); the rest are written without fsync, only to build the folder
that the read figures need. The new store writes without fsync and fsyncs once, at ``flush()`` (timed).

Everything runs on this machine's disk with a warm page cache (no cache is dropped): "open" is the cost of
scanning, not of cold disk reads.

    python benchmarks/ref_store.py --pairs 100000 --out benchmarks/results/ref_store.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import platform
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

LOOKUP_SAMPLE = 20_000


def pair_keys(count: int, salt: str = "present") -> list[str]:
    """64-hex sha256 keys, as ``pair_key`` makes them."""
    return [hashlib.sha256(f"{salt}-{i}".encode()).hexdigest() for i in range(count)]


def pair_values(count: int, seed: int = 0) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    return [(-rng.uniform(1, 500), -rng.uniform(1, 500)) for _ in range(count)]


class OldJsonPerPair:
    """BASELINE ONLY: the earlier layout, one ``{"chosen", "rejected"}`` JSON file per pair under ``<key[:2]>/``."""

    def __init__(self, folder: str | os.PathLike, fsync: bool = True):
        self.folder = Path(folder)
        self.fsync = fsync

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> tuple[float, float] | None:
        try:
            value = json.loads(self._path(key).read_text())
            return value["chosen"], value["rejected"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, key: str, chosen: float, rejected: float) -> bool:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(temporary, "w") as handle:
            handle.write(json.dumps({"chosen": chosen, "rejected": rejected}))
            if self.fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, path)
        return True


def disk_usage(folder: Path) -> dict:
    """Files, folders, allocated bytes (what the disk really holds) and apparent bytes under ``folder``."""
    files = folders = allocated = apparent = 0
    for root, dirs, names in os.walk(folder):
        folders += len(dirs)
        for name in names:
            stat = os.stat(os.path.join(root, name))
            files += 1
            allocated += stat.st_blocks * 512
            apparent += stat.st_size
    return {"files": files, "folders": folders, "bytes_on_disk": allocated, "bytes_apparent": apparent}


def per_second(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else float("inf")


def timed_lookups(get: Callable[[str], Any], keys: list[str]) -> tuple[float, int]:
    """(seconds, number of keys found)."""
    start = time.perf_counter()
    found = sum(get(key) is not None for key in keys)
    return time.perf_counter() - start, found


def _rss_probe(layout: str, folder: str, keys: list[str], queue) -> None:
    """In a fresh process: peak RSS before and after opening the store and looking up ``keys``."""
    def status_mb(field: str) -> float:
        with open("/proc/self/status") as status:
            return int(next(line for line in status if line.startswith(field)).split()[1]) / 1024

    if layout == "shards":
        from nbtools.shard_store import ShardStore  # the storage under ReferenceLogpsStore, without torch

        store = ShardStore(folder)
        get = store.get
        keys = [bytes.fromhex(key) for key in keys]
    else:
        get = OldJsonPerPair(folder).get
    peak, rss = status_mb("VmHWM:"), status_mb("VmRSS:")
    found = sum(get(key) is not None for key in keys)
    queue.put({"peak_rss_before_mb": round(peak, 1), "peak_rss_growth_mb": round(status_mb("VmHWM:") - peak, 1),
               "rss_growth_after_mb": round(status_mb("VmRSS:") - rss, 1), "found": found})


def rss_growth(layout: str, folder: Path, keys: list[str]) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_rss_probe, args=(layout, str(folder), keys, queue))
    process.start()
    result = queue.get(timeout=600)
    process.join()
    return result


def _fill_new(folder: Path, keys: list[str], values: list[tuple[float, float]]) -> dict:
    from nbtools.packing.ref_cache import ReferenceLogpsStore

    store = ReferenceLogpsStore(folder)
    start = time.perf_counter()
    for key, (chosen, rejected) in zip(keys, values):
        store.put(key, chosen, rejected)
    store.flush()
    seconds = time.perf_counter() - start
    store.close()
    return {"put_seconds": round(seconds, 3), "puts_per_second": per_second(len(keys), seconds),
            "put_fsync": "once, at flush()"}


def _fill_old(folder: Path, keys: list[str], values: list[tuple[float, float]], fsync_sample: int) -> dict:
    synced, unsynced = OldJsonPerPair(folder, fsync=True), OldJsonPerPair(folder, fsync=False)
    sample = min(fsync_sample, len(keys))
    start = time.perf_counter()
    for key, (chosen, rejected) in zip(keys[:sample], values[:sample]):
        synced.put(key, chosen, rejected)
    seconds = time.perf_counter() - start
    for key, (chosen, rejected) in zip(keys[sample:], values[sample:]):
        unsynced.put(key, chosen, rejected)
    return {"put_seconds_sample": round(seconds, 3), "puts_per_second": per_second(sample, seconds),
            "put_fsync": f"every put (rate from the first {sample} puts; the rest written without fsync)"}


def _read_figures(open_store: Callable[[], Callable[[str], Any]], keys: list[str], misses: list[str]) -> dict:
    """Open time (first lookup included), then lookups/s for present keys and for misses, on a fresh store."""
    start = time.perf_counter()
    get = open_store()
    get(keys[0])
    opened = time.perf_counter() - start
    sample = random.Random(1).sample(keys, min(LOOKUP_SAMPLE, len(keys)))
    hit_seconds, found = timed_lookups(get, sample)
    miss_seconds, wrongly_found = timed_lookups(get, misses)
    return {"open_seconds": round(opened, 4), "lookups_per_second_present": per_second(len(sample), hit_seconds),
            "present_found": f"{found}/{len(sample)}",
            "lookups_per_second_miss": per_second(len(misses), miss_seconds), "misses_found": wrongly_found}


def _open_new(folder: Path) -> Callable[[], Callable[[str], Any]]:
    def open_store():
        from nbtools.packing.ref_cache import ReferenceLogpsStore

        return ReferenceLogpsStore(folder).get

    return open_store


def measure(n_pairs: int = 100_000, folder: str | os.PathLike | None = None, old_fsync_sample: int = 2_000,
            misses: int = 2_000, keep: bool = False) -> dict:
    """Figures for both layouts at ``n_pairs`` pairs (see the module docstring). No side effects at import.

    ``folder``: scratch space (default: a new temporary folder); the layouts go to ``<folder>/shards`` and
    ``<folder>/json_per_pair``, which must not exist yet, and are removed afterwards unless ``keep``.
    """
    scratch = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="ref_store_bench_"))
    new_folder, old_folder = scratch / "shards", scratch / "json_per_pair"
    for path in (new_folder, old_folder):
        if path.exists():
            raise FileExistsError(f"{path} exists: measure() needs fresh folders")
    keys, values, missing = pair_keys(n_pairs), pair_values(n_pairs), pair_keys(misses, salt="absent")
    try:
        new = {**_fill_new(new_folder, keys, values), **disk_usage(new_folder),
               **_read_figures(_open_new(new_folder), keys, missing), **rss_growth("shards", new_folder, keys)}
        old = {**_fill_old(old_folder, keys, values, old_fsync_sample), **disk_usage(old_folder),
               **_read_figures(lambda: OldJsonPerPair(old_folder).get, keys, missing),
               **rss_growth("json_per_pair", old_folder, keys)}
    finally:
        if not keep:
            shutil.rmtree(new_folder, ignore_errors=True)
            shutil.rmtree(old_folder, ignore_errors=True)
            if folder is None:
                shutil.rmtree(scratch, ignore_errors=True)
    return {"n_pairs": n_pairs, "lookup_sample": min(LOOKUP_SAMPLE, n_pairs), "miss_sample": misses,
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
            "shards": new, "baseline_old_json_per_pair": old,
            "note": "baseline_old_json_per_pair is a local re-implementation of the earlier layout, for comparison"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--folder", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--old-fsync-sample", type=int, default=2_000)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    result = measure(args.pairs, args.folder, old_fsync_sample=args.old_fsync_sample)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
