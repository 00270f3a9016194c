"""A long fuzzing run of the loader and validator: the properties of tests/test_data_fuzz.py
(any bytes, mutated lines, media paths and file names give a report, never an exception;
valid lines are never rejected; ``--json`` is strict UTF-8 JSON) with many more examples.

``make test`` runs them with 200 examples each, derandomized; here the count is yours and
``--seed`` explores new examples (a failure prints the example that reproduces it).

    python benchmarks/fuzz_validate.py [--examples 5000] [--seed N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=5000, help="examples per property")
    parser.add_argument("--seed", type=int, help="explore with this seed instead of the derandomized sequence")
    args = parser.parse_args(argv)
    env = {**os.environ, "NBTOOLS_FUZZ_EXAMPLES": str(args.examples), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [sys.executable, "-m", "pytest", "tests/test_data_fuzz.py", "-q", "-p", "no:cacheprovider"]
    if args.seed is not None:
        env["NBTOOLS_FUZZ_SEED"] = str(args.seed)
        command.append(f"--hypothesis-seed={args.seed}")
    start = time.perf_counter()
    code = subprocess.call(command, cwd=REPO, env=env)
    seconds = time.perf_counter() - start
    how = "derandomized" if args.seed is None else f"seed {args.seed}"
    print(f"{args.examples:,} examples per property ({how}): {'no failure' if code == 0 else 'FAILED (see above)'} "
          f"in {seconds:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
