"""Validation time and memory on hostile and huge files, as ratios.

1. Linear time: 100,000 valid lines with one line cut short (``{`` without its ``}``) ahead
   of them, against the same file without the cut (goal: under 2x). A further run with
   100 cut lines shows the cost stays per line, not per pair of lines.
2. Scale: one valid line (~235 bytes) repeated 850,000 times (~200 MB), validated by
   ``python -m nbtools validate --json`` in a child process: wall time against the 60 s
   goal and peak memory (max RSS) against 500 MB. ``--distinct`` makes every line of that
   file different (what sharing the contents of identical lines cannot help).

    python benchmarks/validate_hostile.py [--lines 100000] [--scale-lines 850000] [--distinct] [--keep DIR] [--out FILE]

``--out`` writes the figures as JSON (committed: ``benchmarks/results/validate_hostile.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

GOAL_RATIO, GOAL_SECONDS, GOAL_MB = 2.0, 60.0, 500.0


def line(i: int) -> str:
    return json.dumps({"messages": [{"role": "user", "content": f"What colour is the shape in picture {i:06d}? "
                                                                "Answer in one short sentence."},
                                    {"role": "assistant", "content": f"It is red, shape {i}."}],
                       "rejected_response": f"It is blue, shape {i}.", "id": i})


def timed(path: str) -> float:
    from nbtools.data import validate_dataset

    start = time.perf_counter()
    validate_dataset(path)
    return time.perf_counter() - start


def linear_time(folder: str, lines: int) -> dict:
    rows = [line(i) for i in range(lines)]
    clean = os.path.join(folder, "clean.jsonl")
    with open(clean, "w") as handle:
        handle.write("\n".join(rows) + "\n")
    results = {}
    for cuts in (1, 100):
        cut = rows[:]
        for k in range(cuts):
            at = k * (lines // cuts)
            cut[at] = cut[at][:-1]
        path = os.path.join(folder, f"cut{cuts}.jsonl")
        with open(path, "w") as handle:
            handle.write("\n".join(cut) + "\n")
        results[cuts] = path
    # interleaved and the best of 3 each: the machine's load changes during the run
    paths = {0: clean, **results}
    best = {cuts: timed(path) for cuts, path in paths.items()}
    for _ in range(2):
        for cuts, path in paths.items():
            best[cuts] = min(best[cuts], timed(path))
    clean_s = best[0]
    figures = {"lines": lines, "clean_seconds": round(clean_s, 2), "goal_ratio": GOAL_RATIO, "cut": {}}
    for cuts in results:
        cut_s = best[cuts]
        verdict = "meets" if cuts > 1 or cut_s / clean_s < GOAL_RATIO else "MISSES"
        print(f"{lines:,} valid lines + {cuts} cut line(s): {cut_s:.2f} s vs {clean_s:.2f} s clean, "
              f"ratio {cut_s / clean_s:.2f}" + (f" ({verdict} the < {GOAL_RATIO:g}x goal)" if cuts == 1 else ""))
        figures["cut"][str(cuts)] = {"seconds": round(cut_s, 2), "ratio": round(cut_s / clean_s, 3)}
    return figures


def child_run(path: str) -> tuple[float, float, int]:
    """(seconds, peak MB, stdout bytes) of ``python -m nbtools validate --json`` on ``path``."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "nbtools", "validate", path, "--json"], capture_output=True, env=env)
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if out.returncode not in (0, 1):
        raise SystemExit(out.stderr.decode(errors="replace")[-2000:])
    report = json.loads(out.stdout)
    assert report["rows"] > 0
    # ru_maxrss of children is the largest child so far: this is the only child this script starts
    return seconds, peak_kb / 1024, len(out.stdout)


def scale(folder: str, lines: int, distinct: bool) -> dict:
    path = os.path.join(folder, "big.jsonl")
    with open(path, "w") as handle:
        if distinct:
            for i in range(lines):
                handle.write(line(i) + "\n")
        else:
            one = line(0) + "\n"
            for _ in range(lines // 10000):
                handle.write(one * 10000)
            handle.write(one * (lines % 10000))
    megabytes = os.path.getsize(path) / 2**20
    seconds, peak, printed = child_run(path)
    print(f"{lines:,} {'distinct' if distinct else 'repeated'} lines ({megabytes:.0f} MB): {seconds:.1f} s (ratio to "
          f"the {GOAL_SECONDS:g} s goal {seconds / GOAL_SECONDS:.2f}), peak {peak:.0f} MB (ratio to {GOAL_MB:g} MB "
          f"{peak / GOAL_MB:.2f}), --json output {printed / 1024:.0f} KB")
    return {"lines": lines, "distinct": distinct, "file_mb": round(megabytes, 1), "seconds": round(seconds, 1),
            "goal_seconds": GOAL_SECONDS, "peak_mb": round(peak), "goal_mb": GOAL_MB, "output_kb": round(printed / 1024)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000, help="valid lines in the linear-time files")
    parser.add_argument("--scale-lines", type=int, default=850_000, help="repeated lines in the scale file (0: skip)")
    parser.add_argument("--distinct", action="store_true", help="make every line of the scale file different")
    parser.add_argument("--keep", help="write the files here and keep them")
    parser.add_argument("--out", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    figures = {"cpus": os.cpu_count()}
    folder = args.keep or tempfile.mkdtemp(prefix="nbtools-hostile-")
    os.makedirs(folder, exist_ok=True)
    try:
        if args.scale_lines:
            figures["scale"] = scale(folder, args.scale_lines, args.distinct)
        if args.lines:
            figures["linear_time"] = linear_time(folder, args.lines)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    if args.out:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from nbtools import atomic

        atomic.write_text(args.out, json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
