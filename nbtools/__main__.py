"""Command line: ``python -m nbtools validate|train|evaluate|export|serve|convert|runs …``.

Each sub-command lives in ``nbtools/cli/<name>.py`` and provides ``add_arguments(parser)``
and ``run(args) -> int`` (the exit code). This file only dispatches.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "prepare": "step 0: sample answers from a model and turn them into preference pairs",
    "validate": "check a preference dataset before training",
    "train": "train a LoRA adapter with DPO from a config YAML",
    "evaluate": "compare a trained run against its base model",
    "export": "save the adapter or a merged model for serving",
    "serve": "serve an export or a run behind an OpenAI-compatible API (transformers serve)",
    "convert": "convert preference data between JSONL (+ pictures) and Parquet with embedded pictures",
    "runs": "list the runs in a folder",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m nbtools", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        try:
            module = importlib.import_module(f"nbtools.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"nbtools.cli.{name}":
                raise
            continue  # command not built yet
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv=None) -> int:
    """Exit codes: 0 done, 1 the data has errors (validate), 2 a usage or input problem (one line saying
    what to fix), 3 an internal error (one line naming the file with the details), 130 interrupted."""
    from nbtools.errors import run_entry

    parser = build_parser()
    args = parser.parse_args(argv)
    return run_entry(lambda: args._run(args), prog=f"nbtools {args.command}")


if __name__ == "__main__":
    sys.exit(main())
