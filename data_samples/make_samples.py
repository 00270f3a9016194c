"""Regenerates the committed sample data in place: ``python data_samples/make_samples.py``.

Writes data_samples/shapes/ (the image-dependent learning-check task),
data_samples/stripes_video/ and data_samples/stripes_contrast/ (the video and image-contrast
learning-check tasks) and data_samples/showcase/ (the format showcase) from the seeded generators in
``nbtools.samples``. Running it again gives byte-identical files; tests/test_samples.py
checks that the committed copies match.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from nbtools.samples.shapes import write_shapes_task
from nbtools.samples.showcase import write_showcase_set
from nbtools.samples.stripes import write_stripes_contrast_task, write_stripes_video_task

HERE = Path(__file__).resolve().parent
SEED = 0
N_TRAIN = 240
N_VALIDATION = 60
N_STRIPES_TRAIN, N_STRIPES_VALIDATION = 128, 32
SUBSETS = ("shapes", "stripes_video", "stripes_contrast", "showcase")


def regenerate(root: Path = HERE, seed: int = SEED) -> None:
    for name in SUBSETS:
        shutil.rmtree(root / name, ignore_errors=True)  # no stale images from an older layout
    write_shapes_task(root / "shapes", n_train=N_TRAIN, n_val=N_VALIDATION, seed=seed)
    write_stripes_video_task(root / "stripes_video", N_STRIPES_TRAIN, N_STRIPES_VALIDATION, seed=seed)
    write_stripes_contrast_task(root / "stripes_contrast", N_STRIPES_TRAIN, N_STRIPES_VALIDATION, seed=seed)
    write_showcase_set(root / "showcase", seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write the sample sets into")
    parser.add_argument("--seed", type=int, default=SEED, help="seed of every drawing and of the pair order")
    args = parser.parse_args()
    regenerate(args.out, args.seed)
    print("wrote " + ", ".join(str(args.out / name) for name in SUBSETS))


if __name__ == "__main__":
    main()
