"""``python -m nbtools evaluate RUN_DIR [--data FILE | --benchmark FILE ...] [--json]``: base vs tuned.

Without ``--benchmark``: both models score held-out preference pairs; writes ``evaluation.json``,
``plots/evaluation.png`` and ``evaluation_flipped.html`` in the run folder and prints the table (or the JSON).
With ``--benchmark FILE`` (repeatable): both models answer the benchmark's questions (yes/no questions in POPE's
layout, or short answers), scored with intervals; writes ``answers/<name>.json`` and ``answers/<name>_flipped.html``.

Exit codes: 0 evaluated, 2 the run folder, the data or the benchmark cannot be used (the message names the
file, line, field and fix), 3 an internal error (details in the run folder's error.log, named on the one line
printed).
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
    parser.add_argument("--json", action="store_true", help="print the results' JSON instead of a table (with several --benchmark: a list)")
    parser.add_argument("--batch-size", type=positive_int, metavar="N",
                        help="pairs per forward pass (default 4), or questions answered at once (default 16)")
    parser.add_argument("--max-pairs", type=positive_int, metavar="N", help="evaluate only the first N pairs")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (results are reproducible)")
    answers = parser.add_argument_group("answers (with --benchmark)")
    answers.add_argument("--benchmark", metavar="FILE", action="append",
                         help="questions base and tuned answer, one JSON object per line: POPE's layout "
                              "(question_id, image, text, label yes/no) or short answers (question_id, image, text, "
                              "answer[, terms]); or Parquet shards with the pictures embedded (a file, a folder, "
                              "or a Hub id such as lmms-lab/POPE:test); repeat for several files")
    answers.add_argument("--images", metavar="DIR",
                         help="folder the benchmark's image paths are relative to (default: the benchmark file's "
                              "folder), e.g. COCO's val2014 for POPE")
    answers.add_argument("--terms", metavar="A,B,...",
                         help="exclusive terms for short-answer rows without their own, e.g. red,green,blue,yellow")
    answers.add_argument("--suffix", default="", metavar="TEXT",
                         help="text added to every question, e.g. ' Answer yes or no.'")
    answers.add_argument("--max-new-tokens", type=positive_int, default=32, metavar="N",
                         help="longest answer in tokens (default 32; raise it for a Thinking model)")
    answers.add_argument("--max-items", type=positive_int, metavar="N", help="answer only the first N questions")
    answers.add_argument("--base-url", metavar="URL",
                         help="the base model at an OpenAI-compatible endpoint (default: the run's, adapter off)")
    answers.add_argument("--tuned-url", metavar="URL",
                         help="the tuned model at an OpenAI-compatible endpoint (default: the run's, adapter on)")


def run(args: argparse.Namespace) -> int:
    from nbtools.errors import UserError, details_in
    from nbtools.evaluate.run_model import existing_run_folder

    benchmark_only = ("images", "terms", "max_items", "base_url", "tuned_url")
    if not args.benchmark:
        given = [f"--{name.replace('_', '-')}" for name in benchmark_only if getattr(args, name)]
        given += ["--suffix"] * bool(args.suffix) + ["--max-new-tokens"] * (args.max_new_tokens != 32)
        if given:
            raise UserError(f"{', '.join(given)}: only used with --benchmark FILE (fix: add --benchmark, or leave "
                            "them out)")
    elif args.data or args.max_pairs:
        raise UserError("--data/--max-pairs choose preference pairs and --benchmark questions; one evaluation at a "
                        "time (fix: run the command once with each)")
    # user errors (bad folder, data or config) are printed by nbtools.__main__ with exit 2; an internal
    # error's details go to the run folder's error.log
    with details_in(existing_run_folder(args.run_dir)):
        if args.benchmark:
            return _answers(args)
        from nbtools.evaluate import evaluate_run, table_text

        result = evaluate_run(args.run_dir, args.data, batch_size=args.batch_size or 4, max_pairs=args.max_pairs,
                              seed=args.seed, progress=sys.stderr.isatty())
    if args.json:
        print(json.dumps(result.payload, ensure_ascii=False))
    else:
        print(table_text(result.payload))
        for name, path in result.paths.items():
            print(f"{name}: {path}")
    return 0


def _answers(args: argparse.Namespace) -> int:
    """Each benchmark in turn, one model load for all of them (and none when both sides are endpoints)."""
    from nbtools.evaluate import Decoding, evaluate_answers, load_run_model, read_benchmark
    from nbtools.evaluate.answers import answers_table_text
    from nbtools.evaluate.run_model import adapter_dir, load_run_config

    endpoints_only = bool(args.base_url and args.tuned_url)
    load_run_config(args.run_dir)  # not a run folder, a damaged adapter: refused first
    if not endpoints_only:
        adapter_dir(args.run_dir)
    for path in args.benchmark:  # every file checked before a model loads
        read_benchmark(path, args.images, args.terms)
    run = None if endpoints_only else load_run_model(args.run_dir)
    payloads = []
    for path in args.benchmark:
        result = evaluate_answers(args.run_dir, path, run=run, base=args.base_url, tuned=args.tuned_url,
                                  images=args.images, terms=args.terms, suffix=args.suffix,
                                  decoding=Decoding(max_new_tokens=args.max_new_tokens),
                                  batch_size=args.batch_size or 16, max_items=args.max_items, seed=args.seed,
                                  progress=sys.stderr.isatty())
        payloads.append(result.payload)
        if not args.json:
            print(answers_table_text(result.payload))
            for name, written in result.paths.items():
                print(f"{name}: {written}")
    if args.json:
        print(json.dumps(payloads[0] if len(payloads) == 1 else payloads, ensure_ascii=False))
    return 0
