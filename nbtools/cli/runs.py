"""``python -m nbtools runs [FOLDER] [--json] [--plot FILE]``: the list of runs and their status.

Exit codes: 0 listed (also when there are none), 2 the folder does not exist.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", metavar="FOLDER", nargs="?", default="runs", help="folder holding runs (default: runs)")
    parser.add_argument("--json", action="store_true", help="print a JSON list, one object per run")
    parser.add_argument("--plot", metavar="FILE", help="also save a plot comparing the runs' validation curves")


def run(args: argparse.Namespace) -> int:
    from nbtools.runs import list_runs, plot_validation_curves, runs_table_text

    if not Path(args.folder).is_dir():
        print(f"error: {args.folder}: no such folder (fix: pass the folder your runs are in, e.g. runs/)",
              file=sys.stderr)
        return 2
    runs = list_runs(args.folder)
    if args.plot:
        plot_validation_curves(runs, path=args.plot)
    if args.json:
        print(json.dumps([r.to_dict() for r in runs], ensure_ascii=False))
    else:
        print(runs_table_text(runs))
    return 0
