"""The shared drawing primitives of the sample sets: a light textured background, one filled shape on it,
and PNG bytes that are equal whenever the pixels are (no metadata, fixed compression)."""

from __future__ import annotations

import io
import math
import random
from typing import Sequence

from PIL import Image, ImageDraw

COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

# Saturated and far apart in hue, so that colour is unmistakable against the grey background.
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (214, 39, 40),
    "green": (40, 160, 60),
    "blue": (31, 90, 205),
    "yellow": (240, 200, 20),
}

IMAGE_SIZE = (128, 128)

# Fixed PNG parameters: no metadata chunks (PIL writes none unless asked), fixed compression.
_PNG_OPTIONS = {"format": "PNG", "optimize": False, "compress_level": 9}


def check_choice(value: str, allowed: Sequence[str], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; choose one of: {', '.join(allowed)}")


def _jitter(rgb: Sequence[int], rng: random.Random, amount: int) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in rgb)  # type: ignore[return-value]


def textured_background(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """A light, nearly neutral background with soft blotches.

    The texture is a coarse random grid upsampled smoothly: it varies the pixels (so the
    model cannot key on one exact background value) while staying grey, and it compresses
    far better than per-pixel noise, which keeps the committed PNGs small.
    """
    base = rng.randint(212, 238)
    tint = [rng.randint(-6, 6) for _ in range(3)]
    grid_w, grid_h = 6, 6
    grid = Image.new("RGB", (grid_w, grid_h))
    for y in range(grid_h):
        for x in range(grid_w):
            delta = rng.randint(-12, 12)  # same delta on all channels: lighter/darker, not coloured
            grid.putpixel((x, y), tuple(max(0, min(255, base + t + delta)) for t in tint))
    return grid.resize(size, Image.Resampling.BILINEAR)


def _polygon(cx: float, cy: float, radius: float, corners: int, angle_deg: float) -> list[tuple[float, float]]:
    start = math.radians(angle_deg)
    return [
        (cx + radius * math.cos(start + 2 * math.pi * k / corners), cy + radius * math.sin(start + 2 * math.pi * k / corners))
        for k in range(corners)
    ]


def _shape_outline(shape: str, cx: float, cy: float, radius: float, angle: float):
    """Returns (kind, geometry) for ImageDraw: an ellipse box or polygon points."""
    if shape == "circle":
        return "ellipse", [cx - radius, cy - radius, cx + radius, cy + radius]
    corners = 4 if shape == "square" else 3
    return "polygon", _polygon(cx, cy, radius, corners, angle)


def draw_shape_on(
    image: Image.Image, colour: str, shape: str, rng: random.Random, box: tuple[int, int, int, int] | None = None
) -> None:
    """Draws one filled shape, with a soft shadow, at a random place and scale inside ``box``."""
    check_choice(colour, COLOURS, "colour")
    check_choice(shape, SHAPES, "shape")
    left, top, right, bottom = box or (0, 0, image.width, image.height)
    short = min(right - left, bottom - top)
    radius = rng.uniform(0.17, 0.34) * short  # circumradius; shapes stay clearly visible
    margin = radius + 3
    cx = rng.uniform(left + margin, right - margin)
    cy = rng.uniform(top + margin, bottom - margin)
    # Squares stay near axis-aligned (a 45° square reads as a diamond); triangles turn freely.
    angle = 45 + rng.uniform(-20, 20) if shape == "square" else rng.uniform(0, 360)
    fill = _jitter(COLOUR_RGB[colour], rng, 12)
    outline = tuple(int(c * 0.72) for c in fill)
    draw = ImageDraw.Draw(image)

    shadow_kind, shadow = _shape_outline(shape, cx + 2.5, cy + 2.5, radius, angle)
    background_grey = image.getpixel((int(cx), int(cy)))
    shadow_fill = tuple(max(0, c - 28) for c in background_grey)  # darker grey, never a colour
    getattr(draw, shadow_kind)(shadow, fill=shadow_fill)

    kind, geometry = _shape_outline(shape, cx, cy, radius, angle)
    getattr(draw, kind)(geometry, fill=fill, outline=outline, width=2)


def draw_shape(colour: str, shape: str, rng: random.Random, size: tuple[int, int] = IMAGE_SIZE) -> Image.Image:
    """One filled ``colour`` ``shape`` at a random position and scale on a light textured background.

    Nothing else in the picture carries a strong colour, so the colour is a global cue.
    The same ``rng`` state always gives the same pixels.
    """
    image = textured_background(rng, size)
    draw_shape_on(image, colour, shape, rng)
    return image


def png_bytes(image: Image.Image) -> bytes:
    """PNG encoding with fixed parameters and no metadata: equal pixels give equal bytes."""
    buffer = io.BytesIO()
    image.save(buffer, **_PNG_OPTIONS)
    return buffer.getvalue()
