"""FlexAttention BlockMask for packed rows (``nbtools.packing.block_mask``) and the in-place dense mask.

- the BlockMask (tile classification + mask_mod) and the rewritten ``packed_allowed`` equal the
  straightforward mask (the former implementation, kept here) on random layouts;
- neither builds L×L temporaries: the BlockMask is tiles, and peak RSS is measured in a subprocess;
- on the four tiny families, packed log-probs with the registered attention equal the sdpa dense-mask
  path and TRL-style separate rows (forward only: torch 2.14 has no FlexAttention backward on the CPU);
  a leaking BlockMask is caught; 2-D padding masks (evaluation, generation) behave as with sdpa.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager

import pytest
import torch
from torch.nn.attention.flex_attention import create_block_mask

import nbtools.packing.block_mask as block_mask_module
import nbtools.packing.mask as mask_module
from nbtools.packing import packed_logps, separate_logps
from nbtools.packing.block_mask import BLOCK_MASK_ATTENTION, BLOCK_SIZE, block_mask_from_segments, segment_mask_mod
from nbtools.packing.layout import (
    SEGMENT_CHOSEN,
    SEGMENT_CHOSEN_PROMPT,
    SEGMENT_PAD,
    SEGMENT_REJECTED,
    SEGMENT_REJECTED_PROMPT,
)
from nbtools.packing.mask import packed_allowed

from test_packing import FAMILIES, TOLERANCE, models  # noqa: F401 (fixture)
from test_packing_media import _packed, _unpacked, media_batches

def reference_packed_allowed(segment_ids: torch.Tensor) -> torch.Tensor:
    """The former ``packed_allowed``: the rules written directly, several L×L temporaries."""
    _, length = segment_ids.shape
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    query, key = segment_ids[:, :, None], segment_ids[:, None, :]
    real_query, real_key = query != SEGMENT_PAD, key != SEGMENT_PAD
    allowed = causal[None] & real_query & real_key

    def chosen_side(ids):
        return (ids == SEGMENT_CHOSEN_PROMPT) | (ids == SEGMENT_CHOSEN)

    def rejected_side(ids):
        return (ids == SEGMENT_REJECTED_PROMPT) | (ids == SEGMENT_REJECTED)

    allowed &= ~(rejected_side(query) & chosen_side(key))
    allowed &= ~(chosen_side(query) & rejected_side(key))
    allowed |= torch.eye(length, dtype=torch.bool)[None] & ~real_query
    return allowed[:, None]


def packed_row(length: int, generator: torch.Generator, *, contrast: bool) -> list[int]:
    """One row as the collator lays it out: [prompt, (chosen_prompt,) chosen, (rejected_prompt,) rejected, pad]."""
    def size(low, high):
        return int(torch.randint(low, max(low + 1, high), (1,), generator=generator))

    parts = [(1, size(1, length // 3))]
    if contrast:
        parts.append((SEGMENT_CHOSEN_PROMPT, size(0, length // 6)))
    parts.append((SEGMENT_CHOSEN, size(1, length // 5)))
    if contrast:
        parts.append((SEGMENT_REJECTED_PROMPT, size(1, length // 6)))
    parts.append((SEGMENT_REJECTED, size(1, length // 5)))
    row = [segment for segment, count in parts for _ in range(count)][:length]
    return row + [SEGMENT_PAD] * (length - len(row))


def random_layouts(batch: int, length: int, seed: int) -> torch.Tensor:
    """Collator-like rows (plain and image-contrast) plus one row of arbitrary ids (the rules are per token)."""
    generator = torch.Generator().manual_seed(seed)
    rows = [packed_row(length, generator, contrast=bool(i % 2)) for i in range(batch - 1)]
    rows.append(torch.randint(0, 6, (length,), generator=generator).tolist())
    return torch.tensor(rows)


LENGTHS = [1, 5, 127, 128, 300, 521]


# --- masks without a model ----------------------------------------------------------------------

@pytest.mark.parametrize("length", LENGTHS)
def test_in_place_dense_mask_equals_the_direct_one(length, monkeypatch):
    segments = random_layouts(4, length, seed=length)
    expected = reference_packed_allowed(segments)
    assert torch.equal(packed_allowed(segments), expected)
    monkeypatch.setattr(mask_module, "_CHUNK_ELEMENTS", 3 * length)  # several row chunks, a ragged last one
    assert torch.equal(packed_allowed(segments), expected)


def dense_from_block_mask_states(block_mask) -> torch.Tensor:
    """(B, tiles, tiles) int8 read from the kv tile lists: 0 empty, 1 partial (mask_mod decides), 2 full."""
    kv_num, kv_indices, full_num, full_indices = (block_mask.kv_num_blocks, block_mask.kv_indices,
                                                  block_mask.full_kv_num_blocks, block_mask.full_kv_indices)
    batch, _, tiles, _ = kv_indices.shape
    state = torch.zeros(batch, tiles, tiles, dtype=torch.int8)
    for b in range(batch):
        for i in range(tiles):
            state[b, i, kv_indices[b, 0, i, : kv_num[b, 0, i]].long()] = 1
            assert (state[b, i, full_indices[b, 0, i, : full_num[b, 0, i]].long()] == 0).all()  # never both
            state[b, i, full_indices[b, 0, i, : full_num[b, 0, i]].long()] = 2
    return state


def dense_from_block_mask(block_mask, length: int) -> torch.Tensor:
    """What the GPU kernel computes from a BlockMask: full tiles attend, partial tiles ask mask_mod, others don't."""
    state = dense_from_block_mask_states(block_mask)
    batch = state.shape[0]
    state = state.repeat_interleave(BLOCK_SIZE, 1).repeat_interleave(BLOCK_SIZE, 2)[:, :length, :length]
    index = torch.arange(length)
    by_mod = block_mask.mask_mod(torch.arange(batch)[:, None, None], 0, index[None, :, None], index[None, None, :])
    return ((state == 2) | ((state == 1) & by_mod))[:, None]


