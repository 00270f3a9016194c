"""The showcase set: a handful of real-looking pairs (charts, scenes, a receipt, text-only chats, multi-turn
histories, a system message, an image with a video) that exercise every shape the data format takes."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable

from PIL import Image

from nbtools.samples.clips import encode_lossless_video
from nbtools.samples.drawing import draw_shape, png_bytes
from nbtools.samples.pictures import (draw_bar_chart, draw_clock, draw_landscape, draw_line_chart, draw_pie_chart,
                                      draw_receipt, draw_shape_row, draw_traffic_light)
from nbtools.samples.rows import assistant, system, user, write_jsonl


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
    return _one_picture_pairs() + _several_picture_pairs() + _text_only_pairs()


def _one_picture_pairs() -> list[dict]:
    """One picture each: charts, a scene, a clock, a receipt, a row of shapes (two with a system message)."""
    img = "images/"
    return [
        {  # system message + one chart
            "messages": [
                system("You are a concise analyst. Answer questions about charts with the numbers you can read."),
                user("<image>Which month had the most room bookings, and roughly how many?"),
                assistant("May, with about 410 bookings."),
            ],
            "images": [img + "bookings_2024.png"],
            "rejected_response": "March had the most room bookings, with roughly 300, and numbers fell after that.",
        },
        {
            "messages": [
                user("<image>\nDescribe what this chart shows."),
                assistant(
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
                user("<image>Which source provides the largest share of electricity here?"),
                assistant("Wind, at 38%."),
            ],
            "images": [img + "energy_mix.png"],
            "rejected_response": "Hydro is the largest source, providing just over a quarter of the electricity.",
        },
        {
            "messages": [user("<image>How many trees are there in this picture?"), assistant("Three, all to the right of the house.")],
            "images": [img + "house_day.png"],
            "rejected_response": "There are two trees next to the house.",
        },
        {
            "messages": [user("<image>What time does the clock show?"), assistant("A quarter past four (4:15).")],
            "images": [img + "clock.png"],
            "rejected_response": "It shows three o'clock.",
        },
        {
            "messages": [
                user("<image>What is the total on this receipt, and what was bought twice?"),
                assistant("The total is 18.60. The cappuccino was bought twice (3.80 each)."),
            ],
            "images": [img + "receipt.png"],
            "rejected_response": "The total is 14.80 and nothing was bought twice.",
        },
        {  # system message + scene
            "messages": [
                system("You help a cyclist read traffic signals. Be brief and safe."),
                user("<image>Can I go?"),
                assistant("Yes — the light is green. Check the crossing is clear, then go."),
            ],
            "images": [img + "traffic_light.png"],
            "rejected_response": "No, the light is red, so you need to wait.",
        },
        {
            "messages": [user("<image>How many circles are there, and what colours are they?"), assistant("Two: one blue and one red.")],
            "images": [img + "shapes_row.png"],
            "rejected_response": "There are three circles: blue, yellow and red. The green one is a square, so it doesn't count.",
        },
    ]


def _several_picture_pairs() -> list[dict]:
    """Two pictures in one message, and pictures across the turns of a multi-turn history."""
    img = "images/"
    return [
        {  # two images in one user message
            "messages": [
                user("<image>\n<image>\nThese are two of our stores. Which one sold more over the whole year?"),
                assistant(
                    "The North store: about 204k$ (42 + 48 + 51 + 63) against about 203k$ (55 + 52 + 49 + 47) for "
                    "the South store — nearly equal, but North is growing while South is shrinking."
                ),
            ],
            "images": [img + "store_north.png", img + "store_south.png"],
            "rejected_response": "The South store sold more, because it started the year well ahead.",
        },
        {
            "messages": [user("<image><image>Do these two pictures show the same shape?"), assistant("No. The first is a red circle, the second a blue square.")],
            "images": [img + "red_circle.png", img + "blue_square.png"],
            "rejected_response": "Yes, both pictures show the same red circle.",
        },
        {  # images across turns of a multi-turn history
            "messages": [
                user("<image>What does this chart show?"),
                assistant("Monthly room bookings for January to June 2024, rising from 220 to a peak of 410 in May."),
                user("<image>Here is the same chart for 2023. Were bookings higher in May 2024 than in May 2023?"),
                assistant("Yes. May 2024 had about 410 bookings against about 320 in May 2023, roughly 28% more."),
            ],
            "images": [img + "bookings_2024.png", img + "bookings_2023.png"],
            "rejected_response": "No, May 2023 was busier.",
        },
        {  # one image, then a text-only follow-up
            "messages": [
                user("<image>Describe this picture in one sentence."),
                assistant("A small house with a lit window on a grassy hill, two trees beside it, under a starry sky with a moon."),
                user("Is it day or night?"),
                assistant("Night: the sky is dark with stars and a moon, and the windows are lit."),
            ],
            "images": [img + "house_night.png"],
            "rejected_response": "It is daytime; the sun is shining.",
        },
    ]


def _text_only_pairs() -> list[dict]:
    """No pictures: an empty ``images`` list, no ``images`` key at all, a multi-turn chat."""
    return [
        {  # text-only, images given as an empty list
            "messages": [
                user("In one sentence, what is a preference pair in DPO training?"),
                assistant("A prompt with two answers, one marked as preferred (chosen) and one as worse (rejected)."),
            ],
            "images": [],
            "rejected_response": "A preference pair is two prompts that the model is trained to answer in the same way, so it learns consistency.",
        },
        {  # text-only with a system message, no images key at all
            "messages": [
                system("Answer in one short sentence."),
                user("How many kilometres is 10 miles?"),
                assistant("About 16.1 kilometres."),
            ],
            "rejected_response": "10 miles is about 6.2 kilometres.",
        },
        {  # text-only multi-turn
            "messages": [
                user("Suggest a name for a grey kitten."),
                assistant("How about Pebble?"),
                user("Something shorter, please."),
                assistant("Ash."),
            ],
            "images": [],
            "rejected_response": "How about Sir Reginald Fluffington the Third?",
        },
        {
            "messages": [user("Write a haiku about autumn leaves."), assistant("Red leaves let go now\ndrifting on the cooling wind\nthe branch holds the sky")],
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
                system("You are a concise analyst. Answer questions about charts with the numbers you can read."),
                user("<image>Which source provides the largest share of electricity here?"),
                assistant("Wind, at 38%."),
            ],
            "images": [img + "energy_mix.png"],
            "rejected_response": "Gas provides the largest share, at 18%, followed by solar.",
        },
        {
            "messages": [user("<image>How much did the cappuccinos cost together?"), assistant("7.60: two at 3.80 each.")],
            "images": [img + "receipt.png"],
            "rejected_response": "3.80.",
        },
        {
            "messages": [
                user("<image><image>Which of these two stores grew from Q1 to Q4?"),
                assistant("The North store, from 42k$ to 63k$; the South store shrank from 55k$ to 47k$."),
            ],
            "images": [img + "store_north.png", img + "store_south.png"],
            "rejected_response": "Both stores grew over the year.",
        },
        {
            "messages": [
                user("<image>This is the kitchen clock when the cake went in.\n<video>And this clip is the same clock "
                      "afterwards. How long had the cake baked by the end of the clip?"),
                assistant("Fifteen minutes: the clock goes from 4:15 to 4:30 during the clip."),
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
    write_jsonl(path, _showcase_pairs())
    write_jsonl(out / "mixed_media.jsonl", _mixed_media_pairs())
    return path
