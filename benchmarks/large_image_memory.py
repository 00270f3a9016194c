"""Peak memory of opening one very large image the way the training collator does, before and after.

Writes a 12,000 x 12,000 picture (432 MB decoded) as JPEG and as PNG, then measures in a fresh
process each the growth of peak resident memory (VmHWM) while one image is opened and resized
to ``max_pixels`` — with the previous code path (``open_image`` decodes in full and copies, then
``resize_to_max_pixels``) and with ``open_resized`` (what ``to_training_example`` uses now).
Prints MB and the ratio new / previous (below 1.0 is a saving). About 30 s and 1.5 GB on 2 cores.

    python benchmarks/large_image_memory.py [--side 12000] [--max-pixels 401408] [--out FILE]

``--out`` writes the figures as JSON (committed: ``benchmarks/results/large_image_memory.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

MEASURE = r"""
import json, sys, time
from nbtools.images import open_image, open_resized, resize_to_max_pixels

def peak_kb():
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("VmHWM:")).split()[1])

path, way, max_pixels = sys.argv[1], sys.argv[2], int(sys.argv[3])
before, t0 = peak_kb(), time.perf_counter()
if way == "previous":
    image = resize_to_max_pixels(open_image(path), max_pixels, "qwen3_vl")
else:
    image = open_resized(path, max_pixels, "qwen3_vl")
print(json.dumps({"mb": (peak_kb() - before) / 1024, "s": time.perf_counter() - t0, "size": image.size}))
"""


def measure(path: Path, way: str, max_pixels: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", MEASURE, str(path), way, str(max_pixels)], capture_output=True,
                          text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=12_000)
    parser.add_argument("--max-pixels", type=int, default=401_408)
    parser.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    result = {"side": args.side, "max_pixels": args.max_pixels, "cpus": os.cpu_count(), "formats": {}}
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # 144 Mpx is over PIL's warning threshold; this is a real photo size
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        gradient = Image.linear_gradient("L").resize((args.side, args.side))
        picture = Image.merge("RGB", (gradient, gradient.transpose(Image.Transpose.ROTATE_90), gradient))
        del gradient
        paths = {"JPEG": Path(folder) / "large.jpg", "PNG": Path(folder) / "large.png"}
        picture.save(paths["JPEG"], quality=90)
        picture.save(paths["PNG"], compress_level=1)
        del picture
        decoded = args.side * args.side * 3 / 2**20
        print(f"{args.side}x{args.side} image ({decoded:.0f} MB decoded), max_pixels={args.max_pixels}; "
              f"written in {time.perf_counter() - t0:.1f} s")
        for fmt, path in paths.items():
            previous, now = measure(path, "previous", args.max_pixels), measure(path, "now", args.max_pixels)
            assert previous["size"] == now["size"]
            result["formats"][fmt] = {"previous": previous, "now": now}
            print(f"{fmt:4s}  previous {previous['mb']:6.0f} MB {previous['s']:5.2f} s   now {now['mb']:6.0f} MB "
                  f"{now['s']:5.2f} s   memory ratio {now['mb'] / previous['mb']:.2f}   -> {now['size'][0]}x"
                  f"{now['size'][1]}")
    if args.out:
        sys.path.insert(0, str(REPO))
        from nbtools import atomic

        atomic.write_text(args.out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
