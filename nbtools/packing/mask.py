"""4-D attention mask for packed ``[prompt, (chosen_prompt,) chosen, (rejected_prompt,) rejected]`` rows.

Rules (query -> key):
- every real token attends causally (key position <= query position);
- a rejected token never attends to a chosen token (so it sees prompt + earlier rejected);
- in an image-contrast row, the rejected side (rejected prompt + rejected answer) sees the shared
  prompt text and itself, never the chosen side (chosen prompt + chosen answer), and the other
  way round: two sequences that share their first tokens;
- padding is never attended by a real token, and attends only to itself (a fully masked row
  would make softmax produce NaN, which would then leak through the backward pass).

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


def packed_allowed(segment_ids: torch.Tensor) -> torch.Tensor:
    """Boolean (B, 1, L, L) matrix, True where query i may attend to key j."""
    _, length = segment_ids.shape
    device = segment_ids.device
    causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
    query = segment_ids[:, :, None]
    key = segment_ids[:, None, :]
    real_query, real_key = query != SEGMENT_PAD, key != SEGMENT_PAD
    allowed = causal[None] & real_query & real_key
    # the chosen side (own prompt part, answer) and the rejected side never see each other; what
    # both see is the shared prompt (all of it in a plain row, its text before the first image in
    # an image-contrast row). Chosen precedes rejected, so causality alone would hide one way.
    def chosen_side(ids):
        return (ids == SEGMENT_CHOSEN_PROMPT) | (ids == SEGMENT_CHOSEN)

    def rejected_side(ids):
        return (ids == SEGMENT_REJECTED_PROMPT) | (ids == SEGMENT_REJECTED)

    allowed &= ~(rejected_side(query) & chosen_side(key))
    allowed &= ~(chosen_side(query) & rejected_side(key))
    eye = torch.eye(length, dtype=torch.bool, device=device)[None]
    allowed |= eye & ~real_query  # padding sees only itself
    return allowed[:, None]


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


def packed_attention_mask(segment_ids: torch.Tensor, attn_implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """The (B, 1, L, L) mask for a packed batch, in the kernel's format."""
    return to_model_mask(packed_allowed(segment_ids), attn_implementation, dtype)