@pytest.mark.parametrize("length", LENGTHS)
def test_block_mask_tiles_and_mask_mod_equal_the_dense_mask(length):
    segments = random_layouts(4, length, seed=length)
    block_mask = block_mask_from_segments(segments)
    assert block_mask.shape == (4, 1, length, length)
    assert torch.equal(dense_from_block_mask(block_mask, length), reference_packed_allowed(segments))
    if length == 521:  # the classification is exercised: full, partial and empty tiles below the diagonal
        tiles = dense_from_block_mask_states(block_mask)
        below = torch.ones(5, 5, dtype=torch.bool).tril(-1)
        assert {0, 1, 2} <= set(tiles[:, below].unique().tolist())


def test_block_mask_attention_equals_sdpa_with_the_dense_mask():
    segments = random_layouts(3, 300, seed=1)
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(3, 4, 300, 16, generator=generator)
    key, value = torch.randn(2, 3, 2, 300, 16, generator=generator)

    class Attention(torch.nn.Module):
        num_key_value_groups = 2

    got, _ = block_mask_module.block_mask_attention(Attention(), query, key, value, block_mask_from_segments(segments),
                                                    scaling=0.3)
    want = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=packed_allowed(segments), scale=0.3, enable_gqa=True).transpose(1, 2)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_block_mask_stores_tiles_not_elements():
    length = 4096
    block_mask = block_mask_from_segments(random_layouts(2, length, seed=3))
    stored = sum(t.numel() * t.element_size() for t in block_mask.as_tuple() if isinstance(t, torch.Tensor))
    tiles = (length // BLOCK_SIZE) ** 2
    # kv and q indices of partial and full tiles: 4 int32 per tile pair and row, plus the per-tile counts
    assert stored <= 2 * (16 * tiles + 64 * length // BLOCK_SIZE)
    assert stored < 2 * length * length // 500  # the dense mask: L² bytes per row


# The peak memory of building the masks (dense before and now, block mask) is measured, not asserted, in
# benchmarks/long_pairs.py (a memory peak depends on the allocator and the machine's load).


# --- the tiny models --------------------------------------------------------------------------------

@contextmanager
def attention(model, name):
    model.set_attn_implementation(name)
    try:
        yield model
    finally:
        model.set_attn_implementation("sdpa")


@functools.lru_cache(maxsize=None)
def _media_rows():
    return media_batches()["mixed"]


def rows_for(family):
    """Text, image, video (not on LLaVA), and image-contrast rows (``rejected_images``) in one batch."""
    examples = _media_rows()
    if family == "tiny-llava":
        examples = [e for e in examples if not e.get("videos")]
    assert any(e.get("rejected_images") for e in examples) and any(e["images"] for e in examples)
    return examples


_collated = {}


def packed_rows(family, processor):
    """The family's packed batch, collated once for the module (the tests only read it)."""
    if family not in _collated:
        _collated[family] = _packed(processor, rows_for(family))
    return _collated[family]


@pytest.mark.parametrize("family", FAMILIES)
def test_block_mask_attention_gives_the_sdpa_packed_and_separate_logps(models, family, monkeypatch):
    model, processor = models[family]
    examples = rows_for(family)
    batch = packed_rows(family, processor)
    flex_calls = []

    def counting_flex(*args, **kwargs):
        flex_calls.append(kwargs["block_mask"])
        return torch.nn.attention.flex_attention.flex_attention(*args, **kwargs)

    monkeypatch.setattr(block_mask_module, "flex_attention", counting_flex)
    with torch.no_grad():
        dense = packed_logps(model, batch)
        separate_chosen, separate_rejected = separate_logps(model, _unpacked(processor, examples))
        assert not flex_calls
        with attention(model, BLOCK_MASK_ATTENTION):
            flex = packed_logps(model, batch)
    assert len(flex_calls) == model.config.get_text_config().num_hidden_layers  # the text layers went through flex
    for got, want in ((flex.chosen, dense.chosen), (flex.rejected, dense.rejected), (flex.chosen, separate_chosen),
                      (flex.rejected, separate_rejected)):
        torch.testing.assert_close(got, want, atol=TOLERANCE, rtol=0)


def leaking_block_mask(segments):
    """The rejected side also sees the (earlier) chosen side: what separate rows never allow."""
    rules = segment_mask_mod(segments)
    length = segments.shape[1]
    padded = torch.nn.functional.pad(segments, (0, -length % BLOCK_SIZE))

    def mask_mod(b, h, q, kv):
        rejected = (padded[b, q] == SEGMENT_REJECTED) | (padded[b, q] == SEGMENT_REJECTED_PROMPT)
        chosen = (padded[b, kv] == SEGMENT_CHOSEN) | (padded[b, kv] == SEGMENT_CHOSEN_PROMPT)
        return rules(b, h, q, kv) | (rejected & chosen & (kv <= q))

    return create_block_mask(mask_mod, segments.shape[0], None, length, length, device="cpu")


@pytest.mark.parametrize("family", ["tiny-qwen3-vl", "tiny-llava"])
def test_a_leaking_block_mask_changes_the_rejected_logps(models, family):
    model, processor = models[family]
    batch = packed_rows(family, processor)
    with torch.no_grad(), attention(model, BLOCK_MASK_ATTENTION):
        right = packed_logps(model, batch)
        leaking = packed_logps(model, batch, attention_mask=leaking_block_mask(batch["segment_ids"]))
    torch.testing.assert_close(leaking.chosen, right.chosen, atol=TOLERANCE, rtol=0)  # chosen never sees rejected
    assert (leaking.rejected - right.rejected).abs().max() > 10 * TOLERANCE


def test_registration_is_idempotent_and_covers_the_2d_mask_path():
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    block_mask_module.register()
    block_mask_module.register()
    assert AttentionInterface()[BLOCK_MASK_ATTENTION] is block_mask_module.block_mask_attention
    assert BLOCK_MASK_ATTENTION in ALL_MASK_ATTENTION_FUNCTIONS


def left_padded_prompts(processor):
    tokenizer = processor.tokenizer
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        return tokenizer(["Say yes or no, and tell me why you think so.", "Hi"], return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = side


@pytest.mark.parametrize("family", ["tiny-qwen3-vl", "tiny-llava"])
def test_2d_padding_mask_gives_the_sdpa_logits_and_generation(models, family, monkeypatch):
    from transformers.masking_utils import AttentionMaskInterface

    model, processor = models[family]
    inputs = left_padded_prompts(processor)
    real = inputs["attention_mask"].bool()
    assert not real.all()
    generate = dict(max_new_tokens=3, do_sample=False, output_scores=True, return_dict_in_generate=True,
                    pad_token_id=processor.tokenizer.pad_token_id)
    with torch.no_grad():
        want = model(**inputs, use_cache=False).logits
        want_generated = model.generate(**inputs, **generate)
        with attention(model, BLOCK_MASK_ATTENTION):
            got = model(**inputs, use_cache=False).logits
            got_generated = model.generate(**inputs, **generate)
            # without the mask function transformers builds no mask: the short row attends to its padding
            monkeypatch.delitem(AttentionMaskInterface._global_mapping, BLOCK_MASK_ATTENTION)
            unmasked = model(**inputs, use_cache=False).logits
    torch.testing.assert_close(got[real], want[real], atol=TOLERANCE, rtol=0)
    assert torch.equal(got_generated.sequences, want_generated.sequences)
    for got_scores, want_scores in zip(got_generated.scores, want_generated.scores):
        torch.testing.assert_close(got_scores, want_scores, atol=TOLERANCE, rtol=0)
    assert (unmasked[real] - want[real]).abs().max() > 10 * TOLERANCE
