"""Opening images and sizing them the way the model's processor will.

Image tokens dominate the sequence length of a VLM pair, so every length check, estimate and
resize in nbtools goes through the arithmetic here. It mirrors the Qwen-VL image processors
(``smart_resize`` in transformers) so that what we predict is what training will see.
"""

from __future__ import annotations

import io
import math
import os
import struct
from dataclasses import dataclass
from typing import Optional, Union

from PIL import Image

from nbtools.errors import UserError
from nbtools.media_ref import is_embedded, media_source


@dataclass(frozen=True)
class ImageGeometry:
    """How a model family cuts an image into tokens."""

    family: str
    patch_size: int  # pixels per side of one vision patch
    merge_size: int  # patches merged per side into one LLM token
    min_pixels: int  # the processor's default lower bound (``size["shortest_edge"]``)
    max_pixels: int  # the processor's default upper bound (``size["longest_edge"]``)

    @property
    def factor(self) -> int:
        """Pixels per side of one image token (both sides are rounded to a multiple of it)."""
        return self.patch_size * self.merge_size


# Defaults as shipped in each family's preprocessor_config.json.
FAMILIES: dict[str, ImageGeometry] = {
    "qwen2_vl": ImageGeometry("qwen2_vl", 14, 2, 56 * 56, 28 * 28 * 1280),
    "qwen2_5_vl": ImageGeometry("qwen2_5_vl", 14, 2, 56 * 56, 28 * 28 * 1280),
    "qwen3_vl": ImageGeometry("qwen3_vl", 16, 2, 65536, 16777216),
}
DEFAULT_FAMILY = "qwen3_vl"
MAX_ASPECT_RATIO = 200  # the Qwen processors refuse anything more elongated
VISION_MARKERS = 2  # <|vision_start|> and <|vision_end|> around each image's (and video's) tokens

_ALIASES = {
    "qwen2-vl": "qwen2_vl",
    "qwen2.5-vl": "qwen2_5_vl",
    "qwen2_5-vl": "qwen2_5_vl",
    "qwen3-vl": "qwen3_vl",
}


def geometry(family: Union[str, ImageGeometry, None] = None) -> ImageGeometry:
    """The :class:`ImageGeometry` of a family name (``qwen2_vl``, ``qwen2.5-vl``, ``qwen3_vl``...)."""
    if isinstance(family, ImageGeometry):
        return family
    key = (family or DEFAULT_FAMILY).lower()
    key = _ALIASES.get(key, key)
    if key not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[key]


def smart_resize(
    height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56, max_pixels: int = 28 * 28 * 1280
) -> tuple[int, int]:
    """Target (height, width) for an image, as the Qwen-VL image processors compute it.

    Both sides become multiples of ``factor``; the area is brought inside
    [min_pixels, max_pixels] keeping the aspect ratio as closely as the rounding allows.
    """
    if min(height, width) <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_ASPECT_RATIO:
        raise ValueError(f"absolute aspect ratio must be smaller than {MAX_ASPECT_RATIO}, got {ratio}")
    new_h = round(height / factor) * factor  # may round to 0: the min_pixels branch then fixes it
    new_w = round(width / factor) * factor
    if new_h * new_w > max_pixels:
        scale = math.sqrt(height * width / max_pixels)
        new_h = max(factor, math.floor(height / scale / factor) * factor)
        new_w = max(factor, math.floor(width / scale / factor) * factor)
    elif new_h * new_w < min_pixels:
        scale = math.sqrt(min_pixels / (height * width))
        new_h = math.ceil(height * scale / factor) * factor
        new_w = math.ceil(width * scale / factor) * factor
    return new_h, new_w


