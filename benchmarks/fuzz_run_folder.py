"""The run-folder lifecycle fuzzing of ``tests/test_run_folder_fuzz.py``, run longer.

``make test`` runs 30 derandomized sequences of 20 steps; this runs many more (still
derandomized by default, so a failure reproduces; ``--random`` explores new sequences) and
prints how many sequences and steps passed per second.

    python benchmarks/fuzz_run_folder.py [--examples 1000] [--steps 40] [--random]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=1000, help="sequences to try")
    parser.add_argument("--steps", type=int, default=40, help="steps per sequence")
    parser.add_argument("--random", action="store_true", help="new random sequences (not derandomized)")
    args = parser.parse_args()

    from hypothesis import settings
    from hypothesis.stateful import run_state_machine_as_test

    from test_run_folder_fuzz import RunFolderMachine

    started = time.time()
    run_state_machine_as_test(RunFolderMachine, settings=settings(
        derandomize=not args.random, database=None, deadline=None, max_examples=args.examples,
        stateful_step_count=args.steps))
    seconds = time.time() - started
    print(f"{args.examples} sequences of up to {args.steps} steps: every invariant held ({seconds:.1f} s, "
          f"{args.examples / seconds:.1f} sequences/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
