"""Position ids for packed rows.

The rejected answer must get the positions it would have directly after the prompt. For
Qwen-VL's 3-row multimodal rope (time, height, width) the prompt's positions depend on the
image and video grids, so they come from the model's own ``get_rope_index`` over the packed
row; the rejected segment is then renumbered from the prompt's last position + 1 on all three
rows (the prompt ends with text and answers are text, where the three rows are equal; a
video's time axis may reach beyond that on Qwen2/2.5-VL, so not from the largest position).
Other families use 1-D positions.

An image-contrast row (``[prompt, chosen_prompt, chosen, rejected_prompt, rejected]``, where
``prompt`` is what both prompts share before their first image: text, and any video before it)
holds two sequences: ``get_rope_index`` numbers the rejected side as a continuation of the chosen
side. Everything in the rejected side is numbered relative to where it starts (text after text, a
vision group from the position it starts at), so the whole side is off by one constant on all
three rows; shifting it so that its first token sits right after the shared prompt (which ends
with text: its last position + 1) gives exactly the positions of a separate ``[prompt,
rejected_prompt, rejected]`` row (tests compare them with the model's own ``get_rope_index`` on
such a row), so nothing relies on RoPE's shift invariance.

Passed explicitly as ``position_ids``: with a 4-D mask the model cannot infer them. We pass
the 3-row form (not the 4-row form whose row 0 holds text positions): with 3 rows the
language model gets ``text_position_ids=None`` and never tries to detect "packed sequences"
from non-monotonic positions.
"""

from __future__ import annotations

import inspect

import torch

from .layout import SEGMENT_PAD, SEGMENT_REJECTED, SEGMENT_REJECTED_PROMPT


def rope_index_owner(model):
    """The sub-module that owns ``get_rope_index`` (Qwen2/2.5/3-VL), or None for 1-D rope families."""
    for module in (model, getattr(model, "model", None)):
        if module is not None and callable(getattr(module, "get_rope_index", None)):
            return module
    return None


def rejected_side(segment_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rejected-side tokens of image-contrast rows (B, L), those rows (B,))."""
    split = (segment_ids == SEGMENT_REJECTED_PROMPT).any(dim=1)
    side = ((segment_ids == SEGMENT_REJECTED_PROMPT) | (segment_ids == SEGMENT_REJECTED)) & split[:, None]
    return side, split


def _side_start(side: torch.Tensor) -> torch.Tensor:
    """(B,) column of each row's first rejected-side token (0 in rows without one)."""
    return torch.where(side.any(dim=1), side.long().argmax(dim=1), torch.zeros(side.shape[0], dtype=torch.long,
                                                                               device=side.device))


def one_d_positions(segment_ids: torch.Tensor, prompt_lengths: torch.Tensor,
                    chosen_lengths: torch.Tensor) -> torch.Tensor:
    """(B, L) positions: 0.. over prompt (+ chosen prompt) + chosen; rejected restarts right after the prompt,
    or — in an image-contrast row — the rejected side continues right after the shared prompt text."""
    _, length = segment_ids.shape
    index = torch.arange(length, device=segment_ids.device)[None].expand_as(segment_ids)
    rejected = segment_ids == SEGMENT_REJECTED
    positions = torch.where(rejected, index - chosen_lengths.to(index.device)[:, None], index)
    side, _ = rejected_side(segment_ids)
    shift = _side_start(side) - prompt_lengths.to(index.device)
    positions = torch.where(side, index - shift[:, None], positions)
    return positions.masked_fill(segment_ids == SEGMENT_PAD, 0)


def mrope_positions(owner, batch: dict, *, renumber_rejected: bool = True) -> torch.Tensor:
    """(3, B, L) Qwen-VL positions for packed rows.

    ``renumber_rejected=False`` keeps the positions ``get_rope_index`` gives the packed row as
    if it were one sequence — wrong, and only useful to show that the tests catch it.
    """
    segment_ids = batch["segment_ids"]
    real = segment_ids != SEGMENT_PAD
    kwargs = dict(
        input_ids=batch["input_ids"],
        mm_token_type_ids=batch.get("mm_token_type_ids", torch.zeros_like(batch["input_ids"])),
        image_grid_thw=batch.get("image_grid_thw"),
        video_grid_thw=batch.get("video_grid_thw"),
        attention_mask=real.long(),
    )
    if "second_per_grid_ts" in inspect.signature(owner.get_rope_index).parameters:
        kwargs["second_per_grid_ts"] = batch.get("second_per_grid_ts")
    with torch.no_grad():
        positions, _ = owner.get_rope_index(**kwargs)
    if not renumber_rejected:
        return positions
    positions = positions.clone()
    side, split = rejected_side(segment_ids)
    rows = torch.arange(segment_ids.shape[0], device=segment_ids.device)
    # What follows the shared prompt starts one after its last token, which is text (equal on the three
    # rows). Not after its largest position: Qwen2/2.5-VL number a video's time axis beyond the text
    # that follows it (the next text starts after the spatial extent only).
    prompt_lengths = batch["prompt_lengths"].to(positions.device)
    last = positions[0, rows, (prompt_lengths - 1).clamp(min=0)]
    after_prompt = torch.where(prompt_lengths > 0, last + 1, torch.zeros_like(last))  # (B,)
    rejected = (segment_ids == SEGMENT_REJECTED) & ~split[:, None]  # shares the prompt
    order = rejected.long().cumsum(dim=1) - 1  # 0.. within the rejected segment
    renumbered = (after_prompt[:, None] + order).to(positions.dtype)
    positions = torch.where(rejected[None], renumbered[None].expand_as(positions), positions)
    # image-contrast rows: move the rejected side to start right after the shared prompt
    start = positions[:, rows, _side_start(side)]  # (3, B): where get_rope_index put the side's first token
    shift = start - after_prompt[None]
    positions = torch.where(side[None], positions - shift[:, :, None], positions)
    return positions


def packed_position_ids(model, batch: dict, *, renumber_rejected: bool = True) -> torch.Tensor:
    """Explicit ``position_ids`` for a packed batch: (3, B, L) for Qwen-VL, (B, L) otherwise."""
    owner = rope_index_owner(model)
    if owner is not None:
        return mrope_positions(owner, batch, renumber_rejected=renumber_rejected)
    if not renumber_rejected:
        segment_ids = batch["segment_ids"]
        index = torch.arange(segment_ids.shape[1], device=segment_ids.device)[None].expand_as(segment_ids)
        return index.masked_fill(segment_ids == SEGMENT_PAD, 0)
    return one_d_positions(batch["segment_ids"], batch["prompt_lengths"], batch["chosen_lengths"])
