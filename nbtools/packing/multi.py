"""Several preference pairs per packed row, up to a token budget: the row plan and what it saves.

Why: one pair per row pads every row of a batch to the batch's longest pair; with answers of 10–400
tokens and pictures of mixed sizes much of a batch is padding. Placing pairs by length into rows of at
most ``budget`` tokens (the mask keeps the pairs apart: ``pair_ids`` in :mod:`nbtools.packing.mask`
and :mod:`nbtools.packing.block_mask`) leaves padding only at the end of each row.

The planner, the padding measures and the seeded generator of RLAIF-V-like pair lengths (for
``benchmarks/long_pairs.py --cases padding``) are pure arithmetic. :func:`concatenate_pairs` and
:func:`multi_pair_logps` put the rows of a one-pair-per-row packed batch into one row and score each
pair: the forward check that several pairs per row give the same log-probs (not wired into training).
"""

from __future__ import annotations

import random

import torch

from ..images import image_tokens
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


def concatenate_pairs(batch: dict, position_ids: torch.Tensor) -> dict:
    """One row holding the real tokens of every row of a one-pair-per-row packed ``batch``, in order.

    Each pair keeps the positions it has in its own row (``position_ids``: (B, L) or Qwen's (3, B, L)), so
    they restart per pair; images stay in pair order, as the processor produced them. Adds ``pair_ids``
    (1.. per pair) and ``prompt_ends`` (P,): the column of each pair's last shared-prompt token.
    """
    real = batch["segment_ids"] != SEGMENT_PAD
    lengths = real.sum(1)
    columns = [real[b].nonzero().squeeze(1) for b in range(real.shape[0])]
    row = {key: value for key, value in batch.items() if not isinstance(value, torch.Tensor)
           or value.dim() != 2 or value.shape != real.shape}  # pictures, grids: unchanged
    for key in ("input_ids", "segment_ids", "mm_token_type_ids", "attention_mask"):
        if key in batch:
            row[key] = torch.cat([batch[key][b, c] for b, c in enumerate(columns)])[None]
    row["pair_ids"] = torch.cat([torch.full((len(c),), b + 1, dtype=torch.long) for b, c in enumerate(columns)])[None]
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)[:-1]])
    row["prompt_ends"] = offsets + batch["prompt_lengths"].to(offsets.device) - 1
    row["position_ids"] = torch.cat([position_ids[..., b, c] for b, c in enumerate(columns)], dim=-1).unsqueeze(-2)
    return row


def pair_scoring_indices(segment_ids: torch.Tensor, pair_ids: torch.Tensor, prompt_ends: torch.Tensor):
    """(pair index 0.., target columns, predecessor columns, is_chosen) of every scored token of one multi-pair
    row: as ``logps.scoring_indices``, with the first rejected token predicted from its own pair's prompt."""
    from .logps import scoring_indices

    _, cols, predecessors, is_chosen = scoring_indices(segment_ids, torch.zeros(1, dtype=torch.long))
    pairs = pair_ids[0, cols] - 1
    before = segment_ids[0, cols - 1]
    first_rejected = ~is_chosen & (before != SEGMENT_REJECTED) & (before != SEGMENT_REJECTED_PROMPT)
    predecessors = torch.where(first_rejected, prompt_ends.to(cols.device)[pairs], predecessors)
    return pairs, cols, predecessors, is_chosen


def multi_pair_logps(model, row: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) summed log-probs per pair of a :func:`concatenate_pairs` row, with the dense mask
    that keeps the pairs apart (forward only; the kernel's format as in ``packed_logps``)."""
    from .logps import answer_logps, backbone_and_head, model_inputs
    from .mask import packed_attention_mask

    base, backbone, head = backbone_and_head(model)
    segment_ids, pair_ids = row["segment_ids"], row["pair_ids"]
    mask = packed_attention_mask(segment_ids, base.config._attn_implementation or "eager",
                                 base.get_input_embeddings().weight.dtype, pair_ids)
    inputs = {k: v for k, v in model_inputs(row).items() if k not in ("pair_ids", "prompt_ends", "position_ids")}
    hidden = backbone(**inputs, attention_mask=mask, position_ids=row["position_ids"], use_cache=False).last_hidden_state
    pairs, cols, predecessors, is_chosen = pair_scoring_indices(segment_ids, pair_ids, row["prompt_ends"])
    token_logps, _ = answer_logps(head, hidden[0, predecessors], row["input_ids"][0, cols])
    count = len(row["prompt_ends"])
    chosen = torch.zeros(count, dtype=token_logps.dtype).index_add(0, pairs[is_chosen], token_logps[is_chosen])
    rejected = torch.zeros(count, dtype=token_logps.dtype).index_add(0, pairs[~is_chosen], token_logps[~is_chosen])
    return chosen, rejected