def settle(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[tuple[int, int],
                                                                                          tuple[int, int]]:
    """(size to shrink an image to, size the processor then makes of it), as (height, width) pairs.

    nbtools shrinks an image before the processor sees it, and the processor applies its rule again
    to what it gets; one pass of the rule is not always stable (for a very elongated image the short
    side is held at one token while the long side is cut for the budget, and a second pass cuts it
    again). So the rule is taken again until the processor keeps the size: then both sizes are that
    fixed point and the validator counts what the model sees. Two cases have no such point: a pass
    that makes the shape more elongated than the processor accepts on its input (``MAX_ASPECT_RATIO``)
    gets its long side cut to that ratio; and bounds too close for this shape (``min_pixels`` equal to
    ``max_pixels``, as a cap below the model's minimum leaves them) make the passes cycle, and the size
    handed over is the one whose processed size is the largest within ``max_pixels``.
    """
    size = _within_aspect(smart_resize(height, width, factor, min_pixels, max_pixels))
    seen = [size]
    for _ in range(64):  # each pass shrinks an elongated size by about the square root of its excess
        out = smart_resize(*size, factor, min_pixels, max_pixels)
        if out == size:
            return size, size
        size = _within_aspect(out)
        if size in seen:  # a cycle: no size of this shape is kept
            break
        seen.append(size)

    def area(hw: tuple[int, int]) -> int:
        return hw[0] * hw[1]

    handed = [(c, smart_resize(*c, factor, min_pixels, max_pixels)) for c in seen]
    fitting = [pair for pair in handed if area(pair[1]) <= max_pixels]
    if fitting:
        return max(fitting, key=lambda pair: (area(pair[1]), -area(pair[0])))
    return min(handed, key=lambda pair: (area(pair[1]), area(pair[0])))


def _within_aspect(size: tuple[int, int]) -> tuple[int, int]:
    """``size`` with its long side cut to ``MAX_ASPECT_RATIO`` times the short one (still whole tokens)."""
    h, w = size
    return (h, min(w, MAX_ASPECT_RATIO * h)) if w >= h else (min(h, MAX_ASPECT_RATIO * w), w)


def _bounds(geo: ImageGeometry, max_pixels: Optional[int], min_pixels: Optional[int]) -> tuple[int, int]:
    upper = max_pixels or geo.max_pixels
    return min(min_pixels if min_pixels is not None else geo.min_pixels, upper), upper


def prepared_size(
    height: int, width: int, family: Union[str, ImageGeometry, None] = None, max_pixels: Optional[int] = None,
    min_pixels: Optional[int] = None,
) -> Optional[tuple[int, int]]:
    """(height, width) nbtools shrinks an image over ``max_pixels`` to before the processor sees it
    (see :func:`settle`); None when the image is handed over as it is."""
    if not max_pixels or height * width <= max_pixels:
        return None
    geo = geometry(family)
    return settle(height, width, geo.factor, *_bounds(geo, max_pixels, min_pixels))[0]


def resized_size(
    height: int, width: int, family: Union[str, ImageGeometry, None] = None, max_pixels: Optional[int] = None,
    min_pixels: Optional[int] = None,
) -> tuple[int, int]:
    """(height, width) the processor of ``family`` resizes to, with an optional ``max_pixels`` cap: for an
    image over the cap, what it makes of the size nbtools shrank the image to (:func:`prepared_size`)."""
    geo = geometry(family)
    lower, upper = _bounds(geo, max_pixels, min_pixels)
    if max_pixels and height * width > max_pixels:
        return settle(height, width, geo.factor, lower, upper)[1]
    return smart_resize(height, width, geo.factor, lower, upper)


def image_tokens(
    height: int, width: int, family: Union[str, ImageGeometry, None] = None, max_pixels: Optional[int] = None,
    min_pixels: Optional[int] = None,
) -> int:
    """Image tokens one image of this size becomes (placeholder tokens, without vision start/end):
    what it costs in the prompt is this plus ``VISION_MARKERS`` (:func:`prompt_image_tokens`)."""
    geo = geometry(family)
    new_h, new_w = resized_size(height, width, family, max_pixels, min_pixels)
    return (new_h // geo.factor) * (new_w // geo.factor)


def prompt_image_tokens(
    height: int, width: int, family: Union[str, ImageGeometry, None] = None, max_pixels: Optional[int] = None,
    min_pixels: Optional[int] = None,
) -> int:
    """Tokens one image of this size costs in the prompt: its image tokens and the vision start/end markers
    around them. The figure every count and estimate uses, so that no two places disagree by the markers."""
    return image_tokens(height, width, family, max_pixels, min_pixels) + VISION_MARKERS


def tokens_per_image_label(prompt_tokens: int, markers: int = VISION_MARKERS) -> str:
    """"18 tokens per image (16 image tokens + vision start/end)": what a picture costs in the prompt, said one way
    everywhere. ``markers``: 0 for a family that puts no markers around its image tokens (LLaVA)."""
    if not markers:
        return f"{prompt_tokens:,} tokens per image"
    return f"{prompt_tokens:,} tokens per image ({prompt_tokens - markers:,} image tokens + vision start/end)"


def resize_to_max_pixels(
    img: Image.Image, max_pixels: Optional[int], family: Union[str, ImageGeometry, None] = None
) -> Image.Image:
    """Shrink ``img`` to the size the processor keeps under ``max_pixels`` (:func:`prepared_size`).

    Doing this before training keeps memory predictable; the processor then finds the image
    already at its target size and leaves it as is. ``family`` is best the processor's own
    geometry (:func:`processor_geometry`): its ``min_pixels`` decides what it keeps.
    """
    target = prepared_size(img.height, img.width, family, max_pixels)
    if target is None:
        return img
    new_h, new_w = target
    return img.resize((new_w, new_h), Image.Resampling.BICUBIC)


def is_remote(path: str) -> bool:
    """True for URLs that go through fsspec (``http(s)://``, ``s3://``, ``oss://``...)."""
    return "://" in path and not path.startswith("file://") and not is_embedded(path)


class RemoteBackendMissing(UserError, ImportError):
    """The fsspec backend for a URL scheme is not installed; the message names the package."""


# What opening a picture raises when the picture (or where it lives) is the problem, not nbtools: PIL's
# UnidentifiedImageError and truncated data (OSError), parse errors (SyntaxError, EOFError, struct.error),
# a decompression bomb, a missing file or remote store (OSError), a missing fsspec backend. A view that
# shows a placeholder instead catches exactly these; anything else is a bug and propagates.
IMAGE_DECODE_ERRORS: tuple[type[BaseException], ...] = (OSError, SyntaxError, EOFError, struct.error,
                                                        Image.DecompressionBombError, RemoteBackendMissing)


_PACKAGE_FOR = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "oss": "ossfs", "az": "adlfs",
                "abfs": "adlfs", "http": "aiohttp requests", "https": "aiohttp requests", "hf": "huggingface_hub",
                "sftp": "paramiko"}


# fsspec knows many more protocols, but only these hold files a path can name on its own:
# ``zip://``/``tar://``/``reference://``/``dir://`` wrap another filesystem, ``github://`` needs
# arguments a media path cannot carry, and so on.
FILE_STORES = ("http", "https", "s3", "s3a", "gs", "gcs", "oss", "az", "abfs", "abfss", "adl", "hf", "memory",
               "ftp", "sftp", "webhdfs", "hdfs", "smb", "webdav")


class UnsupportedURL(UserError, ValueError):
    """A URL whose scheme is not a file store media can be read from."""


def remote_filesystem(url: str):
    """The fsspec filesystem for ``url``; :class:`RemoteBackendMissing` names what to pip install,
    :class:`UnsupportedURL` says when the scheme is not a file store at all."""
    import fsspec

    protocol = url.split("://", 1)[0].lower()
    if protocol not in FILE_STORES:
        raise UnsupportedURL(f"{protocol}:// is not a file store nbtools reads media from "
                             f"(use a local path or one of {', '.join(p + '://' for p in FILE_STORES[:8])}…)")
    if protocol == "hf" and os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise OSError("hf:// paths cannot be read with HF_HUB_OFFLINE set (unset it, or use local copies)")
    try:
        if protocol in ("ftp", "sftp", "smb", "webhdfs", "hdfs"):  # the host is part of the URL
            return fsspec.core.url_to_fs(url)[0]
        return fsspec.filesystem(protocol)
    except (ImportError, ValueError) as exc:
        package = _PACKAGE_FOR.get(protocol, f"the fsspec backend for {protocol}://")
        raise RemoteBackendMissing(
            f"reading {protocol}:// paths needs the fsspec backend ({exc}); install it with: pip install {package}"
        ) from None


def image_data_uri(image: Image.Image, max_side: int, fmt: str = "PNG", **save_options) -> str:
    """A downsized RGB copy of ``image`` as a data: URI, so saved notebooks and HTML pages keep showing it."""
    import base64

    thumb = image.copy()
    thumb.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    thumb.convert("RGB").save(buffer, format=fmt, **save_options)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def open_image(path_or_url: Union[str, os.PathLike], mode: str = "RGB") -> Image.Image:
    """Open a local path (``~`` expanded) or a remote URL via fsspec, fully loaded, in ``mode``."""
    path = os.fspath(path_or_url)
    if is_remote(path):
        with remote_filesystem(path).open(path, "rb") as handle:
            img = Image.open(io.BytesIO(handle.read()))
            img.load()
        return img.convert(mode) if mode and img.mode != mode else img
    with Image.open(media_source(path)) as src:
        src.load()
        return src.convert(mode) if mode and src.mode != mode else src.copy()


def open_resized(path_or_url: Union[str, os.PathLike], max_pixels: Optional[int],
                 family: Union[str, ImageGeometry, None] = None, mode: str = "RGB") -> Image.Image:
    """``resize_to_max_pixels(open_image(path), ...)`` without ever holding two full-size copies.

    Training opens every image of every batch, every epoch: a 12,000 x 12,000 photo decoded in
    full and then copied cost twice its 432 MB per step. Here a JPEG is decoded directly at a
    reduced scale (1/2, 1/4 or 1/8 by the JPEG decoder, ``Image.draft``, keeping at least twice the
    target size), and other formats are decoded once and resized from that one copy. The result
    has exactly the size the processor will use; for formats other than JPEG the pixels are the
    same as a full decode gives, for a large JPEG they differ by the decoder's scaling.
    """
    path = os.fspath(path_or_url)
    if is_remote(path):
        with remote_filesystem(path).open(path, "rb") as handle:
            source = io.BytesIO(handle.read())
    else:
        source = media_source(path)  # a local file, or the bytes of a picture embedded in the data
    with Image.open(source) as src:
        target = None
        size = prepared_size(src.height, src.width, family, max_pixels)
        if size is not None:
            new_h, new_w = size
            target = (new_w, new_h)
            if src.format == "JPEG":  # at least twice the target, as PIL's own thumbnail() does (reducing_gap=2):
                src.draft(mode, (2 * new_w, 2 * new_h))  # the final bicubic step still smooths
        src.load()
        if target is None:
            return src.convert(mode) if mode and src.mode != mode else src.copy()
        if src.mode in (mode, "L"):  # per-channel resampling: resizing before converting gives the same pixels
            small = src.resize(target, Image.Resampling.BICUBIC)
            return small.convert(mode) if mode and small.mode != mode else small
        return src.convert(mode).resize(target, Image.Resampling.BICUBIC)


def processor_geometry(processor, family: Optional[str] = None) -> ImageGeometry:
    """Image geometry read from a loaded processor (patch/merge size and its current pixel bounds)."""
    ip = getattr(processor, "image_processor", processor)
    base = geometry(family) if family else None
    patch = getattr(ip, "patch_size", None) or (base.patch_size if base else 14)
    merge = getattr(ip, "merge_size", None) or (base.merge_size if base else 2)
    size = getattr(ip, "size", None)
    def get(key, default):
        if size is None:
            return default
        value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
        return value or default
    lower = get("shortest_edge", base.min_pixels if base else 56 * 56)
    upper = get("longest_edge", base.max_pixels if base else 28 * 28 * 1280)
    name = family or ("qwen3_vl" if patch == 16 else "qwen2_vl")
    return ImageGeometry(name, int(patch), int(merge), int(lower), int(upper))


def resize_geometry(processor, family: Optional[str] = None) -> Optional[ImageGeometry]:
    """The geometry to shrink images with before ``processor`` sees them: its own bounds (a checkpoint's
    ``min_pixels`` may differ from the family's default), so the size chosen is one it keeps; None
    for a processor that does not resize dynamically (LLaVA), whose family has no geometry here."""
    try:
        return processor_geometry(processor, family)
    except ValueError:
        return None
