"""4-D attention mask for packed ``[prompt, (chosen_prompt,) chosen, (rejected_prompt,) rejected]`` rows.

Rules (query -> key):
- every real token attends causally (key position <= query position);
- a rejected token never attends to a chosen token (so it sees prompt + earlier rejected);
- in an image-contrast row, the rejected side (rejected prompt + rejected answer) sees the shared
  prompt text and itself, never the chosen side (chosen prompt + chosen answer), and the other
  way round: two sequences that share their first tokens;
- padding is never attended by a real token, and attends only to itself (a fully masked row
  would make softmax produce NaN, which would then leak through the backward pass);
- with ``pair_ids`` (several pairs in one row, see :mod:`nbtools.packing.multi`), a token attends
  only to tokens of its own pair; within a pair the rules above hold.

transformers passes a 4-D ``attention_mask`` through ``create_causal_mask`` unchanged, so the
format must match the attention kernel: sdpa (and flex/eager-like kernels that take booleans)
want ``True = attend``; eager *adds* the mask to the scores, so it needs a float mask with a
large negative number — a boolean mask there is silently added as 0/1 and gives wrong results.
"""

from __future__ import annotations

import torch

from .layout import SEGMENT_CHOSEN, SEGMENT_CHOSEN_PROMPT, SEGMENT_PAD, SEGMENT_REJECTED, SEGMENT_REJECTED_PROMPT

# Attention implementations that add the mask to the scores.
ADDITIVE_MASK_IMPLEMENTATIONS = frozenset({"eager"})
# Implementations known to accept a boolean 4-D mask unchanged.
BOOLEAN_MASK_IMPLEMENTATIONS = frozenset({"sdpa"})
# query rows × keys evaluated at once by the side rule (bounds its temporaries to a few MiB)
_CHUNK_ELEMENTS = 1 << 20


def packed_allowed(segment_ids: torch.Tensor, pair_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean (B, 1, L, L) matrix, True where query i may attend to key j.

    ``pair_ids`` (B, L): which pair of a multi-pair row each token belongs to (0 for padding); tokens of
    different pairs never see each other. ``None`` (one pair per row) leaves the rules as they were.

    Built in place in its own buffer (a lower triangle, then the rules as in-place broadcasts, the
    side rule query-chunk by query-chunk): the only L×L allocation is the result, where a direct
    expression would allocate several L×L temporaries (peak ≈ 5× the mask at L = 16k).
    """
    batch, length = segment_ids.shape
    device = segment_ids.device
    allowed = torch.ones(batch, 1, length, length, dtype=torch.bool, device=device).tril_()  # causal
    real = (segment_ids != SEGMENT_PAD)[:, None]  # (B, 1, L)
    allowed &= real[:, :, None, :]  # padding is never attended ...
    allowed.masked_fill_(~real[:, :, :, None], False)  # ... and attends to nothing but itself (below)
    # the chosen side (own prompt part, answer) and the rejected side never see each other; what
    # both see is the shared prompt (all of it in a plain row, its text before the first image in
    # an image-contrast row). Chosen precedes rejected, so causality alone would hide one way.
    side = torch.zeros(batch, length, dtype=torch.int8, device=device)
    side[(segment_ids == SEGMENT_CHOSEN_PROMPT) | (segment_ids == SEGMENT_CHOSEN)] = 1
    side[(segment_ids == SEGMENT_REJECTED_PROMPT) | (segment_ids == SEGMENT_REJECTED)] = -1
    step = max(1, _CHUNK_ELEMENTS // max(1, batch * length))
    for first in range(0, length, step):
        rows = slice(first, first + step)
        # product -1: one token on each side (1 · -1); 0 or 1: shared, padding or the same side
        crossing = side[:, rows, None] * side[:, None, :] < 0
        if pair_ids is not None:  # another pair of the same row: as if in another row
            crossing |= pair_ids[:, rows, None] != pair_ids[:, None, :]
        allowed[:, 0, rows].masked_fill_(crossing, False)
    allowed.diagonal(dim1=-2, dim2=-1).logical_or_(~real)  # padding sees only itself
    return allowed


def to_model_mask(allowed: torch.Tensor, attn_implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """Convert a boolean allowed-matrix into the form the attention kernel expects."""
    if attn_implementation in ADDITIVE_MASK_IMPLEMENTATIONS:
        mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
        return mask.masked_fill(~allowed, torch.finfo(dtype).min)
    if attn_implementation in BOOLEAN_MASK_IMPLEMENTATIONS:
        return allowed
    raise ValueError(
        f"packing needs attn_implementation 'sdpa' or 'eager', got {attn_implementation!r}: "
        "load the model with attn_implementation='sdpa' or turn packing off"
    )


def packed_attention_mask(segment_ids: torch.Tensor, attn_implementation: str, dtype: torch.dtype,
                          pair_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The (B, 1, L, L) mask for a packed batch, in the kernel's format."""
    return to_model_mask(packed_allowed(segment_ids, pair_ids), attn_implementation, dtype)
