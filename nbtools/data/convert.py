"""Records -> the examples TRL's vision preference collator expects.

Prompt messages get structured content with an ``{"type": "image"}`` block exactly where
each ``<image>`` tag was; TRL's ``prepare_multimodal_messages`` fills those unfilled blocks
from ``images`` in order. Images are opened and resized to ``max_pixels`` here so memory
use is predictable and matches what validation predicted.
"""

from __future__ import annotations

import re
from typing import Optional

from nbtools.data.records import IMAGE_TAG, VIDEO_TAG, PreferenceRecord
from nbtools.errors import UserError
from nbtools.images import ImageGeometry, open_resized
from nbtools.video import VideoSettings, load_clip


class MediaReadError(UserError, OSError):
    """A picture that validation read cannot be read now (replaced, truncated or removed since)."""


def _open_picture(record: PreferenceRecord, field: str, index: int, path, max_pixels, family):
    """``open_resized`` with the row, field and file named when the picture changed under a running job."""
    from PIL import Image

    try:
        return open_resized(path, max_pixels, family)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, UserError):
            raise
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        where = f"{record.file}: row {record.row}" if record.row is not None else f"{record.file}: line {record.line}"
        raise MediaReadError(f"{where}: {field}[{index}]: {path}: cannot be read now ({reason}); it was readable when "
                             "the data was checked, so it changed or was removed since (fix: restore the file, then "
                             "run again; a training run continues with resume)") from None


_TAG_SPLIT = re.compile(f"({re.escape(IMAGE_TAG)}|{re.escape(VIDEO_TAG)})")


def structured_content(text: str) -> list[dict]:
    """"<image>What is this?" -> [{"type": "image"}, {"type": "text", "text": "What is this?"}]
    (``<video>`` becomes ``{"type": "video"}`` the same way)."""
    blocks = []
    for piece in _TAG_SPLIT.split(text):
        if piece == IMAGE_TAG:
            blocks.append({"type": "image"})
        elif piece == VIDEO_TAG:
            blocks.append({"type": "video"})
        elif piece:
            blocks.append({"type": "text", "text": piece})
    return blocks or [{"type": "text", "text": ""}]


def to_training_example(record: PreferenceRecord, max_pixels: Optional[int] = None, family: str = "qwen3_vl",
                        load_images: bool = True, video: Optional[VideoSettings] = None,
                        image_geometry: Optional[ImageGeometry] = None) -> dict:
    """One record as a conversational vision preference example.

    ``{"prompt": [...structured messages...], "chosen": [assistant], "rejected": [assistant],
    "images": [PIL RGB images, resized to max_pixels], "videos": [Clip, ...]}`` plus, when the row
    has them, ``"rejected_images"``: the images the rejected sequence sees in place of ``images``
    (same number, same ``<image>`` positions). Without videos ``"videos"`` is absent and without
    ``rejected_images`` that key is absent, so image-only examples stay exactly TRL's shape.
    ``load_images=False`` returns paths instead of pixels and frames (for building a dataset lazily
    and for token counting). ``image_geometry``: the processor's (``nbtools.images.resize_geometry``),
    so images are shrunk to a size it keeps; the family's defaults when None.
    """
    prompt = [{"role": m["role"], "content": structured_content(m["content"]) if m["role"] == "user"
               else [{"type": "text", "text": m["content"]}]} for m in record.prompt]
    example = {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": [{"type": "text", "text": record.chosen}]}],
        "rejected": [{"role": "assistant", "content": [{"type": "text", "text": record.rejected}]}],
    }
    if load_images:
        geo = image_geometry or family
        example["images"] = [_open_picture(record, "images", i, p, max_pixels, geo)
                             for i, p in enumerate(record.images)]
        if record.rejected_images:
            example["rejected_images"] = [_open_picture(record, "rejected_images", i, p, max_pixels, geo)
                                          for i, p in enumerate(record.rejected_images)]
        if record.videos:
            settings = video or VideoSettings()
            example["videos"] = [load_clip(p, settings, family) for p in record.videos]
    else:
        example["images"] = list(record.images)
        if record.rejected_images:
            example["rejected_images"] = list(record.rejected_images)
        if record.videos:
            example["videos"] = list(record.videos)
    return example
