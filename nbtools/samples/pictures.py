"""The showcase set's pictures: charts, a landscape, a clock, a receipt, a traffic light, a row of shapes.
Drawn with Pillow's bundled font, so the glyphs are the same everywhere."""

from __future__ import annotations

import math
import random
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from nbtools.samples.drawing import draw_shape_on, textured_background

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


def _chart_canvas(title: str, size: tuple[int, int]) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    """A light canvas with ``title`` centred at the top."""
    image = Image.new("RGB", size, (250, 250, 252))
    draw = ImageDraw.Draw(image)
    draw.text((size[0] // 2, 8), title, fill=_INK, font=_font(15), anchor="mt")
    return image, draw


def _value_axis(draw: ImageDraw.ImageDraw, ticks: list[float], left: float, right: float, top: float,
                bottom: float) -> None:
    """A grid line and a label at each tick, the first tick at ``bottom`` and the last at ``top``."""
    low, high = ticks[0], ticks[-1]
    for value in ticks:
        y = bottom - (bottom - top) * (value - low) / (high - low)
        draw.line([(left, y), (right, y)], fill=_GRID)
        draw.text((left - 5, y), f"{value:g}", fill=_INK, font=_font(10), anchor="rm")


def draw_bar_chart(
    title: str, labels: Sequence[str], values: Sequence[float], bar_rgb: tuple[int, int, int], size=(320, 240)
) -> Image.Image:
    """A plain bar chart with a title, value axis and category labels."""
    w, h = size
    image, draw = _chart_canvas(title, size)
    left, right, top, bottom = 44, w - 12, 34, h - 26
    ticks = _nice_ticks(0, max(values) * 1.05)
    top_value = ticks[-1]
    _value_axis(draw, ticks, left, right, top, bottom)
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
    image, draw = _chart_canvas(title, size)
    left, right, top, bottom = 40, w - 14, 48, h - 26
    all_values = [v for values, _ in series.values() for v in values]
    ticks = _nice_ticks(min(0.0, min(all_values)), max(all_values))
    low, high = ticks[0], ticks[-1]
    _value_axis(draw, ticks, left, right, top, bottom)
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
    image, draw = _chart_canvas(title, size)
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
