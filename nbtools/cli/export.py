"""``python -m nbtools export RUN_DIR [--merged] [--out DIR]``: save the adapter or a merged model.

Exit codes: 0 exported, 2 the run folder cannot be exported (a missing or damaged file, named with the fix) or
--out is a file, a symbolic link or holds files the previous export did not write, 3 an internal error (details in
the run folder's error.log, named on the one line printed).
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run folder training wrote")
    parser.add_argument("--merged", action="store_true",
                        help="merge the LoRA adapter into the base model (a standalone model for vLLM/transformers)")
    parser.add_argument("--out", metavar="DIR",
                        help="where to write the export (default: RUN_DIR/export/merged or RUN_DIR/export/adapter)")
    parser.add_argument("--json", action="store_true", help="print {kind, path} as JSON")


def run(args: argparse.Namespace) -> int:
    from nbtools.errors import details_in
    from nbtools.evaluate.run_model import existing_run_folder
    from nbtools.export import export_merged, save_adapter

    # user errors (a run folder with a missing or damaged file, an --out that cannot be replaced) are printed by
    # nbtools.__main__ with exit 2; an internal error's details go to the run folder's error.log
    with details_in(existing_run_folder(args.run_dir)):
        out = export_merged(args.run_dir, args.out) if args.merged else save_adapter(args.run_dir, args.out)
    kind = "merged" if args.merged else "adapter"
    if args.json:
        print(json.dumps({"kind": kind, "path": str(out)}))
    else:
        print(f"{kind} export written to {out} (model card: {out / 'README.md'})")
    return 0
