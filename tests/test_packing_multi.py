"""Several pairs per packed row (``nbtools.packing.multi``) and the masks that keep them apart.

- the planner places every pair once, keeps rows within the budget (an oversize pair alone), is
  deterministic; the padding measures on hand-computed cases;
- ``packed_allowed`` and ``block_mask_from_segments`` with ``pair_ids`` equal the former rules and'd
  with "same pair" on random multi-pair rows, and each other; without ``pair_ids`` nothing changes.
"""

from __future__ import annotations

import random

import pytest
import torch

from nbtools.packing.block_mask import block_mask_attention, block_mask_from_segments
from nbtools.packing.layout import SEGMENT_CHOSEN, SEGMENT_PAD, SEGMENT_REJECTED
from nbtools.packing.mask import packed_allowed
from nbtools.packing.multi import (padding_fraction, padding_fraction_packed, plan_in_order, plan_rows,
                                   rlaif_v_like_lengths)
from nbtools.packing.support import BLOCK_MASK_ATTENTION

from test_packing import models  # noqa: F401 (fixture)
from test_block_mask import dense_from_block_mask, dense_from_block_mask_states, packed_row, reference_packed_allowed


# --- the planner --------------------------------------------------------------------------------

def check_plan(rows, lengths, budget):
    placed = sorted(i for row in rows for i in row)
    assert placed == list(range(len(lengths)))  # every pair exactly once
    for row in rows:
        total = sum(lengths[i] for i in row)
        assert total <= budget or len(row) == 1, (row, total)


@pytest.mark.parametrize("seed", range(5))
def test_plan_places_every_pair_once_within_the_budget(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 3000) for _ in range(rng.randint(1, 300))]
    for budget in (512, 2048, 8192):
        rows = plan_rows(lengths, budget)
        check_plan(rows, lengths, budget)
        assert plan_rows(list(lengths), budget) == rows  # deterministic
        oversize = [i for i, n in enumerate(lengths) if n > budget]
        assert sorted(row[0] for row in rows if sum(lengths[i] for i in row) > budget) == oversize
        # first-fit decreasing: a pair that still fitted an earlier row was never put in a later one
        room = [budget - sum(lengths[i] for i in row) for row in rows]
        for r, row in enumerate(rows):
            smallest = min(lengths[i] for i in row)
            assert all(room[earlier] < smallest for earlier in range(r)) or len(row) == 1


def test_plan_first_fit_decreasing_by_hand():
    assert plan_rows([6, 5, 4, 3, 2], 10) == [[0, 2], [1, 3, 4]]
    assert plan_rows([3, 12, 3, 3], 10) == [[1], [0, 2, 3]]  # the oversize pair alone, ties in input order
    assert plan_rows([], 10) == []
    with pytest.raises(ValueError):
        plan_rows([1], 0)


def test_padding_fractions_by_hand():
    # batches [10, 4] -> 20 slots, [6] -> 6 slots; 20 tokens used
    assert padding_fraction([10, 4, 6], batch_size=2) == pytest.approx(6 / 26)
    # rows padded to the budget 10: [10], [4, 6] -> no padding; an oversize pair fills its own row
    assert padding_fraction_packed([[0], [1, 2]], [10, 4, 6], 10) == 0
    assert padding_fraction_packed([[0], [1]], [12, 4], 10) == pytest.approx(6 / 22)


def test_rlaif_v_like_lengths_are_seeded_and_in_range():
    lengths = rlaif_v_like_lengths(500, seed=3)
    assert lengths == rlaif_v_like_lengths(500, seed=3) != rlaif_v_like_lengths(500, seed=4)
    # prompt 20 + one 224² picture (64 + 2 markers) + 2×10 at least; 60 + 4 × (1024 + 2) + 2×400 at most
    assert min(lengths) >= 20 + 66 + 20 and max(lengths) <= 60 + 4 * 1026 + 800
    assert padding_fraction_packed(plan_rows(lengths, 8192), lengths, 8192) < padding_fraction(lengths, 4)


