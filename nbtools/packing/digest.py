"""Hashing for cache keys and seeds: several parts with separators, and an image's bytes."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any


def parts_digest(*parts: bytes | str):
    """A sha256 object over ``parts`` (str encoded as UTF-8), each followed by a NUL separator,
    so ("ab", "c") and ("a", "bc") differ."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest


def is_pil_image(image: Any) -> bool:
    return hasattr(image, "tobytes") and hasattr(image, "mode")


def image_bytes(image: Any) -> bytes:
    """What identifies an image: a file's bytes, a ``datasets`` image's bytes, a PIL image's decoded
    pixels (with its mode and size), or anything else as torch serialises it."""
    if image is None:
        return b"none"
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        return Path(image).read_bytes()
    if isinstance(image, dict):  # datasets.Image feature: {"bytes": ..., "path": ...}
        if image.get("bytes") is not None:
            return image["bytes"]
        return Path(image["path"]).read_bytes()
    if is_pil_image(image):  # decoded pixels
        return f"{image.mode}:{image.size}".encode() + image.tobytes()
    import torch

    buffer = io.BytesIO()
    torch.save(image, buffer)
    return buffer.getvalue()
