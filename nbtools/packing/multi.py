"""Several preference pairs per packed row, up to a token budget: the row plan and what it saves.

Why: one pair per row pads every row of a batch to the batch's longest pair; with answers of 10–400
tokens and pictures of mixed sizes much of a batch is padding. Placing pairs by length into rows of at
most ``budget`` tokens (the mask keeps the pairs apart: ``pair_ids`` in :mod:`nbtools.packing.mask`
and :mod:`nbtools.packing.block_mask`) leaves padding only at the end of each row.

This module is pure (no model, no torch): the planner, the padding measures and a seeded generator of
RLAIF-V-like pair lengths for the benchmark (``benchmarks/long_pairs.py --cases padding``).
"""

from __future__ import annotations

import random

from ..images import image_tokens


def plan_rows(lengths: list[int], budget: int) -> list[list[int]]:
    """Pair indices per row, first-fit decreasing: every pair placed once, no row over ``budget`` tokens
    unless it holds a single pair longer than the budget (it gets a row of its own).

    Deterministic: ties in length keep the input order, so the same lengths always give the same rows.
    """
    if budget <= 0:
        raise ValueError(f"budget must be positive, got {budget}")
    rows: list[list[int]] = []
    free: list[int] = []  # room left in each row (negative for an oversize pair's own row)
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        length = lengths[index]
        if length < 0:
            raise ValueError(f"pair {index} has a negative length {length}")
        target = next((r for r, room in enumerate(free) if room >= length), None) if length <= budget else None
        if target is None:
            rows.append([index])
            free.append(budget - length)
        else:
            rows[target].append(index)
            free[target] -= length
    return rows


def padding_fraction(lengths: list[int], batch_size: int) -> float:
    """Share of padding tokens with one pair per row, batches of ``batch_size`` consecutive pairs each padded
    to its longest pair (today's collator)."""
    slots = padded = 0
    for first in range(0, len(lengths), batch_size):
        batch = lengths[first:first + batch_size]
        slots += len(batch) * max(batch)
        padded += len(batch) * max(batch) - sum(batch)
    return padded / slots if slots else 0.0


def padding_fraction_packed(rows: list[list[int]], lengths: list[int], budget: int) -> float:
    """Share of padding tokens when each planned row is padded to ``budget`` (a fixed row shape; a row of one
    oversize pair is as long as that pair)."""
    slots = sum(max(budget, sum(lengths[i] for i in row)) for row in rows)
    used = sum(lengths[i] for row in rows for i in row)
    return (slots - used) / slots if slots else 0.0


# Picture sizes (height, width) of an RLAIF-V-like mix: small crops to phone photos.
PICTURE_SIZES = [(224, 224), (336, 336), (480, 640), (512, 512), (720, 1280), (768, 1024), (1080, 1920)]
VISION_MARKERS = 2  # <|vision_start|> and <|vision_end|> around each picture's tokens


def rlaif_v_like_lengths(count: int, seed: int = 0, family: str = "qwen3_vl",
                         max_pixels: int | None = 1024 * 1024) -> list[int]:
    """``count`` packed pair lengths ``[prompt, chosen, rejected]``: a prompt of 20–60 text tokens plus 1–4
    pictures of mixed sizes (tokens per ``images.image_tokens`` under ``max_pixels``), answers of 10–400
    tokens per side. Seeded, so the benchmark's figures can be reproduced."""
    rng = random.Random(seed)
    lengths = []
    for _ in range(count):
        pictures = [rng.choice(PICTURE_SIZES) for _ in range(rng.randint(1, 4))]
        prompt = rng.randint(20, 60) + sum(image_tokens(h, w, family, max_pixels) + VISION_MARKERS
                                           for h, w in pictures)
        lengths.append(prompt + rng.randint(10, 400) + rng.randint(10, 400))
    return lengths
