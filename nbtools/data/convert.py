"""Records -> the examples TRL's vision preference collator expects.

Prompt messages get structured content with an ``{"type": "image"}`` block exactly where
each ``<image>`` tag was; TRL's ``prepare_multimodal_messages`` fills those unfilled blocks
from ``images`` in order. Images are opened and resized to ``max_pixels`` here so memory
use is predictable and matches what validation predicted.
"""

from __future__ import annotations

import re
from typing import Optional

from nbtools.data.records import IMAGE_TAG, PreferenceRecord
from nbtools.errors import UserError
from nbtools.images import open_resized

_TAG_SPLIT = re.compile(f"({re.escape(IMAGE_TAG)})")


class UnsupportedForTraining(UserError, ValueError):
    """A valid row that training cannot use yet (videos, rejected_images)."""


def structured_content(text: str) -> list[dict]:
    """"<image>What is this?" -> [{"type": "image"}, {"type": "text", "text": "What is this?"}]."""
    blocks = []
    for piece in _TAG_SPLIT.split(text):
        if piece == IMAGE_TAG:
            blocks.append({"type": "image"})
        elif piece:
            blocks.append({"type": "text", "text": piece})
    return blocks or [{"type": "text", "text": ""}]


def check_trainable(record: PreferenceRecord) -> None:
    """Raise :class:`UnsupportedForTraining` for rows using inputs training does not support yet."""
    used = [name for name, present in (("videos", record.videos), ("rejected_images", record.rejected_images))
            if present]
    if used:
        raise UnsupportedForTraining(
            f"{record.file}:{record.line}: this pair uses {' and '.join(used)}, which training does not support "
            "yet (they are validated only); remove the pair or its "
            f"{' / '.join(used)} from the training file")


def to_training_example(record: PreferenceRecord, max_pixels: Optional[int] = None, family: str = "qwen3_vl",
                        load_images: bool = True, check: bool = True) -> dict:
    """One record as TRL's conversational vision preference example.

    ``{"prompt": [...structured messages...], "chosen": [assistant], "rejected": [assistant],
    "images": [PIL RGB images, resized to max_pixels]}``. ``load_images=False`` returns the
    paths instead (for building a dataset lazily); ``check=False`` skips the refusal of
    videos/rejected_images (for token counting only).
    """
    if check:
        check_trainable(record)
    prompt = [{"role": m["role"], "content": structured_content(m["content"]) if m["role"] == "user"
               else [{"type": "text", "text": m["content"]}]} for m in record.prompt]
    example = {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": [{"type": "text", "text": record.chosen}]}],
        "rejected": [{"role": "assistant", "content": [{"type": "text", "text": record.rejected}]}],
    }
    if load_images:
        example["images"] = [open_resized(p, max_pixels, family) for p in record.images]
    else:
        example["images"] = list(record.images)
    return example


def to_training_examples(records: list[PreferenceRecord], max_pixels: Optional[int] = None,
                         family: str = "qwen3_vl") -> list[dict]:
    return [to_training_example(r, max_pixels, family) for r in records]
