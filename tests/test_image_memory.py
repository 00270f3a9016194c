"""A large image costs its decoded size once per training step, not twice (and a large JPEG far less).

Each measurement runs in a fresh process: the growth of its peak resident memory while
``to_training_example`` opens one 6,000 x 6,000 image (108 MB decoded) under max_pixels=128*128,
as the training collator does for every pair of every batch. Before: decoded, then copied,
then resized — twice the decoded size. ``benchmarks/large_image_memory.py`` does the same for
12,000 x 12,000.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SIDE = 6000
DECODED_MB = SIDE * SIDE * 3 / 2**20

# VmHWM, not getrusage's ru_maxrss: Linux carries the parent's (pytest's) peak into ru_maxrss across exec.
MEASURE = r"""
import json, sys
from nbtools.data import to_training_example
from nbtools.data.records import PreferenceRecord

def peak_kb():
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("VmHWM:")).split()[1])

record = PreferenceRecord(file="x.jsonl", line=1, prompt=[{"role": "user", "content": "<image>Colour?"}],
                          chosen="Red.", rejected="Blue.", images=[sys.argv[1]])
before = peak_kb()
example = to_training_example(record, 128 * 128, "qwen3_vl")
print(json.dumps({"peak_growth_mb": (peak_kb() - before) / 1024, "size": list(example["images"][0].size)}))
"""


def peak_growth_mb(image: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", MEASURE, str(image)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def large_images(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("large")
    picture = Image.linear_gradient("L").resize((SIDE, SIDE))
    picture = Image.merge("RGB", (picture, picture.transpose(Image.Transpose.ROTATE_90), picture))
    picture.save(folder / "large.jpg", quality=85)
    picture.save(folder / "large.png", compress_level=1)
    return folder


@pytest.mark.parametrize("name, at_most", [("large.png", 1.6), ("large.jpg", 0.25)])
def test_a_large_image_is_decoded_at_most_once(large_images, name, at_most):
    measured = peak_growth_mb(large_images / name)
    print(f"\n{name}: peak memory grew {measured['peak_growth_mb']:.0f} MB; decoded size {DECODED_MB:.0f} MB")
    assert measured["size"] == [128, 128]  # the size the processor uses at max_pixels=128*128
    assert measured["peak_growth_mb"] < at_most * DECODED_MB
