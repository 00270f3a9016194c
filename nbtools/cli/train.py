"""``python -m nbtools train CONFIG.yaml [--resume] [--max-steps N] [--output-dir DIR | --runs-dir DIR]``.

The same call a notebook makes (nbtools.train.train), headless: log lines instead of a live
figure, PNGs in the run folder at the end. Under ``torchrun --nproc_per_node N`` every
process runs this command; rank 0 alone writes the run folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="the run config YAML (see nbtools.config.RunConfig), or a run folder")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in output_dir from its last complete checkpoint")
    parser.add_argument("--max-steps", type=int, default=None, help="override max_steps from the config")
    parser.add_argument("--output-dir", default=None, help="override output_dir (the run folder)")
    parser.add_argument("--runs-dir", default=None, metavar="DIR",
                        help="where a run whose output_dir is empty gets its new folder <task_display_name>-<UTC "
                             "time> (default: runs/); with --resume, the newest run there is continued")
    parser.add_argument("--quiet", action="store_true", help="no per-step log lines")


def run(args) -> int:
    from nbtools.run_folder.lifecycle import resolve_config  # light: a config error is reported before torch loads

    try:
        if args.resume and not Path(args.config).expanduser().exists():
            from nbtools.run_folder.lifecycle import RunFolderError

            raise RunFolderError(f"{args.config}: no such run folder or config file to resume (fix: pass the folder "
                                 "a run wrote, e.g. from `python -m nbtools runs`, or its config.yaml)")
        config = resolve_config(args.config)
        changes = {}
        if args.max_steps is not None:
            changes["max_steps"] = args.max_steps
        if args.output_dir is not None:
            changes["output_dir"] = args.output_dir
        if changes:
            config = config.replace(**changes)
        from nbtools.train import train

        result = train(config, resume=args.resume, live=False if args.quiet else "headless", runs_dir=args.runs_dir)
    except KeyboardInterrupt:  # user errors (exit 2) and internal errors (exit 3) are printed by nbtools.__main__
        print("interrupted: continue with --resume", file=sys.stderr)
        return 130
    metrics = ", ".join(f"{k}={v:.4f}" for k, v in result.metrics.items()
                        if k in ("eval_loss", "eval_rewards/accuracies", "eval_rewards/margins", "loss"))
    if result.diagnosis is not None or result.data:  # rank 0
        print(f"finished: {result.run_dir} ({metrics})")
    return 0
