"""``python -m nbtools convert IN OUT``: JSONL (+ pictures) <-> Parquet with embedded pictures.

IN: a JSONL/.json file, or any table source (a Parquet file, a glob or folder of shards, a
``save_to_disk`` folder, a Hub id ``owner/name[:split]``). OUT: ``.parquet`` (pictures embedded, or
referenced with ``--reference``) or ``.jsonl`` (pictures written as files into ``OUT_images/`` or
``--images-dir``). Exit codes: 0 converted, 1 the input had rows with errors (listed, left out,
counted), 2 a usage problem or unreadable input (one line).
"""

from __future__ import annotations

import argparse
import sys


def column_mapping(text: str) -> dict:
    """argparse type: ``prompt=question,image=img,...`` -> a dict (keys checked when the source opens)."""
    mapping = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise argparse.ArgumentTypeError(f"{part!r} is not KEY=COLUMN (e.g. prompt=question)")
        mapping[key.strip()] = value.strip()
    if not mapping:
        raise argparse.ArgumentTypeError("give at least one KEY=COLUMN")
    return mapping


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="IN", help="a .jsonl/.json file, a Parquet file, glob or folder, a "
                                                     "save_to_disk folder or a Hub dataset id")
    parser.add_argument("out", metavar="OUT", help="the .parquet or .jsonl file to write")
    media = parser.add_mutually_exclusive_group()
    media.add_argument("--embed", dest="embed", action="store_true", default=True,
                       help="Parquet output: store picture bytes in the file (default)")
    media.add_argument("--reference", dest="embed", action="store_false",
                       help="Parquet output: store paths to the pictures instead (relative to OUT's folder)")
    parser.add_argument("--images-dir", metavar="DIR",
                        help="JSONL output: folder for the pictures (default: OUT's name + _images, beside OUT)")
    parser.add_argument("--columns", type=column_mapping, metavar="KEY=COLUMN,...",
                        help="which columns hold what, for schemas not recognised on their own; keys: prompt, "
                             "chosen, rejected, image, images, system")
    parser.add_argument("--force", action="store_true", help="replace OUT (and its picture folder) if it exists")
    parser.add_argument("--all", action="store_true", help="list every problem (default: 5 of each kind + a count)")


def run(args: argparse.Namespace) -> int:
    from nbtools.data.convert_files import convert
    from nbtools.problems import summarise_repeats

    result = convert(args.source, args.out, embed=args.embed, images_dir=args.images_dir, force=args.force,
                     columns=args.columns)
    errors = [p for p in result.problems if p.severity == "error"]
    shown, repeats = (result.problems, []) if args.all else summarise_repeats(result.problems)
    for problem in shown:
        print(problem.format(), file=sys.stderr)
    for repeat in repeats:
        print(repeat.format(result.source), file=sys.stderr)
    print(result.summary())
    return 1 if errors or result.left_out else 0
