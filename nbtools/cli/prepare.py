"""``python -m nbtools prepare INPUT --output-dir DIR [options]``: step 0, images + prompts -> pairs.

INPUT is a JSONL in the data format (prompts, or a supervised dataset with reference answers)
or a folder of images (then give ``--prompts "What is shown?" ...``). Every option is a field
of :class:`nbtools.prepare.PrepareConfig` (same name, dashes for underscores, same help).
``--base-url URL`` samples through an OpenAI-compatible server (``--backend openai`` implied),
``--judge-url URL`` judges through one (``--judge endpoint`` implied).
Exit codes: 0 pairs written and valid, 1 the written pairs have validation errors, 2 bad input
or a server that cannot be used.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import typing


def _options():
    from nbtools.prepare.config import PrepareConfig

    hints = typing.get_type_hints(PrepareConfig)
    for spec in dataclasses.fields(PrepareConfig):
        if spec.name in ("input_file", "images_dir"):
            continue  # the positional INPUT
        hint = hints[spec.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        base = args[0] if typing.get_origin(hint) is typing.Union else hint
        yield spec, base


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="INPUT", help="a JSONL of prompts (optionally with reference answers) "
                                                      "or a folder of images")
    for spec, base in _options():
        flag = "--" + spec.name.replace("_", "-")
        text = spec.metadata["help"].replace("%", "%%")
        if base is bool:
            parser.add_argument(flag, action="store_true", help=text)
        elif typing.get_origin(base) is list:
            parser.add_argument(flag, nargs="+", metavar="VALUE", default=None, help=text,
                                choices=spec.metadata.get("choices"))
        else:
            parser.add_argument(flag, type=base, default=None, help=text, choices=spec.metadata.get("choices"))
    parser.add_argument("--json", action="store_true", help="print report.json's content instead of the summary")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace):
    from nbtools.prepare import PrepareConfig

    values = {}
    for spec, _ in _options():
        value = getattr(args, spec.name)
        if value is not None and value is not False:
            values[spec.name] = value
    if values.get("base_url") and "backend" not in values:
        values["backend"] = "openai"
    if values.get("judge_url") and "judge" not in values:
        values["judge"] = "endpoint"
    key = "images_dir" if os.path.isdir(args.input) else "input_file"
    return PrepareConfig(**{key: args.input}, **values)


def run(args: argparse.Namespace) -> int:
    from nbtools.prepare import prepare

    config = config_from_args(args)
    try:
        result = prepare(config, progress=not args.quiet and not args.json and sys.stderr.isatty())
    except KeyboardInterrupt:  # user errors are printed by nbtools.__main__ (exit 2)
        print(f"interrupted: the answers and judge scores so far are kept in {config.output_dir}/samples.jsonl and "
              "judgments.jsonl; run the same command again to resume", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result.report.to_dict(), ensure_ascii=False))
    else:
        print(result.report.summary())
        for problem in (result.validation.problems if result.validation else [])[:20]:
            print(problem.format())
        print(f"pairs: {result.pairs_file}")
    return 1 if result.validation is not None and result.validation.has_errors() else 0