# --- the masks ------------------------------------------------------------------------------------

def multi_pair_layouts(batch: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(segment_ids, pair_ids): rows of 1–4 collator-like pairs one after the other, then padding (pair 0);
    plus one row of arbitrary segment and pair ids (the rules are per token, the ids need not be in order)."""
    generator = torch.Generator().manual_seed(seed)
    segments, pairs = [], []
    for b in range(batch - 1):
        row, ids = [], []
        for pair in range(1, int(torch.randint(1, 5, (1,), generator=generator)) + 1):
            piece = [s for s in packed_row(max(2, length // 3), generator, contrast=bool((b + pair) % 2))
                     if s != SEGMENT_PAD][: length - len(row)]
            row += piece
            ids += [pair] * len(piece)
        segments.append(row + [SEGMENT_PAD] * (length - len(row)))
        pairs.append(ids + [0] * (length - len(ids)))
    segments.append(torch.randint(0, 6, (length,), generator=generator).tolist())
    pairs.append(torch.randint(0, 4, (length,), generator=generator).tolist())
    return torch.tensor(segments), torch.tensor(pairs)


def reference_multi_allowed(segment_ids: torch.Tensor, pair_ids: torch.Tensor) -> torch.Tensor:
    """The one-pair rules, and only within a pair; padding still sees itself."""
    length = segment_ids.shape[1]
    same_pair = pair_ids[:, None, :, None] == pair_ids[:, None, None, :]
    padding_self = torch.eye(length, dtype=torch.bool) & (segment_ids == SEGMENT_PAD)[:, None, :, None]
    return (reference_packed_allowed(segment_ids) & same_pair) | padding_self


@pytest.mark.parametrize("length", [1, 7, 128, 300, 700])
def test_dense_and_block_masks_keep_pairs_apart(length):
    segments, pairs = multi_pair_layouts(5, length, seed=length)
    expected = reference_multi_allowed(segments, pairs)
    assert torch.equal(packed_allowed(segments, pairs), expected)
    block_mask = block_mask_from_segments(segments, pairs)
    assert torch.equal(dense_from_block_mask(block_mask, length), expected)
    if length == 700:  # the pair rule changes the mask here
        assert not torch.equal(expected, reference_packed_allowed(segments))


def test_block_mask_tiles_follow_the_pair_boundaries():
    """Two pairs [prompt 300, chosen 50, rejected 50] in one row: tiles within the first prompt are full,
    tiles of the second pair against the first empty, the tile holding the boundary partial."""
    one = [1] * 300 + [SEGMENT_CHOSEN] * 50 + [SEGMENT_REJECTED] * 50
    segments, pairs = torch.tensor([one + one]), torch.tensor([[1] * 400 + [2] * 400])
    block_mask = block_mask_from_segments(segments, pairs)
    assert torch.equal(dense_from_block_mask(block_mask, 800), reference_multi_allowed(segments, pairs))
    tiles = dense_from_block_mask_states(block_mask)[0]
    assert tiles[1, 0] == 2  # both in pair 1's prompt
    assert tiles[5, 0] == 0 and tiles[6, 1] == 0  # pair 2 never sees pair 1 (without pair ids: full)
    assert tiles[3, 0] == 1  # tokens 384..511: the end of pair 1 and the start of pair 2
    assert dense_from_block_mask_states(block_mask_from_segments(segments))[0, 5, 0] == 2


def test_without_pair_ids_or_with_one_pair_per_row_the_masks_are_unchanged():
    segments, _ = multi_pair_layouts(4, 300, seed=0)
    one_pair = (segments != SEGMENT_PAD).long()
    before = reference_packed_allowed(segments)
    assert torch.equal(packed_allowed(segments), before)
    assert torch.equal(packed_allowed(segments, one_pair), before)
    assert torch.equal(dense_from_block_mask(block_mask_from_segments(segments, one_pair), 300), before)
    assert torch.equal(dense_from_block_mask(block_mask_from_segments(segments), 300), before)


def test_multi_pair_block_mask_attention_equals_sdpa_with_the_dense_mask():
    segments, pairs = multi_pair_layouts(3, 400, seed=2)
    generator = torch.Generator().manual_seed(0)
    query, key, value = torch.randn(3, 3, 2, 400, 16, generator=generator)

    class Attention(torch.nn.Module):
        num_key_value_groups = 1

    got, _ = block_mask_attention(Attention(), query, key, value, block_mask_from_segments(segments, pairs),
                                  scaling=0.3)
    want = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=packed_allowed(segments, pairs), scale=0.3).transpose(1, 2)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


# --- several pairs in one row on a tiny model (forward only) --------------------------------------

@pytest.mark.parametrize("family", ["tiny-qwen3-vl", "tiny-llava"])
def test_pairs_in_one_row_give_the_one_pair_per_row_logps(models, family, monkeypatch):
    """Text-only and image pairs concatenated into one row (positions restarting per pair, M-RoPE included)
    score as in their own rows; letting the pairs see each other, or numbering the row's positions straight
    through, changes the log-probs."""
    import nbtools.packing.logps as logps_module
    import nbtools.packing.mask as mask_module
    from nbtools.packing import PackedPreferenceCollator, packed_logps, packed_position_ids
    from nbtools.packing.multi import concatenate_pairs

    from test_packing import TOLERANCE, batches

    model, processor = models[family]
    batch = PackedPreferenceCollator(processor)(batches()["mixed"])
    with torch.no_grad():
        want = packed_logps(model, batch)
        row = concatenate_pairs(batch, packed_position_ids(model, batch))
        assert row["input_ids"].shape == (1, int((batch["segment_ids"] != SEGMENT_PAD).sum()))
        budget = row["input_ids"].shape[1]  # every pair in one row
        got = packed_logps(model, batch, row_budget=budget)
        torch.testing.assert_close(got.chosen, want.chosen, atol=TOLERANCE, rtol=0)
        torch.testing.assert_close(got.rejected, want.rejected, atol=TOLERANCE, rtol=0)
        assert torch.equal(got.token_rows, want.token_rows) and torch.equal(got.token_is_chosen, want.token_is_chosen)
        count = row["input_ids"].shape[1]  # positions running on over the row instead of restarting per pair
        running = torch.arange(count)[None].expand(*row["position_ids"].shape[:-1], count)
        merge = logps_module.merge_pairs
        monkeypatch.setattr(logps_module, "merge_pairs", lambda *a: {**merge(*a), "position_ids": running})
        running_rejected = packed_logps(model, batch, row_budget=budget).rejected
        monkeypatch.setattr(logps_module, "merge_pairs", merge)
        original = mask_module.packed_attention_mask
        monkeypatch.setattr(logps_module, "packed_attention_mask",
                            lambda s, impl, dtype, pairs: original(s, impl, dtype))
        leaking_chosen = packed_logps(model, batch, row_budget=budget).chosen
    assert (leaking_chosen[1:] - want.chosen[1:]).abs().max() > 10 * TOLERANCE
    assert (running_rejected - want.rejected).abs().max() > 10 * TOLERANCE


# --- several pairs per row in the training step ----------------------------------------------------

def test_plan_in_order_keeps_pairs_consecutive():
    assert plan_in_order([4, 3, 5, 2, 9, 1], 8) == [[0, 1], [2, 3], [4], [5]]  # 9 > 8: a row of its own
    assert plan_in_order([2, 2, 2], 100) == [[0, 1, 2]]
    assert plan_in_order([], 8) == []
    with pytest.raises(ValueError):
        plan_in_order([1], 0)


def _merged_row_counts(monkeypatch):
    """Record how many rows each merged forward had (the merge really happened)."""
    import nbtools.packing.logps as logps_module

    counts = []
    merge = logps_module.merge_pairs

    def counting(batch, position_ids, rows):
        counts.append(len(rows))
        return merge(batch, position_ids, rows)

    monkeypatch.setattr(logps_module, "merge_pairs", counting)
    return counts


@pytest.mark.parametrize("family", ["tiny-qwen3-vl", "tiny-qwen2.5-vl", "tiny-qwen2-vl", "tiny-llava"])
def test_merged_rows_give_the_one_pair_per_row_logps_on_both_kernels(models, family, monkeypatch):
    """Text, image, video and image-contrast pairs sharing rows (the batch's width, and all in one row): the
    same per-pair log-probs as one pair per row, through the dense mask (sdpa) and the block mask (forward)."""
    from nbtools.packing import packed_logps

    from test_block_mask import attention, packed_rows
    from test_packing import TOLERANCE

    model, processor = models[family]
    batch = packed_rows(family, processor)
    pairs, width = batch["segment_ids"].shape
    total = int((batch["segment_ids"] != SEGMENT_PAD).sum())
    counts = _merged_row_counts(monkeypatch)
    with torch.no_grad():
        want = packed_logps(model, batch)
        for kernel in ("sdpa", BLOCK_MASK_ATTENTION):
            with attention(model, kernel):
                for budget in (width, total):
                    got = packed_logps(model, batch, row_budget=budget)
                    torch.testing.assert_close(got.chosen, want.chosen, atol=TOLERANCE, rtol=0)
                    torch.testing.assert_close(got.rejected, want.rejected, atol=TOLERANCE, rtol=0)
                    assert torch.equal(got.token_rows, want.token_rows)
    # all in one row on each kernel; at the batch's width, some rows shared (LLaVA's three pairs do not fit)
    assert counts.count(1) == 2 and all(count < pairs for count in counts), counts
    assert len(counts) == (2 if family == "tiny-llava" else 4), counts


@pytest.mark.slow
def test_merged_rows_give_the_same_loss_and_lora_gradients(models):
    """Backward through merged rows (sdpa, images encoded once) equals one pair per row: loss, metrics, gradients."""
    from nbtools.packing import packed_dpo_step

    from test_block_mask import packed_rows
    from test_packing import BETA, TOLERANCE, _lora_grads, _lora_model

    model, processor = models["tiny-qwen3-vl"]
    peft_model = _lora_model(model)
    batch = packed_rows("tiny-qwen3-vl", processor)
    results, grads = [], []
    for budget in (None, batch["segment_ids"].shape[1]):
        peft_model.zero_grad()
        result = packed_dpo_step(peft_model, batch, beta=BETA, row_budget=budget)
        result.loss.backward()
        results.append(result)
        grads.append(_lora_grads(peft_model))
    one, merged = results
    assert merged.reused_image_features
    assert (one.policy.chosen - one.ref_chosen_logps).abs().max() > 1e-2  # the adapter moved the policy
    torch.testing.assert_close(merged.loss, one.loss, atol=TOLERANCE, rtol=0)
    assert merged.metrics.keys() == one.metrics.keys()
    for name, value in one.metrics.items():
        assert merged.metrics[name] == pytest.approx(value, abs=1e-4), name
    for name, grad in grads[0].items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(grads[1][name], grad, atol=TOLERANCE, rtol=1e-3, msg=name)


def test_row_budget_follows_the_kernel():
    """Dense masks: never wider than the batch; the block mask: up to max_context_length."""
    from types import SimpleNamespace

    from nbtools.packing.trainer_hook import row_budget

    inputs = {"segment_ids": torch.zeros(4, 300, dtype=torch.long)}

    def model(kernel):
        return SimpleNamespace(config=SimpleNamespace(_attn_implementation=kernel), get_output_embeddings=lambda: None)

    assert row_budget(model("sdpa"), inputs, 8192) == 300
    assert row_budget(model("eager"), inputs, 8192) == 300
    assert row_budget(model(BLOCK_MASK_ATTENTION), inputs, 8192) == 8192
    assert row_budget(model(BLOCK_MASK_ATTENTION), inputs, 100) == 300  # a batch wider than the budget
    assert row_budget(model(BLOCK_MASK_ATTENTION), inputs, None) == 300
