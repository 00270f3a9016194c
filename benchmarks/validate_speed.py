"""How long does validation of a large dataset take (without --deep)?

Generates 100,000 JSONL lines referencing 10,000 distinct 640x480 JPEGs in a temporary
folder, then times ``validate_dataset``. Goal: under 60 s on 2 CPU cores. The result is
printed as seconds and as a ratio to the goal (below 1.0 meets it).

    python benchmarks/validate_speed.py [--rows 100000] [--images 10000] [--keep DIR] [--out FILE]

``--out`` writes the figures as JSON (committed: ``benchmarks/results/validate_speed.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

GOAL_SECONDS = 60.0


def make_images(folder: str, count: int) -> list[str]:
    from PIL import Image

    def one(i: int) -> str:
        name = f"img_{i:05d}.jpg"
        rng = random.Random(i)
        Image.new("RGB", (640, 480), (rng.randrange(256), rng.randrange(256), rng.randrange(256))).save(
            os.path.join(folder, name), quality=85)
        return name

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(count)))


def make_jsonl(path: str, images: list[str], rows: int) -> None:
    rng = random.Random(0)
    colours = ["red", "green", "blue", "yellow", "purple", "orange"]
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(rows):
            chosen, rejected = rng.sample(colours, 2)
            two = i % 10 == 0
            picked = rng.sample(images, 2) if two else [rng.choice(images)]
            prompt = ("<image><image>Are these the same colour?" if two else "<image>What colour is the shape?")
            row = {"messages": [{"role": "user", "content": prompt + f" (#{i})"},
                                {"role": "assistant", "content": f"It is {chosen}."}],
                   "images": picked, "rejected_response": f"It is {rejected}."}
            handle.write(json.dumps(row) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--max-context-length", type=int, default=2048)
    parser.add_argument("--keep", help="build the data in this folder and keep it (reused if present)")
    parser.add_argument("--out", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    folder = args.keep or tempfile.mkdtemp(prefix="nbtools-bench-")
    os.makedirs(folder, exist_ok=True)
    data = os.path.join(folder, "train.jsonl")
    try:
        if not os.path.exists(data):
            start = time.perf_counter()
            images = make_images(folder, args.images)
            make_jsonl(data, images, args.rows)
            print(f"generated {args.rows:,} rows / {args.images:,} images in {time.perf_counter() - start:.1f} s")
        from nbtools.data import validate_dataset

        start = time.perf_counter()
        report = validate_dataset(data, max_context_length=args.max_context_length, max_pixels=401_408)
        seconds = time.perf_counter() - start
        print(report.summary())
        print(f"validate (no --deep): {seconds:.1f} s for {report.rows:,} rows, "
              f"{len(report.media):,} distinct images on {os.cpu_count()} CPUs; "
              f"ratio to the {GOAL_SECONDS:.0f} s goal: {seconds / GOAL_SECONDS:.2f}")
        if args.out:
            from nbtools import atomic

            atomic.write_text(args.out, json.dumps({
                "rows": report.rows, "valid": report.valid, "distinct_images": len(report.media),
                "seconds": round(seconds, 2), "goal_seconds": GOAL_SECONDS, "cpus": os.cpu_count(),
                "deep": False}, indent=2) + "\n")
        return 0 if report.valid == report.rows else 1
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
