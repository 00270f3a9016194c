"""``python -m nbtools validate FILE``: check a preference dataset before training.

Exit codes: 0 no errors (warnings allowed), 1 errors found (with ``--strict`` warnings
count too), 2 usage error or unreadable file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from nbtools.cli import positive_float, positive_int
from nbtools.video import VideoSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="DATA",
                        help="the preference pairs: a .jsonl (or .json) file, a .parquet file, a glob or folder of "
                             "Parquet shards, a datasets save_to_disk folder, or a Hub dataset id (owner/name)")
    parser.add_argument("--columns", metavar="PART=COLUMN", nargs="+",
                        help="for Parquet/Arrow data in another schema: which column holds each part of a pair, "
                             "e.g. --columns prompt=question image=img chosen=good rejected=bad")
    parser.add_argument("--max-pixels", type=positive_int, metavar="N",
                        help="cap on height x width per image; larger images are resized (as in training)")
    parser.add_argument("--max-context-length", type=positive_int, metavar="N",
                        help="longest prompt + answer in tokens, image tokens included")
    parser.add_argument("--model", metavar="NAME_OR_PATH",
                        help="count tokens with this model's tokenizer and image geometry (else: an estimate)")
    parser.add_argument("--root", metavar="DIR", help="every image/video must lie inside this folder")
    parser.add_argument("--deep", action="store_true", help="fully decode every image (slower)")
    parser.add_argument("--strict", action="store_true", help="warnings count as errors for the exit code")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    parser.add_argument("--all", action="store_true",
                        help="list every problem (by default a finding repeated on many lines shows its first "
                             "5 lines and a count)")
    parser.add_argument("--validation-file", metavar="FILE", help="check train/validation leakage against it")
    parser.add_argument("--held-out", action="store_true",
                        help="DATA is a validation or evaluation file: its pairs are scored, not trained on, so "
                             "the advice on how many pairs training needs is left out")
    parser.add_argument("--family", choices=["qwen2_vl", "qwen2_5_vl", "qwen3_vl"],
                        help="image geometry when no --model is given (default qwen3_vl)")
    video = VideoSettings()
    parser.add_argument("--fps", type=positive_float, metavar="F", default=video.fps,
                        help=f"video frames sampled per second of the video's own time (default {video.fps:g})")
    parser.add_argument("--max-frames", type=positive_int, metavar="N", default=video.max_frames,
                        help=f"most frames taken from one video, spread over it (default {video.max_frames})")
    parser.add_argument("--video-max-pixels", type=positive_int, metavar="N", default=video.video_max_pixels,
                        help=f"cap on height x width per video frame (default {video.video_max_pixels})")


def run(args: argparse.Namespace) -> int:
    from nbtools.data.load import UnreadableFile
    from nbtools.data.validate import validate_dataset

    try:
        report = validate_dataset(
            args.file, max_pixels=args.max_pixels, max_context_length=args.max_context_length, model=args.model,
            root=args.root, deep=args.deep, validation_file=args.validation_file, held_out=args.held_out,
            family=getattr(args, "family", None), progress=True,  # on stderr, for big files only
            video=_video_settings(args), columns=" ".join(args.columns) if getattr(args, "columns", None) else None,
        )
    except UnreadableFile as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        _print_report(report, args)
    except BrokenPipeError:  # `validate FILE | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
    return 1 if report.has_errors(strict=args.strict) else 0


def _video_settings(args: argparse.Namespace) -> VideoSettings:
    default = VideoSettings()
    return VideoSettings(float(getattr(args, "fps", None) or default.fps),
                         int(getattr(args, "max_frames", None) or default.max_frames),
                         int(getattr(args, "video_max_pixels", None) or default.video_max_pixels))


def _print_report(report, args: argparse.Namespace) -> None:
    every = getattr(args, "all", False)
    if args.json:
        print(json.dumps(report.to_dict(all_problems=every), ensure_ascii=False))
    else:
        shown, repeats = report.summarised(all_problems=every)
        out = sys.stdout
        for problem in shown:
            out.write(problem.format() + "\n")  # FILE:LINE: SEVERITY: FIELD: MESSAGE (fix: FIX)
        for repeat in repeats:
            out.write(repeat.format(report.file) + "\n")
        print(report.summary())
        if report.schema:
            print(f"schema: {report.schema}" + (f"; {report.disk_note}" if report.disk_note else ""))
        print(f"tokens: {report.stats.get('token_counting')}")
    sys.stdout.flush()
