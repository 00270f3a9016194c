"""Image-contrast pairs for mDPO's conditional term: the chosen answer with the real images vs with corrupted ones.

For each pair that has images, :func:`auxiliary_example` builds one more pair with the same prompt and
the chosen answer on both sides; only the images of its rejected side differ. They are the row's own
``rejected_images`` when it has them (the data already says which pictures the answer does not fit),
else a **seeded random crop** of each image (mDPO's corruption, Wang et al. 2024, "Crop 0-20%"): a
rectangle keeping 1-20% of the image's area, same aspect ratio, resized back to the original size.

Why resized back: the corrupted image then has exactly as many image tokens as the real one, so the
auxiliary pair is no longer than the pair it comes from (``max_context_length`` checks stay valid).
Why seeded from the content: the crop of a given image in a given run is always the same (every epoch,
every data-loader worker, a resumed run), so its reference log-probs are constants the cache can key.
The numbers come from SHA-256 of (run seed, pair text, image bytes, image index), not from ``random``,
so they do not depend on the Python version or on how many pairs were drawn before.

Auxiliary examples carry :data:`CONTRAST_KEY` (what corrupted them; part of the reference-cache key) and
:data:`AUXILIARY_SOURCE` (the pair they were made from); the batch lists which rows they are under
:data:`AUXILIARY_ROWS`, so that DPO's loss and TRL's metrics cover only the real pairs. When that pair is in
the same batch, the collator lays out only the corrupted side and the row takes its chosen log-prob (the real
images) from the pair's row (:func:`nbtools.packing.layout.lean_auxiliary_sources`); the values are the same
either way, so the reference cache holds (log π_ref(y_w|m,x), log π_ref(y_w|m',x)) for the pair whatever layout
computed them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from typing import Any

from .digest import image_bytes, is_pil_image, parts_digest

# Example key marking an auxiliary image-contrast pair; its value names the corruption (and its seed).
CONTRAST_KEY = "image_contrast"
# Batch key (a layout key, never a model input): True for the rows that are auxiliary pairs.
AUXILIARY_ROWS = "auxiliary_rows"
# Example key: the real pair (the dict itself) an auxiliary pair was made from; lets the collator lay out only
# its corrupted side when that pair is in the same batch (nbtools.packing.layout.lean_auxiliary_sources).
AUXILIARY_SOURCE = "image_contrast_of"
# Share of the image's area a crop keeps (mDPO's "0-20%"; 1% rather than 0 so the crop has pixels).
CROP_KEEP = (0.01, 0.20)
CROP_VERSION = 1  # bump when the crop changes, so cached reference values of old crops miss


def _digest(*parts: bytes | str) -> bytes:
    return parts_digest(*parts).digest()


def _image_digest(image) -> str:
    if is_pil_image(image):
        return hashlib.sha256(image_bytes(image)).hexdigest()
    raise TypeError(f"image-contrast pairs need opened images (PIL), got {type(image).__name__}")


def crop_seed(seed: int, example: dict, index: int) -> bytes:
    """The 32 bytes that decide where image ``index`` of this pair is cropped in a run seeded with ``seed``."""
    text = json.dumps({k: example.get(k) for k in ("prompt", "chosen", "rejected")}, sort_keys=True, default=str)
    return _digest(f"mdpo-crop:v{CROP_VERSION}", str(int(seed)), text, _image_digest(example["images"][index]),
                   str(index))


def _uniform(digest: bytes, slot: int) -> float:
    """A number in [0, 1) from 8 bytes of the digest (slots 0-3)."""
    return int.from_bytes(digest[8 * slot: 8 * slot + 8], "big") / 2.0 ** 64


def crop_box(width: int, height: int, digest: bytes) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a crop keeping CROP_KEEP of the area, with the image's aspect ratio."""
    low, high = CROP_KEEP
    keep = low + (high - low) * _uniform(digest, 0)
    side = math.sqrt(keep)
    crop_w = min(width, max(1, round(width * side)))
    crop_h = min(height, max(1, round(height * side)))
    left = min(width - crop_w, int(_uniform(digest, 1) * (width - crop_w + 1)))
    top = min(height - crop_h, int(_uniform(digest, 2) * (height - crop_h + 1)))
    return left, top, left + crop_w, top + crop_h


def corrupt_image(image, digest: bytes):
    """The seeded crop of ``image``, resized back to its size (same number of image tokens)."""
    from PIL import Image

    box = crop_box(image.width, image.height, digest)
    return image.crop(box).resize(image.size, Image.Resampling.BICUBIC)


def auxiliary_example(example: dict[str, Any], seed: int) -> dict[str, Any] | None:
    """The image-contrast pair of ``example`` (chosen answer on both sides), or None when it has no images.

    Videos (if any) stay the same on both sides: the contrast is between images only.
    """
    images = list(example.get("images") or [])
    if not images:
        return None
    aux = dict(example)
    aux[AUXILIARY_SOURCE] = example
    aux["rejected"] = copy.deepcopy(example["chosen"])
    if example.get("rejected_images"):
        aux[CONTRAST_KEY] = "rejected_images"
    else:
        aux["rejected_images"] = [corrupt_image(image, crop_seed(seed, example, index))
                                  for index, image in enumerate(images)]
        aux[CONTRAST_KEY] = f"crop v{CROP_VERSION} keep {CROP_KEEP[0]}-{CROP_KEEP[1]} seed {int(seed)}"
    return aux


def with_auxiliary(examples: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """``examples`` followed by the image-contrast pair of each one that has images."""
    extra = [aux for aux in (auxiliary_example(example, seed) for example in examples) if aux is not None]
    return list(examples) + extra


def auxiliary_rows(examples: list[dict[str, Any]]):
    """The :data:`AUXILIARY_ROWS` tensor for a batch collated from ``examples`` (one row per example)."""
    import torch

    return torch.tensor([CONTRAST_KEY in example for example in examples], dtype=torch.bool)
