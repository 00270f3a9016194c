"""Corrupted inputs: the same prompt on an image that no longer shows the answer.

The model's answer to a blanked, cropped, noised or swapped image is what it says when it
does not see the evidence, which makes a natural rejected answer (POVID, mDPO). Corruptions
are seeded per image, saved as PNGs under ``OUTPUT/corrupted/`` and named by the source
image's digest, so reruns reuse them and the sample store keys them like any other image.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Sequence

from PIL import Image

CORRUPTED_DIR = "corrupted"


def _rng(seed: int, digest: str, kind: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(f"{seed}:{digest}:{kind}".encode()).digest()[:8], "big"))


def corrupt(image: Image.Image, kind: str, rng: random.Random, other: Image.Image | None = None) -> Image.Image:
    """``blank`` (flat grey), ``crop`` (a quarter-size corner, scaled back up), ``noise`` (mostly noise)
    or ``swap`` (``other`` resized to this image's size)."""
    image = image.convert("RGB")
    width, height = image.size
    if kind == "blank":
        return Image.new("RGB", image.size, (128, 128, 128))
    if kind == "crop":
        cw, ch = max(1, width // 4), max(1, height // 4)
        left = rng.choice([0, width - cw])
        top = rng.choice([0, height - ch])
        return image.crop((left, top, left + cw, top + ch)).resize(image.size, Image.Resampling.BILINEAR)
    if kind == "noise":
        noise = Image.frombytes("RGB", image.size, bytes(rng.getrandbits(8) for _ in range(width * height * 3)))
        return Image.blend(image, noise, 0.8)
    if kind == "swap":
        if other is None:
            raise ValueError("swap needs another image")
        return other.convert("RGB").resize(image.size, Image.Resampling.BILINEAR)
    raise ValueError(f"unknown corruption {kind!r}; choose blank, crop, noise or swap")


def corrupted_paths(images: Sequence[str], digests: Sequence[str], kind: str, out_dir, seed: int,
                    pool: Sequence[tuple[str, str]] = ()) -> list[str]:
    """Corrupt each image (once: an existing file is reused) and return the saved paths.

    ``pool``: (path, digest) of all input images, for ``swap`` (another image, never the same picture).
    """
    from nbtools.images import open_image

    folder = Path(out_dir) / CORRUPTED_DIR
    folder.mkdir(parents=True, exist_ok=True)
    saved = []
    for path, digest in zip(images, digests):
        target = folder / f"{digest[:24]}-{kind}-{seed}.png"
        if not target.exists():
            rng = _rng(seed, digest, kind)
            other = None
            if kind == "swap":
                candidates = [p for p, d in pool if d != digest]
                if not candidates:
                    from .inputs import PrepareInputError

                    raise PrepareInputError("corruption: swap needs at least two different images among the inputs "
                                            "(fix: add images, or use blank, crop or noise)")
                other = open_image(rng.choice(sorted(candidates)))
            picture = corrupt(open_image(path), kind, rng, other)
            temporary = target.with_name(target.name + ".tmp")
            picture.save(temporary, format="PNG")
            temporary.replace(target)
        saved.append(str(target))
    return saved
