"""What the resume's picture check costs: the media fingerprint inside validation, and naming what changed.

A resume compares the fingerprint validation takes of every local picture a row names (path, size,
mtime: ``nbtools/data/fingerprint.py``) with the one the run recorded. This measures, on the JSONL of
``benchmarks/scale.py`` (rows in the seed format, row N showing picture N mod ``--images``):

* ``validate_s``: ``validate_dataset`` in one process (``NBTOOLS_VALIDATE_WORKERS=1``), median of ``--repeat``;
* ``fingerprint_s``: the time spent inside ``MediaFingerprint.add`` during those runs (timed around each call),
  and its share of validation; ``per_reference_us``;
* ``changed_media_s``: the failure path only, naming changed files after one picture was touched.

    python benchmarks/media_fingerprint.py [--rows 100000] [--images 10000] [--repeat 3] [--work DIR]

Writes ``benchmarks/results/media_fingerprint.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def measure(rows: int, images: int, repeat: int, work: Path) -> dict:
    from scale import make_jsonl, machine_facts

    from nbtools.data import fingerprint
    from nbtools.data.validate import validate_dataset

    data = make_jsonl(work, rows, images)
    spent = [0.0]
    real_add = fingerprint.MediaFingerprint.add

    def timed_add(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return real_add(self, *args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t0

    fingerprint.MediaFingerprint.add = timed_add
    os.environ["NBTOOLS_VALIDATE_WORKERS"] = "1"  # in this process, so the timer sees every call
    runs = []
    for _ in range(repeat):
        spent[0] = 0.0
        t0 = time.perf_counter()
        report = validate_dataset(str(data), max_pixels=262144)
        runs.append((time.perf_counter() - t0, spent[0], report))
    fingerprint.MediaFingerprint.add = real_add
    references = runs[-1][2].media_fingerprint["references"]
    validate_s = statistics.median(r[0] for r in runs)
    fingerprint_s = statistics.median(r[1] for r in runs)

    from nbtools.data.load import load_records

    records = load_records(str(data)).records
    since = time.time()
    touched = work / "img" / "7.jpg"
    os.utime(touched, (since + 5, since + 5))
    t0 = time.perf_counter()
    changed = fingerprint.changed_media(records, since)
    changed_s = time.perf_counter() - t0
    assert changed and changed[0].path.endswith("7.jpg"), changed
    return {"rows": rows, "images": images, "references": references, "repeat": repeat,
            "validate_s": round(validate_s, 3), "fingerprint_s": round(fingerprint_s, 4),
            "fingerprint_share": round(fingerprint_s / validate_s, 4),
            "per_reference_us": round(fingerprint_s / references * 1e6, 3),
            "changed_media_s": round(changed_s, 3), "machine": machine_facts()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "media_fingerprint.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(args.rows, args.images, args.repeat, args.work or Path(tmp))
    from nbtools import atomic

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
