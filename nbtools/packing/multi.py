"""Several preference pairs per packed row, up to a token budget: the row plan and what it saves.

Why: one pair per row pads every row of a batch to the batch's longest pair; with answers of 10–400
tokens and pictures of mixed sizes much of a batch is padding. Placing pairs by length into rows of at
most ``budget`` tokens (the mask keeps the pairs apart: ``pair_ids`` in :mod:`nbtools.packing.mask`
and :mod:`nbtools.packing.block_mask`) leaves padding only at the end of each row.

The training step (``packed_logps(..., row_budget=...)``) plans with :func:`plan_in_order` (consecutive
pairs, so the pictures keep their order) and lays the batch out with :func:`merge_pairs`. The
length-sorted planner :func:`plan_rows`, the padding measures and the seeded generator of RLAIF-V-like
pair lengths (for ``benchmarks/long_pairs.py --cases padding``) are pure arithmetic.
"""

from __future__ import annotations

import random

import torch

from ..images import prompt_image_tokens
from .layout import SEGMENT_PAD, SEGMENT_REJECTED, SEGMENT_REJECTED_PROMPT


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


def rlaif_v_like_lengths(count: int, seed: int = 0, family: str = "qwen3_vl",
                         max_pixels: int | None = 1024 * 1024) -> list[int]:
    """``count`` packed pair lengths ``[prompt, chosen, rejected]``: a prompt of 20–60 text tokens plus 1–4
    pictures of mixed sizes (tokens per ``images.prompt_image_tokens`` under ``max_pixels``), answers of 10–400
    tokens per side. Seeded, so the benchmark's figures can be reproduced."""
    rng = random.Random(seed)
    lengths = []
    for _ in range(count):
        pictures = [rng.choice(PICTURE_SIZES) for _ in range(rng.randint(1, 4))]
        prompt = rng.randint(20, 60) + sum(prompt_image_tokens(h, w, family, max_pixels) for h, w in pictures)
        lengths.append(prompt + rng.randint(10, 400) + rng.randint(10, 400))
    return lengths


def plan_in_order(lengths: list[int], budget: int) -> list[list[int]]:
    """Consecutive pairs per row, in batch order, as many as fit ``budget`` tokens (a longer pair alone).

    The training step's plan: keeping the order keeps the pictures in the order the processor produced
    them (the model scatters image features onto placeholders in reading order), so nothing is
    re-encoded or moved. Less tight than :func:`plan_rows`, whose order the pictures would not follow.
    """
    if budget <= 0:
        raise ValueError(f"budget must be positive, got {budget}")
    rows: list[list[int]] = []
    used = 0
    for index, length in enumerate(lengths):
        if rows and used + length <= budget:
            rows[-1].append(index)
            used += length
        else:
            rows.append([index])
            used = length
    return rows


# Keys merge_pairs adds that describe the layout (never model inputs).
MERGE_KEYS = ("pair_ids", "pair_rows", "prompt_ends")
# Row-shaped (B, L) model inputs and the value their padding gets in a merged batch (input_ids: see merge_pairs).
_ROW_FILL = {"segment_ids": SEGMENT_PAD, "mm_token_type_ids": 0, "attention_mask": 0}


def merge_pairs(batch: dict, position_ids: torch.Tensor, rows: list[list[int]]) -> dict:
    """The pairs of a one-pair-per-row packed ``batch`` laid out ``rows`` (lists of consecutive pair indices).

    Each pair keeps its tokens and the positions it has in its own row (``position_ids``: (B, L) or Qwen's
    (3, B, L)), so positions restart per pair; rows are padded on the right to the longest. Adds
    ``pair_ids`` (R, W: 1 + the pair's index in ``batch``, 0 for padding), ``pair_rows`` (P,) and
    ``prompt_ends`` (P,): each pair's row and the column of its last shared-prompt token. Everything not
    row-shaped (pictures, grids, per-pair lengths) is passed on unchanged.
    """
    segment_ids = batch["segment_ids"]
    real = segment_ids != SEGMENT_PAD
    if [i for row in rows for i in row] != list(range(real.shape[0])):
        raise ValueError(f"rows must hold every pair once, in order (pictures follow that order), got {rows}")
    columns = [real[b].nonzero().squeeze(1) for b in range(real.shape[0])]
    lengths = [len(c) for c in columns]
    width = max(sum(lengths[i] for i in row) for row in rows)
    device = segment_ids.device
    # padding tokens get a token that is never a picture placeholder: the batch's own padding, or an answer's last
    pad_id = batch["input_ids"][~real][0] if (~real).any() else batch["input_ids"][0, columns[0][-1]]
    row_shaped = [k for k, v in batch.items() if isinstance(v, torch.Tensor) and v.shape == real.shape]
    merged = {k: v for k, v in batch.items() if k not in row_shaped}
    for key in row_shaped:
        merged[key] = torch.full((len(rows), width), _ROW_FILL.get(key, 0), dtype=batch[key].dtype, device=device)
    merged["input_ids"].fill_(pad_id)
    merged["pair_ids"] = torch.zeros(len(rows), width, dtype=torch.long, device=device)
    merged["position_ids"] = position_ids.new_zeros(*position_ids.shape[:-2], len(rows), width)
    pair_rows, prompt_ends = [], []
    for r, row in enumerate(rows):
        start = 0
        for pair in row:
            span = slice(start, start + lengths[pair])
            for key in row_shaped:
                merged[key][r, span] = batch[key][pair, columns[pair]]
            merged["pair_ids"][r, span] = pair + 1
            merged["position_ids"][..., r, span] = position_ids[..., pair, columns[pair]]
            pair_rows.append(r)
            prompt_ends.append(start + int(batch["prompt_lengths"][pair]) - 1)
            start += lengths[pair]
    merged["pair_rows"] = torch.tensor(pair_rows, dtype=torch.long, device=device)
    merged["prompt_ends"] = torch.tensor(prompt_ends, dtype=torch.long, device=device)
    return merged


def concatenate_pairs(batch: dict, position_ids: torch.Tensor) -> dict:
    """Every pair of a one-pair-per-row packed ``batch`` in one row (:func:`merge_pairs` with a single row)."""
    return merge_pairs(batch, position_ids, [list(range(batch["segment_ids"].shape[0]))])
