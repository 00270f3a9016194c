"""FlexAttention ``BlockMask`` for packed rows, and the attention implementation that uses it.

Why: the dense (B, 1, L, L) mask of :mod:`nbtools.packing.mask` costs L² bytes per row (256 MiB at
L = 16k) and keeps SDPA off its flash kernel on a GPU. A ``BlockMask`` stores, per 128×128 tile,
whether the tile is empty, full, or partial (then a ``mask_mod`` over the segment ids decides per
element): about 16·(L/128)² bytes per row, and FlexAttention skips the empty tiles.

- :data:`BLOCK_MASK_ATTENTION` is the ``attn_implementation`` name to select (transformers' Qwen-VL
  classes refuse names containing "flex_attention", so it has its own name).
- :func:`register` adds it to transformers' ``AttentionInterface`` (the attention function) and
  ``AttentionMaskInterface`` (2-D padding masks in evaluation, generation and TRL's unpacked rows:
  transformers returns *no* mask for a name missing there, i.e. padding would be attended).
  Those 2-D masks stay SDPA's dense masks and run through SDPA — same results as ``"sdpa"``;
  only a ``BlockMask`` (the packed rows) goes through FlexAttention.
- :func:`block_mask_from_segments` implements ``packed_allowed``'s rules without any L×L tensor.

torch 2.14 runs FlexAttention forward-only on the CPU; training with it needs a GPU.
"""

from __future__ import annotations

import torch
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from .layout import SEGMENT_CHOSEN, SEGMENT_CHOSEN_PROMPT, SEGMENT_PAD, SEGMENT_REJECTED, SEGMENT_REJECTED_PROMPT
from .support import BLOCK_MASK_ATTENTION  # the one name, defined where the run's kernel is chosen

BLOCK_SIZE = 128  # FlexAttention's default tile; the GPU kernels are tuned for it

# per-token side codes used by the mask_mod
_PAD, _SHARED, _CHOSEN_SIDE, _REJECTED_SIDE = 0, 1, 2, 3


def _side_codes(segment_ids: torch.Tensor) -> torch.Tensor:
    """(B, L) int8: padding, shared prompt, chosen side (own prompt part + answer), rejected side."""
    codes = torch.full_like(segment_ids, _SHARED, dtype=torch.int8)
    codes[segment_ids == SEGMENT_PAD] = _PAD
    codes[(segment_ids == SEGMENT_CHOSEN_PROMPT) | (segment_ids == SEGMENT_CHOSEN)] = _CHOSEN_SIDE
    codes[(segment_ids == SEGMENT_REJECTED_PROMPT) | (segment_ids == SEGMENT_REJECTED)] = _REJECTED_SIDE
    return codes


def _pair_allowed(query, key):
    """Whether a query token of side code ``query`` may see an earlier key of code ``key``."""
    # chosen side and rejected side never see each other; both see the shared prompt; padding is never seen
    crossing = (query >= _CHOSEN_SIDE) & (key >= _CHOSEN_SIDE) & (query != key)
    return (query != _PAD) & (key != _PAD) & ~crossing


def segment_mask_mod(segment_ids: torch.Tensor, pair_ids: torch.Tensor | None = None):
    """``mask_mod(b, h, q, kv)`` with ``packed_allowed``'s rules (``pair_ids``: no attention across the pairs
    of a multi-pair row); works on scalars (FlexAttention) and on broadcast index tensors.

    The codes are padded with padding tokens to a multiple of the tile size, so a kernel that evaluates
    a partial last tile past L indexes valid memory (those elements are discarded anyway).
    """
    length = segment_ids.shape[1]
    codes = torch.nn.functional.pad(_side_codes(segment_ids), (0, -length % BLOCK_SIZE), value=_PAD)
    pairs = None if pair_ids is None else torch.nn.functional.pad(pair_ids, (0, -length % BLOCK_SIZE))

    def mask_mod(b, h, q, kv):
        query = codes[b, q]
        allowed = (kv <= q) & _pair_allowed(query, codes[b, kv])
        if pairs is not None:
            allowed = allowed & (pairs[b, q] == pairs[b, kv])
        return allowed | ((query == _PAD) & (q == kv))  # padding sees only itself (no all-masked softmax row)

    return mask_mod


def _pair_ranges(codes: torch.Tensor, pair_ids: torch.Tensor, tiles: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, tiles) smallest and largest pair id of each tile's real tokens (an all-padding tile: +big, -big)."""
    big = torch.iinfo(torch.int64).max
    pairs = torch.nn.functional.pad(pair_ids.long(), (0, codes.shape[1] - pair_ids.shape[1]))
    real = codes != _PAD
    low = pairs.masked_fill(~real, big).view(codes.shape[0], tiles, BLOCK_SIZE).amin(-1)
    high = pairs.masked_fill(~real, -big).view(codes.shape[0], tiles, BLOCK_SIZE).amax(-1)
    return low, high


