"""Lean layouts (tiny Qwen-VL models, fp32): an mDPO contrast row carries only its corrupted side and takes its
chosen log-prob from the real pair's row. Same losses, LoRA gradients, metrics and reference values as the full
layout, with fewer tokens."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import tiny_qwen3_fp32

from nbtools.packing import PackedPreferenceCollator, packed_dpo_step
from nbtools.packing.contrast import AUXILIARY_ROWS, auxiliary_rows, with_auxiliary
from nbtools.packing.layout import AUXILIARY_SOURCES, lean_auxiliary_sources
from nbtools.packing.logps import count_tokens

from test_mdpo_step import _lora
from test_packing_media import _example, make_clip
from test_packing import _image

pytestmark = pytest.mark.slow

BETA = 0.1
EXACT = 1e-5  # fp32: the two layouts compute the same numbers in a different order


@pytest.fixture(scope="module")
def qwen3():
    return tiny_qwen3_fp32()


def _pairs() -> list[dict]:
    red, green, blue = _image(64, 96, (200, 30, 30)), _image(96, 64, (20, 180, 40)), _image(64, 64, (30, 30, 220))
    clip = make_clip(4, 32, 64, 1)
    return [
        _example(["image", "What colour is the shape?"], "It is red.", "It is a blue one, very blue.", images=[red]),
        _example(["image", "image", "Which is darker?"], "The second one.", "The first.", images=[green, blue]),
        # an image-contrast pair: its contrast row contrasts with these rejected_images (shared with its rejected side)
        _example(["image", "Is it green?"], "Yes.", "No.", images=[green], rejected_images=[red]),
        # a video after the picture: the same clip in the pair's row and in its contrast row
        _example(["image", "video", "Does it move?"], "The stripes move.", "Nothing moves.", images=[blue],
                 videos=[clip]),
        _example(["Just text, no picture."], "Fine.", "Not fine."),  # no contrast row
    ]


def _collate(processor, examples, *, lean: bool) -> dict:
    batch = PackedPreferenceCollator(processor, lean_auxiliary=lean)(copy.deepcopy(examples))
    batch[AUXILIARY_ROWS] = auxiliary_rows(examples)
    return batch


def _loss_and_grads(model, batch, loss_type, weights=None):
    model.zero_grad()
    result = packed_dpo_step(model, batch, beta=BETA, loss_type=loss_type, loss_weights=weights)
    result.loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    return result, grads


@pytest.mark.parametrize("loss_type, weights", [
    (["mdpo_conditional"], None),
    (["mdpo_anchor"], None),
    (["sigmoid", "mdpo_conditional", "mdpo_anchor"], [1.0, 0.5, 2.0]),
], ids=["conditional", "anchor", "sigmoid+both"])
def test_lean_contrast_rows_give_the_full_layouts_loss_gradients_and_metrics(qwen3, loss_type, weights):
    model, processor = qwen3
    peft_model = _lora(model)
    examples = with_auxiliary(_pairs(), seed=3)
    lean, full = _collate(processor, examples, lean=True), _collate(processor, examples, lean=False)
    assert lean[AUXILIARY_SOURCES].tolist() == [-1] * 5 + [0, 1, 2, 3]
    assert AUXILIARY_SOURCES not in full
    assert count_tokens(lean) < count_tokens(full)

    lean_result, lean_grads = _loss_and_grads(peft_model, lean, loss_type, weights)
    full_result, full_grads = _loss_and_grads(peft_model, full, loss_type, weights)
    torch.testing.assert_close(lean_result.loss, full_result.loss, atol=EXACT, rtol=0)
    assert lean_grads.keys() == full_grads.keys()
    for name, grad in full_grads.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(lean_grads[name], grad, atol=EXACT, rtol=0, msg=name)
    for field in ("chosen", "rejected"):
        torch.testing.assert_close(getattr(lean_result.policy, field), getattr(full_result.policy, field),
                                   atol=EXACT, rtol=0, msg=field)
    torch.testing.assert_close(lean_result.ref_chosen_logps, full_result.ref_chosen_logps, atol=EXACT, rtol=0)
    torch.testing.assert_close(lean_result.ref_rejected_logps, full_result.ref_rejected_logps, atol=EXACT, rtol=0)
    assert lean_result.metrics.keys() == full_result.metrics.keys()
    for name, value in full_result.metrics.items():
        assert lean_result.metrics[name] == pytest.approx(value, abs=EXACT), name
    assert lean_result.attention_tokens < full_result.attention_tokens  # fewer tokens through the model

    # negative check: without the borrowed chosen side, a contrast row's chosen log-prob is 0 and the loss moves
    unborrowed = {k: v for k, v in lean.items() if k != AUXILIARY_SOURCES}
    with torch.no_grad():
        wrong = packed_dpo_step(peft_model, unborrowed, beta=BETA, loss_type=loss_type, loss_weights=weights)
    if "mdpo_conditional" in loss_type:
        assert abs(wrong.loss.item() - full_result.loss.item()) > 1e-3


def test_reference_precompute_stores_the_same_values_in_either_layout(qwen3, tmp_path):
    """The cache keeps (log π_ref(y_w|m,x), log π_ref(y_w|m',x)) for a contrast pair whatever the layout computed it:
    lean rows, full rows, or contrast pairs whose real pairs went in an earlier batch (laid out whole)."""
    from nbtools.packing import ReferenceLogpsStore, precompute_reference_logps, reference_fingerprint

    model, processor = qwen3
    fingerprint = reference_fingerprint("tiny-qwen3-vl", processor, max_pixels=None, dtype="float32")
    examples = with_auxiliary(_pairs()[:3], seed=2)
    stores = {}
    for name, lean, batch_size in (("lean", True, 6), ("full", False, 6), ("split", True, 4)):
        stores[name] = ReferenceLogpsStore(tmp_path / name)
        report = precompute_reference_logps(model, copy.deepcopy(examples), PackedPreferenceCollator(
            processor, lean_auxiliary=lean), stores[name], fingerprint, batch_size=batch_size, progress=False)
        assert report.computed == 6
    keys = stores["full"].keys()
    assert sorted(keys) == sorted(stores["lean"].keys()) == sorted(stores["split"].keys())
    for key in keys:
        for name in ("lean", "split"):
            assert stores[name].get(key) == pytest.approx(stores["full"].get(key), abs=EXACT), name
    lean = stores["lean"].lookup(examples, fingerprint)
    torch.testing.assert_close(lean[0][3:], lean[0][:3], atol=EXACT, rtol=0)  # the real pair's chosen value


def test_a_contrast_pair_is_laid_out_whole_when_its_pair_is_not_in_the_batch():
    from test_mdpo import _example as mdpo_example

    pair, other = mdpo_example(), mdpo_example(question="Another?")
    pair_aux, other_aux = with_auxiliary([pair, other], seed=0)[2:]
    assert lean_auxiliary_sources([pair, other, pair_aux, other_aux]) == [-1, -1, 0, 1]
    assert lean_auxiliary_sources([other_aux, pair, pair_aux]) == [-1, -1, 1]
    # a copy of the pair is not the pair it was made from: its images might differ
    assert lean_auxiliary_sources([copy.deepcopy(pair), pair_aux]) == [-1, -1]
    # copied together, the link is copied with them
    assert lean_auxiliary_sources(copy.deepcopy([pair, pair_aux])) == [-1, 0]
    changed = dict(pair_aux, chosen=[{"role": "assistant", "content": [{"type": "text", "text": "Other."}]}])
    assert lean_auxiliary_sources([pair, changed]) == [-1, -1]
