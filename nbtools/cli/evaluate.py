"""``python -m nbtools evaluate RUN_DIR [--data FILE] [--json]``: base vs tuned on held-out pairs.

Writes ``evaluation.json``, ``plots/evaluation.png`` and ``evaluation_flipped.html`` in the
run folder and prints the table (or the JSON). Exit codes: 0 evaluated, 2 the run folder
or the data cannot be used (the message says why and what to do), 3 an internal error (details in the
run folder's error.log, named on the one line printed).
"""

from __future__ import annotations

import argparse
import json
import sys

from nbtools.cli import positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run folder training wrote")
    parser.add_argument("--data", metavar="FILE",
                        help="held-out pairs to evaluate on (default: the run's validation file or split)")
    parser.add_argument("--json", action="store_true", help="print evaluation.json's content instead of a table")
    parser.add_argument("--batch-size", type=positive_int, default=4, metavar="N", help="pairs per forward pass")
    parser.add_argument("--max-pairs", type=positive_int, metavar="N", help="evaluate only the first N pairs")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (results are reproducible)")


def run(args: argparse.Namespace) -> int:
    from nbtools.errors import details_in
    from nbtools.evaluate import evaluate_run, table_text
    from nbtools.evaluate.run_model import existing_run_folder

    # user errors (bad folder, data or config) are printed by nbtools.__main__ with exit 2; an internal
    # error's details go to the run folder's error.log
    with details_in(existing_run_folder(args.run_dir)):
        result = evaluate_run(args.run_dir, args.data, batch_size=args.batch_size, max_pairs=args.max_pairs,
                              seed=args.seed, progress=sys.stderr.isatty())
    if args.json:
        print(json.dumps(result.payload, ensure_ascii=False))
    else:
        print(table_text(result.payload))
        for name, path in result.paths.items():
            print(f"{name}: {path}")
    return 0
