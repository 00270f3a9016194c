"""Lean layouts (tiny Qwen-VL models, fp32): an mDPO contrast row carries only its corrupted side and takes its
chosen log-prob from the real pair's row; a picture or clip a batch holds more than once is encoded once. Same
losses, LoRA gradients, metrics and reference values as the full layout, with fewer tokens and patches."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import tiny_qwen3_fp32

from nbtools.packing import EncodingCounter, PackedPreferenceCollator, packed_dpo_step, packed_logps
from nbtools.packing.contrast import AUXILIARY_ROWS, auxiliary_rows, with_auxiliary
from nbtools.packing.layout import AUXILIARY_SOURCES, MEDIA_COPIES, lean_auxiliary_sources
from nbtools.packing.logps import count_tokens
from nbtools.packing.vision_cache import encode_images

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


def test_shared_pictures_and_clips_are_encoded_once_with_the_same_log_probs(qwen3):
    """The clip of a pair and of its lean contrast row, a video after the first image of an image-contrast row, and
    the rejected_images a contrast row shares with its pair's rejected side: each encoded once per step."""
    model, processor = qwen3
    red, green = _image(64, 96, (200, 30, 30)), _image(96, 64, (20, 180, 40))
    clip = make_clip(4, 32, 64, 2)
    contrast_video = _example(["image", "video", "Same scene?"], "No.", "Yes, the same.", images=[green],
                              videos=[clip], rejected_images=[red])
    examples = with_auxiliary(_pairs() + [contrast_video], seed=1)
    batch = _collate(processor, examples, lean=True)
    video_copies, image_copies = batch[MEDIA_COPIES["video"]].tolist(), batch[MEDIA_COPIES["image"]].tolist()
    # videos in processor order: pair 3's, contrast_video's two sides (one clip), then the contrast rows' copies
    assert video_copies == [0, 1, 1, 0, 1]
    distinct_images = len(set(image_copies))
    assert distinct_images < len(image_copies)
    assert all(image_copies[first] == first for first in image_copies)  # each points at a first occurrence

    peft_model = _lora(model)  # frozen tower: features reused, so copies are encoded once
    counter = EncodingCounter()
    with counter.watch(peft_model):
        once = packed_dpo_step(peft_model, batch, beta=BETA, loss_type=["sigmoid", "mdpo_conditional"])
    assert once.reused_image_features and counter.images == distinct_images + 2
    counter = EncodingCounter()
    with counter.watch(peft_model):
        every = packed_dpo_step(peft_model, batch, beta=BETA, loss_type=["sigmoid", "mdpo_conditional"],
                                reuse_vision=False)
    assert counter.images == 2 * (len(image_copies) + len(video_copies))  # each copy, in each pass
    torch.testing.assert_close(once.loss, every.loss, atol=EXACT, rtol=0)
    with torch.no_grad():
        features = encode_images(model, batch)
        reused, encoded = packed_logps(model, batch, encoder_outputs=features), packed_logps(model, batch)
    torch.testing.assert_close(reused.chosen, encoded.chosen, atol=EXACT, rtol=0)
    torch.testing.assert_close(reused.rejected, encoded.rejected, atol=EXACT, rtol=0)
    # negative check: features of a different clip in the copy's place change the log-probs
    wrong = dict(batch, **{MEDIA_COPIES["video"]: torch.tensor([0, 1, 1, 0, 0])})
    with torch.no_grad():
        moved = packed_logps(model, wrong, encoder_outputs=encode_images(model, wrong))
    assert (moved.rejected - encoded.rejected).abs().max() > 1e-4


def test_a_video_after_the_first_image_is_encoded_once_on_qwen2_5_vl():
    """Qwen2.5-VL (``second_per_grid_ts``, no deepstack features): the copy's features go to both prompt parts."""
    from nbtools.models import load_model_and_processor

    torch.manual_seed(0)
    model, processor = load_model_and_processor("tiny-qwen2.5-vl", dtype=torch.float32, device="cpu",
                                                attn_implementation="sdpa")
    model.eval()
    red, green = _image(64, 96, (200, 30, 30)), _image(96, 64, (20, 180, 40))
    example = _example(["image", "video", "Same scene?"], "No.", "Yes, the same.", images=[green],
                       videos=[make_clip(6, 32, 64, 2, fps=3.0, step=1)], rejected_images=[red])
    batch = PackedPreferenceCollator(processor)([example])
    assert batch[MEDIA_COPIES["video"]].tolist() == [0, 0] and MEDIA_COPIES["image"] not in batch
    counter = EncodingCounter()
    with torch.no_grad(), counter.watch(model):
        features = encode_images(model, batch)
    assert counter.images == 2 + 1  # the two pictures, the clip once
    with torch.no_grad():
        reused, encoded = packed_logps(model, batch, encoder_outputs=features), packed_logps(model, batch)
    torch.testing.assert_close(reused.chosen, encoded.chosen, atol=EXACT, rtol=0)
    torch.testing.assert_close(reused.rejected, encoded.rejected, atol=EXACT, rtol=0)


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


def test_lean_contrast_rows_sharing_rows_with_other_pairs_give_the_full_layouts_loss_and_gradients(qwen3):
    """Several pairs per row (``row_budget``): lean contrast rows, their chosen side borrowed by pair index."""
    model, processor = qwen3
    peft_model = _lora(model)
    examples = with_auxiliary(_pairs(), seed=4)
    lean, full = _collate(processor, examples, lean=True), _collate(processor, examples, lean=False)
    loss_type, weights = ["sigmoid", "mdpo_conditional", "mdpo_anchor"], [1.0, 0.5, 2.0]
    budget = count_tokens(lean)  # every pair in one row
    peft_model.zero_grad()
    shared = packed_dpo_step(peft_model, lean, beta=BETA, loss_type=loss_type, loss_weights=weights, row_budget=budget)
    shared.loss.backward()
    shared_grads = {name: p.grad.detach().clone() for name, p in peft_model.named_parameters() if p.requires_grad}
    full_result, full_grads = _loss_and_grads(peft_model, full, loss_type, weights)
    torch.testing.assert_close(shared.loss, full_result.loss, atol=EXACT, rtol=0)
    torch.testing.assert_close(shared.policy.chosen, full_result.policy.chosen, atol=EXACT, rtol=0)
    torch.testing.assert_close(shared.policy.rejected, full_result.policy.rejected, atol=EXACT, rtol=0)
    for name, grad in full_grads.items():
        torch.testing.assert_close(shared_grads[name], grad, atol=EXACT, rtol=0, msg=name)
