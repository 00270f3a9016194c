"""Seeded generators for the bundled sample data (``data_samples/``).

Three kinds of sets come from here:

* the **shapes task** — "what colour is the shape?" pairs whose chosen answer names the
  right colour and whose rejected answer names a wrong one. Colour is a *global* cue (one
  filled shape on a light, neutral background) that the warm-started tiny model's trained
  vision tower reads (a random frozen tower does not), and the set is balanced so that a
  model ignoring the image cannot beat chance. Learning checks and the warm start use it.
* the **stripes tasks** — "which way do the stripes run?" on short clips (the video task) and
  on pictures (the image-contrast task: training pairs whose rejected side sees the same
  stripes turned, with the same answer text). Stripe orientation is a texture cue the random
  built-in ``tiny-qwen3-vl`` can learn, so learning checks need no warm-started model.
* the **showcase set** — a handful of real-looking pairs (charts, scenes, a receipt, text-only
  chats, multi-turn histories, a system message, an image with a video) that exercise every
  shape the data format takes.

Everything is drawn with PIL from ``random.Random`` streams seeded by strings (hashed with
SHA-512, so independent of ``PYTHONHASHSEED``) and written as PNGs without metadata, so the
same seed gives byte-identical files; clips are FFV1 (lossless) in AVI, encoded on one thread
with the muxer's bit-exact flag, so they are byte-identical too. ``data_samples/make_samples.py``
regenerates the committed copies.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from PIL import Image, ImageDraw, ImageFont

COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

# Saturated and far apart in hue, so that colour is unmistakable against the grey background.
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (214, 39, 40),
    "green": (40, 160, 60),
    "blue": (31, 90, 205),
    "yellow": (240, 200, 20),
}

# Question phrasings and answer templates. The answer template is shared by chosen and
# rejected within a pair, so the two answers differ only in the colour word.
SHAPE_QUESTIONS: tuple[str, ...] = (
    "What colour is the shape?",
    "Describe the shape in the picture.",
    "Which colour does the object have?",
    "What do you see in this image?",
)
SHAPE_ANSWERS: tuple[str, ...] = (
    "It is a {colour} {shape}.",
    "The picture shows a {colour} {shape}.",
    "A {colour} {shape} on a light background.",
    "I can see a {colour} {shape}.",
)

# The colour each colour is mistaken for: a shapes pair rejects the true colour's partner.
CONFUSABLE_COLOURS: dict[str, str] = {"red": "green", "green": "red", "blue": "yellow", "yellow": "blue"}

IMAGE_SIZE = (128, 128)

# Fixed PNG parameters: no metadata chunks (PIL writes none unless asked), fixed compression.
_PNG_OPTIONS = {"format": "PNG", "optimize": False, "compress_level": 9}


# --------------------------------------------------------------------------- drawing


def _check_choice(value: str, allowed: Sequence[str], what: str) -> None:
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
    _check_choice(colour, COLOURS, "colour")
    _check_choice(shape, SHAPES, "shape")
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


def _write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    path.write_bytes(text.encode("utf-8"))


# --------------------------------------------------------------------------- shapes task


@dataclass(frozen=True)
class ShapeQuestion:
    """One pair of the shapes task, before it is drawn and written."""

    split: str
    index: int  # 0-based position in the split
    colour: str  # the true colour: named by the chosen answer
    rejected_colour: str  # the confusable wrong colour: named by the rejected answer
    shape: str
    question: str
    answer_template: str
    image_seed: str  # seeds the drawing; contains the split, so splits never share a stream

    @property
    def chosen(self) -> str:
        return self.answer_template.format(colour=self.colour, shape=self.shape)

    @property
    def rejected(self) -> str:
        return self.answer_template.format(colour=self.rejected_colour, shape=self.shape)

    def draw(self, size: tuple[int, int] = IMAGE_SIZE) -> Image.Image:
        return draw_shape(self.colour, self.shape, random.Random(self.image_seed), size)


def shape_questions(n: int, seed: int = 0, split: str = "train", rejected: str = "any") -> list[ShapeQuestion]:
    """``n`` balanced shapes-task pairs for ``split`` (``n`` must be a multiple of 12).

    ``rejected`` says which wrong colour a pair's rejected answer names: ``"any"`` spreads the
    rejected answers evenly over all three wrong colours (training pairs: the model learns the
    right colour against every wrong one), ``"confusable"`` always names the true colour's
    partner, red <-> green or blue <-> yellow (validation pairs: they test exactly the mistake
    built into ``tiny-qwen3-vl-warm``, which calls red shapes green and green shapes red).

    Pairs come in twins: the same question, shape and answer template, once with colour A
    chosen over B and once with B chosen over A (each twin has its own picture). So every
    colour is chosen exactly as often as it is rejected, in every context, and any scorer
    that reads only the text gets exactly one of each twin right: chance. Only the picture
    decides. Use a ``split`` name of your own (e.g. "warmstart") for extra data that must not
    share drawings with the committed splits.
    """
    if rejected == "any":
        unordered = [(a, b) for i, a in enumerate(COLOURS) for b in COLOURS[i + 1 :]]
    elif rejected == "confusable":
        unordered = sorted({tuple(sorted(p)) for p in CONFUSABLE_COLOURS.items()})
    else:
        raise ValueError(f"rejected={rejected!r}: choose 'any' or 'confusable'")
    per_block = 12  # a multiple of twins x colour pairs x shapes for both designs
    if n <= 0 or n % per_block:
        raise ValueError(f"n={n}: the shapes task needs a positive multiple of {per_block} pairs to stay balanced")
    rng = random.Random(f"nbtools-shapes/{split}/{seed}/layout")
    rows: list[tuple[str, str, str, str, str]] = []
    for block in range(n // per_block):
        if rejected == "any":  # the 6 colour pairs, the shape turning with the block
            twins = [(SHAPES[(block + i) % len(SHAPES)], a, b) for i, (a, b) in enumerate(unordered)]
        else:  # the 2 confusable pairs on each of the 3 shapes
            twins = [(shape, a, b) for shape in SHAPES for a, b in unordered]
        for shape, a, b in twins:
            question, template = rng.choice(SHAPE_QUESTIONS), rng.choice(SHAPE_ANSWERS)
            rows += [(a, b, shape, question, template), (b, a, shape, question, template)]
    rng.shuffle(rows)
    return [
        ShapeQuestion(
            split=split,
            index=i,
            colour=colour,
            rejected_colour=rejected,
            shape=shape,
            question=question,
            answer_template=template,
            image_seed=f"nbtools-shapes/{split}/{seed}/image/{i}",
        )
        for i, (colour, rejected, shape, question, template) in enumerate(rows)
    ]


@dataclass(frozen=True)
class ShapesTaskFiles:
    train: Path
    validation: Path
    images_dir: Path
    colour_questions: Optional[Path] = None


# The answer-level benchmark on the validation pictures (short-answer layout, nbtools.evaluate.benchmark): one
# question per picture, the true colour as the reference, the four colours as the exclusive terms.
COLOUR_QUESTION = "What colour is the shape?"
COLOUR_QUESTIONS_FILE = "colour_questions.jsonl"


def _colour_question(question: "ShapeQuestion", image_name: str) -> dict:
    return {"question_id": question.index + 1, "image": f"images/{image_name}", "text": COLOUR_QUESTION,
            "answer": question.colour, "terms": list(COLOURS)}


def _shape_record(question: ShapeQuestion, image_name: str) -> dict:
    return {
        "messages": [
            {"role": "user", "content": "<image>" + question.question},
            {"role": "assistant", "content": question.chosen},
        ],
        "images": [f"images/{image_name}"],
        "rejected_response": question.rejected,
    }


def write_shapes_task(
    out_dir: str | Path, n_train: int = 240, n_val: int = 60, seed: int = 0, size: tuple[int, int] = IMAGE_SIZE
) -> ShapesTaskFiles:
    """Writes ``train.jsonl``, ``validation.jsonl`` and ``images/*.png`` of the shapes task, and
    ``colour_questions.jsonl``: "What colour is the shape?" about every validation picture (short answers)."""
    out = Path(out_dir)
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    seen: dict[str, str] = {}  # sha256 -> file: no image may repeat, within or across splits
    files = {}
    colour_rows: list[dict] = []
    for split, n, rejected in (("train", n_train, "any"), ("validation", n_val, "confusable")):
        records = []
        for question in shape_questions(n, seed, split, rejected):
            name = f"{split}_{question.index + 1:04d}.png"
            data = png_bytes(question.draw(size))
            digest = hashlib.sha256(data).hexdigest()
            if digest in seen:  # astronomically unlikely; refuse rather than leak a duplicate
                raise RuntimeError(f"{name} repeats {seen[digest]}; choose another seed")
            seen[digest] = name
            (images_dir / name).write_bytes(data)
            records.append(_shape_record(question, name))
            if split == "validation":
                colour_rows.append(_colour_question(question, name))
        files[split] = out / f"{split}.jsonl"
        _write_jsonl(files[split], records)
    _write_jsonl(out / COLOUR_QUESTIONS_FILE, colour_rows)
    return ShapesTaskFiles(train=files["train"], validation=files["validation"], images_dir=images_dir,
                           colour_questions=out / COLOUR_QUESTIONS_FILE)


# --------------------------------------------------------------------------- showcase drawings

_INK = (45, 45, 52)
_GRID = (222, 222, 228)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)  # ships with Pillow: no system fonts, same glyphs everywhere


def _nice_ticks(low: float, high: float) -> list[float]:
    """Axis ticks at 1, 2 or 5 times a power of ten, covering ``low``..``high`` (4-8 ticks)."""
    raw = (high - low) / 5
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = [first]
    while ticks[-1] < high:
        ticks.append(ticks[-1] + step)
    return [round(t, 10) for t in ticks]


def draw_bar_chart(
    title: str, labels: Sequence[str], values: Sequence[float], bar_rgb: tuple[int, int, int], size=(320, 240)
) -> Image.Image:
    """A plain bar chart with a title, value axis and category labels."""
    w, h = size
    image = Image.new("RGB", size, (250, 250, 252))
    draw = ImageDraw.Draw(image)
    draw.text((w // 2, 8), title, fill=_INK, font=_font(15), anchor="mt")
    left, right, top, bottom = 44, w - 12, 34, h - 26
    ticks = _nice_ticks(0, max(values) * 1.05)
    top_value = ticks[-1]
    for value in ticks:
        y = bottom - (bottom - top) * value / top_value
        draw.line([(left, y), (right, y)], fill=_GRID)
        draw.text((left - 5, y), f"{value:g}", fill=_INK, font=_font(10), anchor="rm")
    slot = (right - left) / len(values)
    for i, (label, v) in enumerate(zip(labels, values)):
        x0 = left + i * slot + slot * 0.18
        x1 = left + (i + 1) * slot - slot * 0.18
        draw.rectangle([x0, bottom - (bottom - top) * v / top_value, x1, bottom], fill=bar_rgb)
        draw.text(((x0 + x1) / 2, bottom + 6), label, fill=_INK, font=_font(11), anchor="mt")
    draw.line([(left, top), (left, bottom), (right, bottom)], fill=_INK, width=1)
    return image


def draw_line_chart(
    title: str, labels: Sequence[str], series: dict[str, tuple[Sequence[float], tuple[int, int, int]]], size=(320, 240)
) -> Image.Image:
    """A line chart with one line per series and a small legend."""
    w, h = size
    image = Image.new("RGB", size, (250, 250, 252))
    draw = ImageDraw.Draw(image)
    draw.text((w // 2, 8), title, fill=_INK, font=_font(15), anchor="mt")
    left, right, top, bottom = 40, w - 14, 48, h - 26
    all_values = [v for values, _ in series.values() for v in values]
    ticks = _nice_ticks(min(0.0, min(all_values)), max(all_values))
    low, high = ticks[0], ticks[-1]
    for value in ticks:
        y = bottom - (bottom - top) * (value - low) / (high - low)
        draw.line([(left, y), (right, y)], fill=_GRID)
        draw.text((left - 5, y), f"{value:g}", fill=_INK, font=_font(10), anchor="rm")
    xs = [left + (right - left) * i / (len(labels) - 1) for i in range(len(labels))]
    for x, label in zip(xs, labels):
        draw.text((x, bottom + 6), label, fill=_INK, font=_font(10), anchor="mt")
    legend_x = left + 4
    for name, (values, rgb) in series.items():
        points = [(x, bottom - (bottom - top) * (v - low) / (high - low)) for x, v in zip(xs, values)]
        draw.line(points, fill=rgb, width=3)
        for px, py in points:
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=rgb)
        draw.rectangle([legend_x, 30, legend_x + 10, 38], fill=rgb)
        draw.text((legend_x + 14, 34), name, fill=_INK, font=_font(10), anchor="lm")
        legend_x += 24 + int(draw.textlength(name, font=_font(10)))
    draw.line([(left, top - 4), (left, bottom), (right, bottom)], fill=_INK)
    return image


def draw_pie_chart(title: str, parts: dict[str, tuple[float, tuple[int, int, int]]], size=(320, 240)) -> Image.Image:
    """A pie chart with a legend giving each part's percentage."""
    w, h = size
    image = Image.new("RGB", size, (250, 250, 252))
    draw = ImageDraw.Draw(image)
    draw.text((w // 2, 8), title, fill=_INK, font=_font(15), anchor="mt")
    total = sum(value for value, _ in parts.values())
    box = [20, 40, 20 + 170, 40 + 170]
    start = -90.0
    legend_y = 60
    for name, (value, rgb) in parts.items():
        sweep = 360 * value / total
        draw.pieslice(box, start, start + sweep, fill=rgb, outline=(250, 250, 252), width=2)
        start += sweep
        draw.rectangle([205, legend_y - 5, 215, legend_y + 5], fill=rgb)
        draw.text((220, legend_y), f"{name} {100 * value / total:.0f}%", fill=_INK, font=_font(11), anchor="lm")
        legend_y += 22
    return image


def draw_landscape(rng: random.Random, trees: int, size=(320, 240), night: bool = False) -> Image.Image:
    """A small house on a hill with ``trees`` trees to its right, by day or by night."""
    w, h = size
    sky_top, sky_bottom = ((20, 24, 60), (50, 60, 110)) if night else ((120, 180, 235), (200, 228, 250))
    image = Image.new("RGB", size)
    draw = ImageDraw.Draw(image)
    for y in range(h):  # vertical sky gradient
        t = y / (h - 1)
        draw.line([(0, y), (w, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(sky_top, sky_bottom)))
    if night:
        draw.ellipse([250, 22, 280, 52], fill=(240, 240, 215))
        for _ in range(18):
            x, y = rng.randint(0, w), rng.randint(0, h // 2)
            draw.point((x, y), fill=(255, 255, 235))
    else:
        draw.ellipse([245, 18, 285, 58], fill=(255, 214, 64))
    grass = (60, 110, 60) if night else (110, 180, 90)
    draw.ellipse([-80, h * 0.58, w + 80, h * 1.5], fill=grass)
    wall = (150, 140, 120) if night else (236, 224, 200)
    draw.rectangle([40, 120, 120, 185], fill=wall)
    draw.polygon([(32, 122), (80, 84), (128, 122)], fill=(120, 40, 35) if night else (190, 60, 50))
    draw.rectangle([70, 150, 90, 185], fill=(110, 75, 50))
    window = (250, 220, 120) if night else (170, 210, 240)
    draw.rectangle([50, 132, 66, 146], fill=window)
    draw.rectangle([96, 132, 112, 146], fill=window)
    for i in range(trees):
        x = 160 + i * (140 // max(trees, 1)) + rng.randint(-4, 4)
        y = 175 + rng.randint(-6, 6)
        draw.rectangle([x - 3, y, x + 3, y + 22], fill=(100, 70, 45))
        r = rng.randint(14, 18)
        draw.ellipse([x - r, y - 2 * r + 4, x + r, y + 4], fill=(30, 90, 40) if night else (50, 140, 60))
    return image


def draw_clock(hour: int, minute: int, size=(200, 200)) -> Image.Image:
    """An analogue wall clock showing ``hour``:``minute``."""
    w, h = size
    image = Image.new("RGB", size, (236, 232, 225))
    draw = ImageDraw.Draw(image)
    cx, cy, r = w / 2, h / 2, min(w, h) * 0.42
    draw.ellipse([cx - r - 5, cy - r - 5, cx + r + 5, cy + r + 5], fill=(60, 60, 66))
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(252, 252, 250))
    for k in range(12):
        a = math.radians(k * 30 - 90)
        draw.text((cx + 0.8 * r * math.cos(a), cy + 0.8 * r * math.sin(a)), str(k or 12), fill=_INK, font=_font(14), anchor="mm")
    minute_angle = math.radians(minute * 6 - 90)
    hour_angle = math.radians((hour % 12 + minute / 60) * 30 - 90)
    draw.line([(cx, cy), (cx + 0.5 * r * math.cos(hour_angle), cy + 0.5 * r * math.sin(hour_angle))], fill=_INK, width=6)
    draw.line([(cx, cy), (cx + 0.72 * r * math.cos(minute_angle), cy + 0.72 * r * math.sin(minute_angle))], fill=_INK, width=3)
    draw.ellipse([cx - 5, cy - 5, cx + 5, cy + 5], fill=(200, 40, 40))
    return image


def draw_receipt(shop: str, items: Sequence[tuple[str, float]], size=(220, 300)) -> Image.Image:
    """A till receipt listing ``items`` and their total."""
    w, h = size
    image = Image.new("RGB", size, (205, 200, 190))
    draw = ImageDraw.Draw(image)
    draw.rectangle([14, 8, w - 14, h - 8], fill=(252, 251, 246))
    draw.text((w // 2, 22), shop, fill=_INK, font=_font(15), anchor="mt")
    y = 56
    for name, price in items:
        draw.text((26, y), name, fill=_INK, font=_font(12))
        draw.text((w - 26, y), f"{price:.2f}", fill=_INK, font=_font(12), anchor="ra")
        y += 22
    draw.line([(26, y + 2), (w - 26, y + 2)], fill=_INK)
    draw.text((26, y + 10), "TOTAL", fill=_INK, font=_font(14))
    draw.text((w - 26, y + 10), f"{sum(p for _, p in items):.2f}", fill=_INK, font=_font(14), anchor="ra")
    draw.text((w // 2, h - 28), "Thank you!", fill=_INK, font=_font(11), anchor="mt")
    return image


def draw_traffic_light(lit: str, rng: random.Random, size=(160, 240)) -> Image.Image:
    """A traffic light against an overcast sky with ``lit`` ("red", "amber" or "green") on."""
    w, h = size
    image = textured_background(rng, size)
    draw = ImageDraw.Draw(image)
    draw.rectangle([w / 2 - 5, 170, w / 2 + 5, h], fill=(70, 70, 75))
    draw.rounded_rectangle([w / 2 - 32, 20, w / 2 + 32, 176], radius=10, fill=(40, 40, 44))
    lamps = {"red": (225, 40, 35), "amber": (245, 170, 20), "green": (40, 200, 80)}
    for i, (name, rgb) in enumerate(lamps.items()):
        cy = 48 + i * 50
        colour = rgb if name == lit else tuple(c // 4 + 20 for c in rgb)
        draw.ellipse([w / 2 - 20, cy - 20, w / 2 + 20, cy + 20], fill=colour)
    return image


def draw_shape_row(items: Sequence[tuple[str, str]], rng: random.Random, size=(320, 140)) -> Image.Image:
    """Several (colour, shape) items side by side, one per equal-width cell."""
    image = textured_background(rng, size)
    cell = size[0] // len(items)
    for i, (colour, shape) in enumerate(items):
        draw_shape_on(image, colour, shape, rng, box=(i * cell, 0, (i + 1) * cell, size[1]))
    return image


# --------------------------------------------------------------------------- showcase set


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def _system(text: str) -> dict:
    return {"role": "system", "content": text}


_ShowcaseImages = dict[str, Callable[[random.Random], Image.Image]]


def _showcase_images() -> _ShowcaseImages:
    """Every showcase picture by file name; each drawer gets its own seeded stream."""
    months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun")
    return {
        "bookings_2024.png": lambda rng: draw_bar_chart(
            "Room bookings, 2024", months, (220, 245, 300, 355, 410, 380), (70, 110, 190)
        ),
        "bookings_2023.png": lambda rng: draw_bar_chart(
            "Room bookings, 2023", months, (240, 230, 260, 290, 320, 360), (150, 150, 160)
        ),
        "temperatures.png": lambda rng: draw_line_chart(
            "Average temperature (°C)",
            months,
            {"Oslo": ((-4, -3, 1, 6, 11, 15), (60, 110, 200)), "Rome": ((8, 9, 12, 15, 19, 24), (210, 80, 50))},
        ),
        "energy_mix.png": lambda rng: draw_pie_chart(
            "Electricity sources",
            {"Wind": (38, (80, 160, 210)), "Solar": (17, (245, 190, 40)), "Hydro": (27, (60, 120, 90)), "Gas": (18, (170, 170, 175))},
        ),
        "store_north.png": lambda rng: draw_bar_chart("North store sales (k$)", ("Q1", "Q2", "Q3", "Q4"), (42, 48, 51, 63), (90, 150, 90)),
        "store_south.png": lambda rng: draw_bar_chart("South store sales (k$)", ("Q1", "Q2", "Q3", "Q4"), (55, 52, 49, 47), (190, 110, 60)),
        "house_day.png": lambda rng: draw_landscape(rng, trees=3),
        "house_night.png": lambda rng: draw_landscape(rng, trees=2, night=True),
        "clock.png": lambda rng: draw_clock(4, 15),
        "receipt.png": lambda rng: draw_receipt(
            "CORNER CAFE", (("Cappuccino", 3.80), ("Cappuccino", 3.80), ("Croissant", 2.90), ("Tomato soup", 6.50), ("Water", 1.60))
        ),
        "traffic_light.png": lambda rng: draw_traffic_light("green", rng),
        "shapes_row.png": lambda rng: draw_shape_row(
            (("blue", "circle"), ("yellow", "triangle"), ("red", "circle"), ("green", "square")), rng
        ),
        "red_circle.png": lambda rng: draw_shape("red", "circle", rng),
        "blue_square.png": lambda rng: draw_shape("blue", "square", rng),
    }


def _showcase_pairs() -> list[dict]:
    """The showcase pairs: answers a careful assistant would give versus plausible worse ones.

    Rejected answers are wrong, unhelpful or ignore an instruction; they are not always the
    shorter one, so the set does not teach "longer is better".
    """
    img = "images/"
    return [
        {  # system message + one chart
            "messages": [
                _system("You are a concise analyst. Answer questions about charts with the numbers you can read."),
                _user("<image>Which month had the most room bookings, and roughly how many?"),
                _assistant("May, with about 410 bookings."),
            ],
            "images": [img + "bookings_2024.png"],
            "rejected_response": "March had the most room bookings, with roughly 300, and numbers fell after that.",
        },
        {
            "messages": [
                _user("<image>\nDescribe what this chart shows."),
                _assistant(
                    "It compares average monthly temperatures in Oslo and Rome from January to June. Both warm up "
                    "steadily; Rome stays about 8–12 °C warmer, going from 8 °C to 24 °C, while Oslo climbs from "
                    "below freezing (−4 °C) to 15 °C."
                ),
            ],
            "images": [img + "temperatures.png"],
            "rejected_response": "It shows temperatures in two cities. Oslo is warmer than Rome for the whole period.",
        },
        {
            "messages": [
                _user("<image>Which source provides the largest share of electricity here?"),
                _assistant("Wind, at 38%."),
            ],
            "images": [img + "energy_mix.png"],
            "rejected_response": "Hydro is the largest source, providing just over a quarter of the electricity.",
        },
        {
            "messages": [_user("<image>How many trees are there in this picture?"), _assistant("Three, all to the right of the house.")],
            "images": [img + "house_day.png"],
            "rejected_response": "There are two trees next to the house.",
        },
        {
            "messages": [_user("<image>What time does the clock show?"), _assistant("A quarter past four (4:15).")],
            "images": [img + "clock.png"],
            "rejected_response": "It shows three o'clock.",
        },
        {
            "messages": [
                _user("<image>What is the total on this receipt, and what was bought twice?"),
                _assistant("The total is 18.60. The cappuccino was bought twice (3.80 each)."),
            ],
            "images": [img + "receipt.png"],
            "rejected_response": "The total is 14.80 and nothing was bought twice.",
        },
        {  # system message + scene
            "messages": [
                _system("You help a cyclist read traffic signals. Be brief and safe."),
                _user("<image>Can I go?"),
                _assistant("Yes — the light is green. Check the crossing is clear, then go."),
            ],
            "images": [img + "traffic_light.png"],
            "rejected_response": "No, the light is red, so you need to wait.",
        },
        {
            "messages": [_user("<image>How many circles are there, and what colours are they?"), _assistant("Two: one blue and one red.")],
            "images": [img + "shapes_row.png"],
            "rejected_response": "There are three circles: blue, yellow and red. The green one is a square, so it doesn't count.",
        },
        {  # two images in one user message
            "messages": [
                _user("<image>\n<image>\nThese are two of our stores. Which one sold more over the whole year?"),
                _assistant(
                    "The North store: about 204k$ (42 + 48 + 51 + 63) against about 203k$ (55 + 52 + 49 + 47) for "
                    "the South store — nearly equal, but North is growing while South is shrinking."
                ),
            ],
            "images": [img + "store_north.png", img + "store_south.png"],
            "rejected_response": "The South store sold more, because it started the year well ahead.",
        },
        {
            "messages": [_user("<image><image>Do these two pictures show the same shape?"), _assistant("No. The first is a red circle, the second a blue square.")],
            "images": [img + "red_circle.png", img + "blue_square.png"],
            "rejected_response": "Yes, both pictures show the same red circle.",
        },
        {  # images across turns of a multi-turn history
            "messages": [
                _user("<image>What does this chart show?"),
                _assistant("Monthly room bookings for January to June 2024, rising from 220 to a peak of 410 in May."),
                _user("<image>Here is the same chart for 2023. Were bookings higher in May 2024 than in May 2023?"),
                _assistant("Yes. May 2024 had about 410 bookings against about 320 in May 2023, roughly 28% more."),
            ],
            "images": [img + "bookings_2024.png", img + "bookings_2023.png"],
            "rejected_response": "No, May 2023 was busier.",
        },
        {  # one image, then a text-only follow-up
            "messages": [
                _user("<image>Describe this picture in one sentence."),
                _assistant("A small house with a lit window on a grassy hill, two trees beside it, under a starry sky with a moon."),
                _user("Is it day or night?"),
                _assistant("Night: the sky is dark with stars and a moon, and the windows are lit."),
            ],
            "images": [img + "house_night.png"],
            "rejected_response": "It is daytime; the sun is shining.",
        },
        {  # text-only, images given as an empty list
            "messages": [
                _user("In one sentence, what is a preference pair in DPO training?"),
                _assistant("A prompt with two answers, one marked as preferred (chosen) and one as worse (rejected)."),
            ],
            "images": [],
            "rejected_response": "A preference pair is two prompts that the model is trained to answer in the same way, so it learns consistency.",
        },
        {  # text-only with a system message, no images key at all
            "messages": [
                _system("Answer in one short sentence."),
                _user("How many kilometres is 10 miles?"),
                _assistant("About 16.1 kilometres."),
            ],
            "rejected_response": "10 miles is about 6.2 kilometres.",
        },
        {  # text-only multi-turn
            "messages": [
                _user("Suggest a name for a grey kitten."),
                _assistant("How about Pebble?"),
                _user("Something shorter, please."),
                _assistant("Ash."),
            ],
            "images": [],
            "rejected_response": "How about Sir Reginald Fluffington the Third?",
        },
        {
            "messages": [_user("Write a haiku about autumn leaves."), _assistant("Red leaves let go now\ndrifting on the cooling wind\nthe branch holds the sky")],
            "images": [],
            "rejected_response": "Autumn is a season when leaves change colour and fall from the trees.",
        },
    ]


def clock_clip(hour: int, start_minute: int, end_minute: int, frames: int = 8, size=(128, 128)):
    """A (T, H, W, 3) uint8 clip of an analogue clock whose hands move from start to end minute."""
    import numpy as np

    minutes = [start_minute + round((end_minute - start_minute) * t / (frames - 1)) for t in range(frames)]
    return np.stack([np.asarray(draw_clock(hour + m // 60, m % 60, size)) for m in minutes])


def _mixed_media_pairs() -> list[dict]:
    """Four pairs in the shape of the format's documented example: system message + one image,
    one image, two images, and an image with a video."""
    img = "images/"
    return [
        {
            "messages": [
                _system("You are a concise analyst. Answer questions about charts with the numbers you can read."),
                _user("<image>Which source provides the largest share of electricity here?"),
                _assistant("Wind, at 38%."),
            ],
            "images": [img + "energy_mix.png"],
            "rejected_response": "Gas provides the largest share, at 18%, followed by solar.",
        },
        {
            "messages": [_user("<image>How much did the cappuccinos cost together?"), _assistant("7.60: two at 3.80 each.")],
            "images": [img + "receipt.png"],
            "rejected_response": "3.80.",
        },
        {
            "messages": [
                _user("<image><image>Which of these two stores grew from Q1 to Q4?"),
                _assistant("The North store, from 42k$ to 63k$; the South store shrank from 55k$ to 47k$."),
            ],
            "images": [img + "store_north.png", img + "store_south.png"],
            "rejected_response": "Both stores grew over the year.",
        },
        {
            "messages": [
                _user("<image>This is the kitchen clock when the cake went in.\n<video>And this clip is the same clock "
                      "afterwards. How long had the cake baked by the end of the clip?"),
                _assistant("Fifteen minutes: the clock goes from 4:15 to 4:30 during the clip."),
            ],
            "images": [img + "clock.png"],
            "videos": ["clips/clock.avi"],
            "rejected_response": "No time has passed; the clock still shows 4:15.",
        },
    ]


def write_showcase_set(out_dir: str | Path, seed: int = 0) -> Path:
    """Writes ``pairs.jsonl``, ``mixed_media.jsonl``, ``images/*.png`` and ``clips/*.avi`` of the
    showcase set; returns the path of ``pairs.jsonl``.

    Only the pictures depend on ``seed`` (noise, tree positions); the texts are fixed because
    they describe the pictures' content.
    """
    out = Path(out_dir)
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    for name, drawer in _showcase_images().items():
        (images_dir / name).write_bytes(png_bytes(drawer(random.Random(f"nbtools-showcase/{seed}/{name}"))))
    (out / "clips").mkdir(exist_ok=True)
    (out / "clips" / "clock.avi").write_bytes(encode_lossless_video(clock_clip(4, 15, 30)))
    path = out / "pairs.jsonl"
    _write_jsonl(path, _showcase_pairs())
    _write_jsonl(out / "mixed_media.jsonl", _mixed_media_pairs())
    return path


# --------------------------------------------------------------------------- stripes tasks (video, image contrast)
# Stripe orientation is a texture cue: it survives the random patch embedding of the built-in
# tiny-qwen3-vl (colour and position do not), so a tiny model with a random frozen vision tower
# can learn a stripes question. benchmarks/stripes_spread.py measures how reliably.

ORIENTATIONS: tuple[str, ...] = ("horizontal", "vertical")
STRIPE_QUESTIONS: tuple[str, ...] = (
    "Which way do the stripes run?",
    "Are the stripes horizontal or vertical?",
    "In which direction do the stripes run?",
)
STRIPE_ANSWERS: tuple[str, ...] = (
    "The stripes are {orientation}.",
    "They run {orientation}ly.",
    "These are {orientation} stripes.",
)
CLIP_SIZE = (64, 64)  # width, height: 2x2 merged tokens per frame group on the tiny models
CLIP_FRAMES = 8
CLIP_FPS = 2  # the default RunConfig.fps: every frame is sampled
# 4x4 merged tokens. At 64x64 (2x2 tokens) training on image-contrast pairs alone taught the ordinary
# preference less reliably (benchmarks/stripes_spread.py: 0.84-1.0 after 60 steps, one collapse at 80).
STRIPES_IMAGE_SIZE = (128, 128)


def _stripe_colours(rng: random.Random) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """A dark and a light grey, in random order and at random levels: only the layout carries the cue.

    Grey rather than colours: per-channel colour differences add nuisance variation that the random
    vision tower mixes into the orientation signal (benchmarks/stripes_spread.py measured the task
    learning more slowly and less reliably with random colours).
    """
    dark, light = rng.randint(0, 70), rng.randint(185, 255)
    first, second = (dark, light) if rng.random() < 0.5 else (light, dark)
    return (first,) * 3, (second,) * 3  # type: ignore[return-value]


@dataclass(frozen=True)
class StripePattern:
    """Everything but the orientation of a stripes picture or clip, so one pattern draws both ways."""

    colours: tuple[tuple[int, int, int], tuple[int, int, int]]
    period: int  # pixels per dark+light cycle
    phase: float  # offset of the first stripe, in pixels
    speed: float  # pixels per frame, across the stripes (a clip's stripes drift)

    @classmethod
    def draw_random(cls, rng: random.Random) -> "StripePattern":
        # Stripes at least 6 px wide, drifting at most a sixth of a period per frame: the tiny models'
        # vision patch is 16 px and spans 2 frames, and finer stripes, or ones that move by half a
        # period between the two frames of a patch (dark over light), blur into flat grey there.
        period = rng.randint(12, 24)
        return cls(colours=_stripe_colours(rng), period=period, phase=rng.uniform(0, period),
                   speed=rng.choice((-1, 1)) * rng.uniform(0.05, 0.16) * period)

    def frame(self, orientation: str, size: tuple[int, int], t: int = 0):
        """Frame ``t`` as a (H, W, 3) uint8 array: square-wave stripes across ``orientation``."""
        import numpy as np

        _check_choice(orientation, ORIENTATIONS, "orientation")
        width, height = size
        # Horizontal stripes vary down the picture (along y); vertical ones across it (along x).
        axis = np.arange(height if orientation == "horizontal" else width, dtype=np.float64)
        light = ((axis + self.phase + self.speed * t) % self.period) < self.period / 2
        line = np.where(light[:, None], np.array(self.colours[1]), np.array(self.colours[0])).astype(np.uint8)
        if orientation == "horizontal":
            return np.ascontiguousarray(np.broadcast_to(line[:, None, :], (height, width, 3)))
        return np.ascontiguousarray(np.broadcast_to(line[None, :, :], (height, width, 3)))

    def clip(self, orientation: str, size: tuple[int, int] = CLIP_SIZE, frames: int = CLIP_FRAMES):
        """A (T, H, W, 3) uint8 clip of the stripes drifting across themselves."""
        import numpy as np

        return np.stack([self.frame(orientation, size, t) for t in range(frames)])

    def image(self, orientation: str, size: tuple[int, int] = STRIPES_IMAGE_SIZE) -> Image.Image:
        return Image.fromarray(self.frame(orientation, size))


def plain_clip(size: tuple[int, int] = CLIP_SIZE, frames: int = CLIP_FRAMES, grey: int = 128):
    """A clip of one flat grey: the control that carries no cue at all."""
    import numpy as np

    return np.full((frames, size[1], size[0], 3), grey, dtype=np.uint8)


def encode_lossless_video(frames, fps: int = CLIP_FPS) -> bytes:
    """``frames`` (T, H, W, 3) uint8 as an FFV1 AVI: lossless, so decoding gives the pixels back.

    Encoded on one thread with the muxer's bit-exact flag (no encoder version string, no random
    ids): equal frames give equal bytes on every run. AVI rather than Matroska because AVI stores
    the frame count, which PyAV (and so transformers' video loader) reads.
    """
    import av

    buffer = io.BytesIO()
    # A small reserved index (the default reserves 1 KiB per stream for files of any length) keeps
    # tiny clips tiny; a longer clip still gets its full index at the end of the file.
    options = {"fflags": "+bitexact", "reserve_index_space": "64"}
    with av.open(buffer, "w", format="avi", options=options) as container:
        stream = container.add_stream("ffv1", rate=fps, options={"threads": "1"})
        stream.codec_context.thread_count = 1
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "bgr0"  # FFV1's lossless RGB layout
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


@dataclass(frozen=True)
class StripeQuestion:
    """One pair of a stripes task, before it is drawn and written."""

    split: str
    index: int
    orientation: str  # the true orientation: named by the chosen answer
    question: str
    answer_template: str
    twin: int  # the two pairs of a twin share question, template and pattern
    pattern_seed: str  # seeds the pattern; contains the split, so splits never share a stream

    @property
    def other(self) -> str:
        return ORIENTATIONS[1 - ORIENTATIONS.index(self.orientation)]

    @property
    def chosen(self) -> str:
        return self.answer_template.format(orientation=self.orientation)

    @property
    def rejected(self) -> str:
        return self.answer_template.format(orientation=self.other)

    @property
    def pattern(self) -> StripePattern:
        return StripePattern.draw_random(random.Random(self.pattern_seed))


def stripe_questions(n: int, seed: int = 0, split: str = "train", task: str = "video") -> list[StripeQuestion]:
    """``n`` balanced stripes pairs (``n`` even). Twins share the question, the answer template and
    the stripe pattern, once horizontal and once vertical: text alone scores exactly 50%, and
    the two pictures of a twin differ only in orientation."""
    if n <= 0 or n % 2:
        raise ValueError(f"n={n}: a stripes task needs a positive even number of pairs (twins) to stay balanced")
    rng = random.Random(f"nbtools-stripes-{task}/{split}/{seed}/layout")
    rows = []
    for twin in range(n // 2):
        question, template = rng.choice(STRIPE_QUESTIONS), rng.choice(STRIPE_ANSWERS)
        rows += [(o, question, template, twin) for o in ORIENTATIONS]
    rng.shuffle(rows)
    return [
        StripeQuestion(split=split, index=i, orientation=o, question=q, answer_template=t, twin=twin,
                       pattern_seed=f"nbtools-stripes-{task}/{split}/{seed}/pattern/{twin}")
        for i, (o, q, t, twin) in enumerate(rows)
    ]


@dataclass(frozen=True)
class TaskFiles:
    train: Path
    validation: Path
    media_dir: Path


def _pair_row(prompt: str, chosen: str, rejected: str, **media) -> dict:
    return {"messages": [_user(prompt), _assistant(chosen)], **media, "rejected_response": rejected}


def write_stripes_video_task(out_dir: str | Path, n_train: int = 128, n_val: int = 32, seed: int = 0,
                             size: tuple[int, int] = CLIP_SIZE, frames: int = CLIP_FRAMES) -> TaskFiles:
    """``train.jsonl``, ``validation.jsonl`` and ``clips/*.avi``: "which way do the stripes run?" on
    short clips of drifting stripes. The answer is in the frames and nowhere else."""
    out = Path(out_dir)
    clips = out / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, n in (("train", n_train), ("validation", n_val)):
        rows = []
        for q in stripe_questions(n, seed, split, task="video"):
            name = f"{split}_{q.index + 1:04d}.avi"
            (clips / name).write_bytes(encode_lossless_video(q.pattern.clip(q.orientation, size, frames)))
            rows.append(_pair_row("<video>" + q.question, q.chosen, q.rejected, videos=[f"clips/{name}"]))
        files[split] = out / f"{split}.jsonl"
        _write_jsonl(files[split], rows)
    return TaskFiles(train=files["train"], validation=files["validation"], media_dir=clips)


def write_stripes_contrast_task(out_dir: str | Path, n_train: int = 128, n_val: int = 32, seed: int = 0,
                                size: tuple[int, int] = STRIPES_IMAGE_SIZE) -> TaskFiles:
    """The image-contrast task: ``train.jsonl`` holds only pure image-contrast pairs (the rejected
    answer *equals* the chosen one; the rejected side sees the same stripes turned the other way
    in ``rejected_images``), ``validation.jsonl`` ordinary pairs of the same question (one picture,
    the right orientation chosen over the wrong one)."""
    out = Path(out_dir)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, n in (("train", n_train), ("validation", n_val)):
        rows = []
        for q in stripe_questions(n, seed, split, task="contrast"):
            # A twin's two pictures are one pattern turned both ways: each is the other's rejected image.
            picture, turned = (f"images/{split}_{q.twin + 1:04d}_{o}.png" for o in (q.orientation, q.other))
            (out / picture).write_bytes(png_bytes(q.pattern.image(q.orientation, size)))
            prompt = "<image>" + q.question
            if split == "train":
                rows.append(_pair_row(prompt, q.chosen, q.chosen, images=[picture], rejected_images=[turned]))
            else:
                rows.append(_pair_row(prompt, q.chosen, q.rejected, images=[picture]))
        files[split] = out / f"{split}.jsonl"
        _write_jsonl(files[split], rows)
    return TaskFiles(train=files["train"], validation=files["validation"], media_dir=images)