def _ordered(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(count, indices) per query tile: the kv tiles where ``blocks`` is True come first, in order."""
    counts = blocks.sum(-1, dtype=torch.int32)
    indices = torch.argsort(blocks.to(torch.int8), dim=-1, descending=True, stable=True).to(torch.int32)
    return counts, indices


def block_mask_from_segments(segment_ids: torch.Tensor, pair_ids: torch.Tensor | None = None) -> BlockMask:
    """BlockMask (B, 1, L, L) of a packed batch, equal element for element to ``packed_allowed(segment_ids,
    pair_ids)``.

    Tiles are classified from which side codes each 128-token tile holds, never element by element:
    below the diagonal every key precedes every query, so a tile is full when every (query code,
    key code) pair present is allowed, empty when none is, partial otherwise; diagonal tiles are
    partial (the mask_mod decides), tiles above it empty. Work and memory: (L/128)² per row, no
    L×L tensor at any point (``create_block_mask`` without compilation evaluates the whole mask).

    With ``pair_ids`` a tile is full only when both tiles hold one and the same pair, and empty when the
    pair id ranges of the two tiles do not overlap; anything in between is left to the mask_mod (exact for
    pairs laid out one after the other, and still correct, only slower, for ids in any order).
    """
    batch, length = segment_ids.shape
    device = segment_ids.device
    mask_mod = segment_mask_mod(segment_ids, pair_ids)
    codes = torch.nn.functional.pad(_side_codes(segment_ids), (0, -length % BLOCK_SIZE), value=_PAD)
    tiles = codes.shape[1] // BLOCK_SIZE
    kinds = torch.arange(4, device=device)
    present = torch.nn.functional.one_hot(codes.long(), 4).view(batch, tiles, BLOCK_SIZE, 4).any(2).float()
    allowed_pairs = _pair_allowed(kinds[:, None], kinds[None, :]).float()
    # (B, query tile, kv tile): how many present code pairs are allowed / not allowed
    allowed = torch.einsum("bic,cd,bjd->bij", present, allowed_pairs, present)
    refused = torch.einsum("bic,cd,bjd->bij", present, 1 - allowed_pairs, present)
    below = torch.ones(tiles, tiles, dtype=torch.bool, device=device).tril(-1)
    full = below & (refused == 0)
    partial = below & (allowed > 0) & (refused > 0)
    if pair_ids is not None:
        low, high = _pair_ranges(codes, pair_ids, tiles)
        one_pair = (low == high)[:, :, None] & (low[:, :, None] == low[:, None, :]) & (low == high)[:, None, :]
        apart = (high[:, :, None] < low[:, None, :]) | (high[:, None, :] < low[:, :, None])
        partial = (partial | (full & ~one_pair)) & ~apart
        full = full & one_pair
    partial = partial | torch.eye(tiles, dtype=torch.bool, device=device)
    kv_num_blocks, kv_indices = _ordered(partial[:, None])
    full_kv_num_blocks, full_kv_indices = _ordered(full[:, None])
    return BlockMask.from_kv_blocks(
        kv_num_blocks, kv_indices, full_kv_num_blocks, full_kv_indices,
        BLOCK_SIZE=BLOCK_SIZE, mask_mod=mask_mod, seq_lengths=(length, length),
    )


_compiled_flex = None
_compile_on_cpu = False


def compile_on_cpu(enabled: bool = True) -> None:
    """Also compile FlexAttention for CPU tensors (default: off, eager on the CPU).

    Eager FlexAttention materialises the (heads, L, L) scores, so on the CPU it costs more memory than SDPA
    with the dense mask; compiled, it works tile by tile and skips the empty tiles, as on a GPU. Compiling
    needs a C++ toolchain and takes seconds per new shape, which is why training and tests leave it off;
    ``benchmarks/long_pairs.py`` turns it on to measure the block-mask path's forward memory on the CPU."""
    global _compile_on_cpu
    _compile_on_cpu = bool(enabled)


def _flex():
    """FlexAttention compiled once (uncompiled it materialises the scores): always on GPUs; on the CPU only
    after :func:`compile_on_cpu` (it is forward-only there anyway, and compiling needs a C++ toolchain)."""
    global _compiled_flex
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention)
    return _compiled_flex


def block_mask_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention function: FlexAttention for a ``BlockMask``, SDPA for anything else.

    Anything else = the vision towers' calls (no mask) and dense masks built from 2-D padding masks by
    the registered mask function; SDPA keeps exactly the ``"sdpa"`` behaviour there.
    """
    if not isinstance(attention_mask, BlockMask):
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if dropout > 0:
        raise ValueError(f"{BLOCK_MASK_ATTENTION}: FlexAttention has no attention dropout; set the model's "
                         "attention_dropout to 0")
    for unsupported in ("softcap", "s_aux", "position_bias"):
        if kwargs.get(unsupported) is not None:
            raise ValueError(f"{BLOCK_MASK_ATTENTION} does not support {unsupported!r}; use 'sdpa'")
    query_heads, kv_heads = query.shape[1], key.shape[1]
    if query_heads != kv_heads and query_heads & (query_heads - 1):
        # like transformers' flex path: grouped heads only when the query head count is a power of two
        key = key.repeat_interleave(query_heads // kv_heads, dim=1)
        value = value.repeat_interleave(query_heads // kv_heads, dim=1)
    compiled = (query.device.type != "cpu" or _compile_on_cpu) and not torch.compiler.is_compiling()
    attend = _flex() if compiled else flex_attention
    output = attend(query, key, value, block_mask=attention_mask, scale=scaling,
                    enable_gqa=key.shape[1] != query_heads)
    return output.transpose(1, 2).contiguous(), None


def register() -> None:
    """Make :data:`BLOCK_MASK_ATTENTION` selectable (``model.set_attn_implementation`` / ``attn_implementation=``);
    idempotent. The mask function is transformers' own ``sdpa_mask``, so 2-D masks mean what they mean for sdpa."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(BLOCK_MASK_ATTENTION, block_mask_attention)
    AttentionMaskInterface.register(BLOCK_MASK_ATTENTION, sdpa_mask)


register()
