"""Videos and image-contrast pairs (``rejected_images``) in both layouts: the packed rows
(``[prompt, chosen, rejected]`` / ``[prompt, chosen, rejected_prompt, rejected]``), TRL's unpacked
rows (our ``VisionPreferenceCollator``) and a plain forward per sequence give the same log-probs,
DPO losses and LoRA gradients (fp32, tiny models); wrong masks / positions are caught; each image
and video is encoded once per step; the reference cache key covers videos and rejected images."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch

from nbtools.packing import (
    EncodingCounter,
    PackedPreferenceCollator,
    VisionPreferenceCollator,
    packed_dpo_step,
    packed_logps,
    pair_losses,
    separate_logps,
)
from nbtools.packing.layout import (
    SEGMENT_CHOSEN,
    SEGMENT_CHOSEN_PROMPT,
    SEGMENT_PROMPT,
    SEGMENT_REJECTED,
    SEGMENT_REJECTED_PROMPT,
    PackedPieces,
    pack_pieces,
    render_pair,
)
from nbtools.packing.mask import packed_allowed, to_model_mask
from nbtools.packing.positions import packed_position_ids
from nbtools.video import Clip, VideoSettings, processor_video_kwargs

from test_packing import BETA, TOLERANCE, _image, _lora_grads, _lora_model, models  # noqa: F401 (fixture)

MEDIA_FAMILIES = ["tiny-qwen3-vl", "tiny-qwen2.5-vl"]


def make_clip(frames: int, height: int, width: int, seed: int, *, fps: float = 4.0, step: int = 2,
              settings: VideoSettings = VideoSettings()) -> Clip:
    """A decoded clip as ``nbtools.video.load_clip`` returns it: moving stripes plus noise, and its metadata."""
    from transformers.video_utils import VideoMetadata

    rng = np.random.RandomState(seed)
    array = (rng.rand(frames, height, width, 3) * 80).astype(np.uint8)
    for t in range(frames):
        array[t, :, (t * 5 + seed) % width :: 9] = (200, 180 - 20 * t % 180, 40 * seed % 255)
    metadata = VideoMetadata(total_num_frames=frames * step, fps=fps, width=width, height=height,
                             frames_indices=list(range(0, frames * step, step)), duration=frames * step / fps)
    return Clip(path=f"clip{seed}.mkv", frames=array, metadata=metadata, settings=settings)


def _structured(*blocks_and_text):
    content = []
    for item in blocks_and_text:
        content.append({"type": item} if item in ("image", "video") else {"type": "text", "text": item})
    return content


def _example(prompt_blocks, chosen, rejected, images=(), videos=(), rejected_images=None, history=()):
    example = {
        "prompt": [*history, {"role": "user", "content": _structured(*prompt_blocks)}],
        "chosen": [{"role": "assistant", "content": [{"type": "text", "text": chosen}]}],
        "rejected": [{"role": "assistant", "content": [{"type": "text", "text": rejected}]}],
        "images": list(images),
    }
    if videos:
        example["videos"] = list(videos)
    if rejected_images is not None:
        example["rejected_images"] = list(rejected_images)
    return example


def media_batches() -> dict[str, list[dict]]:
    red, green, blue = _image(64, 96, (200, 30, 30)), _image(128, 64, (20, 180, 40)), _image(96, 96, (30, 30, 220))
    small = _image(40, 40, (240, 240, 20))  # fewer image tokens than the image it replaces
    clip_a, clip_b, clip_c = make_clip(4, 64, 64, 0), make_clip(2, 64, 96, 1), make_clip(6, 32, 64, 2, fps=3.0, step=1)
    history = [{"role": "system", "content": [{"type": "text", "text": "You watch closely."}]}]
    video = [
        _example(["video", "What moves?"], "The stripes move right.", "Nothing.", videos=[clip_a]),
        _example(["Compare ", "video", " and ", "video"], "The second is wider.", "Same clips, same size.",
                 videos=[clip_b, clip_c], history=history),
        # many frames, small frames, short question: on Qwen2/2.5-VL the video's time axis reaches past the
        # positions of the text after it (the answers follow the prompt's last token, not its largest position)
        _example(["video", "?"], "Up.", "Down, slowly.", videos=[make_clip(16, 32, 32, 3, fps=2.0, step=1)]),
    ]
    image_video = [
        _example(["image", "video", "Same colour?"], "Yes, both red.", "No.", images=[red], videos=[clip_a]),
        _example(["video", "Then ", "image", "?"], "The image is green.", "Blue, I guess.", images=[green],
                 videos=[clip_c]),
    ]
    rejected_images = [
        _example(["image", "What colour is the shape?"], "It is red.", "It is red.", images=[red],
                 rejected_images=[small]),  # pure image contrast: same answer, other picture
        _example(["image", "image", "Which is darker?"], "The second.", "The first one, clearly.",
                 images=[green, blue], rejected_images=[blue, red], history=history),
        # same size: the placeholder tokens are identical ids, yet the images differ (nothing shared past the text)
        _example(["image", "Is it red?"], "Yes.", "Yes.", images=[red],
                 rejected_images=[_image(64, 96, (30, 200, 30))]),
        # a video after the first image sits in both prompt parts
        _example(["image", "video", "Same scene?"], "No.", "Yes, the same.", images=[green], videos=[clip_c],
                 rejected_images=[red], history=history),
    ]
    mixed = [
        _example(["Just text."], "fine", "not fine at all, really"),
        _example(["image", "What colour?"], "red", "It is a blue one.", images=[red]),
        _example(["video", "What moves?"], "Stripes.", "A cat walks by.", videos=[clip_b]),
        _example(["image", "Colour?"], "Blue.", "Blue.", images=[blue], rejected_images=[green]),
        _example(["video", "image", "Match?"], "They match.", "No match.", images=[green], videos=[clip_a],
                 rejected_images=[small]),  # the video comes before the first image: shared by both sides
    ]
    return {"video": video, "image_video": image_video, "rejected_images": rejected_images, "mixed": mixed}


KINDS = ["video", "image_video", "rejected_images", "mixed"]


def per_sequence_logps(model, processor, example) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground truth: one plain forward per sequence (batch of one, no padding, no packing)."""
    prompt, chosen, rejected, images = render_pair(copy.deepcopy(example), processor)
    tokenizer = processor.tokenizer
    sides = ((images, chosen), (example.get("rejected_images") or images, rejected))
    sums = []
    for side_images, answer in sides:
        encoded = processor(text=[prompt], images=[side_images] if side_images else None, return_tensors="pt",
                            add_special_tokens=False, **processor_video_kwargs(example.get("videos") or []))
        answer_ids = torch.tensor([tokenizer(answer, add_special_tokens=False)["input_ids"]])
        input_ids = torch.cat([encoded["input_ids"], answer_ids], dim=1)
        inputs = {k: v for k, v in encoded.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
        if "mm_token_type_ids" in encoded:
            inputs["mm_token_type_ids"] = torch.cat([encoded["mm_token_type_ids"], torch.zeros_like(answer_ids)], dim=1)
        logits = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False, **inputs).logits
        start = encoded["input_ids"].shape[1]
        log_probs = logits[0, start - 1 : -1].float().log_softmax(-1)
        sums.append(log_probs.gather(-1, answer_ids[0, :, None]).sum())
    return sums[0], sums[1]


def per_sequence_batch(model, processor, examples):
    values = [per_sequence_logps(model, processor, example) for example in examples]
    return torch.stack([v[0] for v in values]), torch.stack([v[1] for v in values])


def _unpacked(processor, examples):
    return VisionPreferenceCollator(processor)(copy.deepcopy(examples))


def _packed(processor, examples):
    return PackedPreferenceCollator(processor)(copy.deepcopy(examples))


# --- layout without a model --------------------------------------------------------------------

def test_image_contrast_layout_mask_and_one_d_positions():
    # shared text [5, 6]; chosen prompt [1]; chosen [7]; rejected prompt [2, 2]; rejected [8, 9]
    batch = pack_pieces([PackedPieces([5, 6], [7], [8, 9], chosen_prompt_ids=[1], rejected_prompt_ids=[2, 2]),
                         PackedPieces([5], [7, 7], [8])], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 1, 7, 2, 2, 8, 9], [5, 7, 7, 8, 0, 0, 0, 0]]
    assert batch["segment_ids"].tolist() == [[1, 1, 5, 2, 4, 4, 3, 3], [1, 2, 2, 3, 0, 0, 0, 0]]
    assert batch["chosen_prompt_lengths"].tolist() == [1, 0]
    assert batch["rejected_prompt_lengths"].tolist() == [2, 0]
    allowed = packed_allowed(batch["segment_ids"])[0, 0].int()
    expected = torch.tensor([
        [1, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0, 0],  # chosen side: shared text + its own part
        [1, 1, 1, 1, 0, 0, 0, 0],
        [1, 1, 0, 0, 1, 0, 0, 0],  # rejected side: shared text + its own part, never the chosen side
        [1, 1, 0, 0, 1, 1, 0, 0],
        [1, 1, 0, 0, 1, 1, 1, 0],
        [1, 1, 0, 0, 1, 1, 1, 1],
    ])
    assert torch.equal(allowed, expected)
    # the shared-prompt row next to it keeps its rules (rejected sees the prompt, never chosen)
    assert packed_allowed(batch["segment_ids"])[1, 0, 3].int().tolist() == [1, 0, 0, 1, 0, 0, 0, 0]

    class OneD(torch.nn.Module):  # a model without get_rope_index: 1-D positions
        pass

    positions = packed_position_ids(OneD(), batch)
    assert positions.tolist() == [[0, 1, 2, 3, 2, 3, 4, 5], [0, 1, 2, 1, 0, 0, 0, 0]]
    with pytest.raises(ValueError, match="pair 0: the rejected prompt is empty"):
        pack_pieces([PackedPieces([1], [2], [3], chosen_prompt_ids=[4], rejected_prompt_ids=[])], pad_token_id=0)
    with pytest.raises(ValueError, match="pair 0: chosen_prompt_ids without rejected_prompt_ids"):
        pack_pieces([PackedPieces([1], [2], [3], chosen_prompt_ids=[4])], pad_token_id=0)


def test_rejected_images_must_match_the_images_one_for_one(models):
    _, processor = models["tiny-qwen3-vl"]
    example = media_batches()["rejected_images"][1]
    example["rejected_images"] = example["rejected_images"][:1]
    message = r"pair 0 of the batch: it has 2 image\(s\) but 1 rejected_images; the rejected sequence puts"
    with pytest.raises(ValueError, match=message):
        _packed(processor, [example])
    with pytest.raises(ValueError, match=message):
        _unpacked(processor, [example])
    bad = media_batches()["video"][0]
    bad["videos"] = ["clip.mp4"]
    with pytest.raises(ValueError, match="pair 0 of the batch: videos must be decoded clips"):
        _packed(processor, [bad])
    _, llava = models["tiny-llava"]  # its processor ignores videos without a word: we do not
    video = [e for e in media_batches()["image_video"] if e["images"]][:1]
    for collate in (_packed, _unpacked):
        with pytest.raises(ValueError, match="the batch holds videos, but LlavaProcessor returned no video inputs"):
            collate(llava, video)


# --- equivalence: packed == unpacked == one forward per sequence --------------------------------

# Qwen2-VL: mrope without timestamps; LLaVA: 1-D positions and no video (image-contrast pairs only)
CASES = [(family, kind) for family in MEDIA_FAMILIES + ["tiny-qwen2-vl"] for kind in KINDS] + [
    ("tiny-llava", "rejected_images")]


@pytest.mark.parametrize("family, kind", CASES)
def test_packed_unpacked_and_per_sequence_logps_agree(models, family, kind):
    model, processor = models[family]
    examples = media_batches()[kind]
    if family == "tiny-llava":
        examples = [e for e in examples if not e.get("videos")]
    with torch.no_grad():
        truth_chosen, truth_rejected = per_sequence_batch(model, processor, examples)
        unpacked_chosen, unpacked_rejected = separate_logps(model, _unpacked(processor, examples))
        packed = packed_logps(model, _packed(processor, examples))
    for got_chosen, got_rejected in ((unpacked_chosen, unpacked_rejected), (packed.chosen, packed.rejected)):
        torch.testing.assert_close(got_chosen, truth_chosen, atol=TOLERANCE, rtol=0)
        torch.testing.assert_close(got_rejected, truth_rejected, atol=TOLERANCE, rtol=0)
    if kind == "rejected_images":  # pure image contrast: same text, other picture, other log-prob
        assert abs(truth_chosen[0] - truth_rejected[0]) > 10 * TOLERANCE


def test_unpacked_collator_is_trl_collator_on_plain_rows(models):
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    from test_packing import batches

    _, processor = models["tiny-qwen3-vl"]
    for examples in batches().values():
        ours = VisionPreferenceCollator(processor)(copy.deepcopy(examples))
        theirs = DataCollatorForVisionPreference(processor)(copy.deepcopy(examples))
        assert ours.keys() == theirs.keys()
        for key in theirs:
            assert torch.equal(ours[key], theirs[key]), key


def test_unpacked_batch_layout_with_videos_and_rejected_images(models):
    _, processor = models["tiny-qwen3-vl"]
    examples = media_batches()["mixed"]
    batch = _unpacked(processor, examples)
    assert batch["input_ids"].shape[0] == 2 * len(examples)
    # videos appear in both rows of their pairs, in row order: chosen rows, then rejected rows
    video_frames = [c.frames.shape[0] for e in examples for c in e.get("videos", [])]
    assert batch["video_grid_thw"][:, 0].tolist() == [t // 2 for t in video_frames] * 2
    # the rejected rows of pairs with rejected_images carry those images' grids
    packed = _packed(processor, examples)
    one = [processor.image_processor(images=[i], return_tensors="pt")["image_grid_thw"][0].tolist()
           for e in examples for i in e["images"]]
    rejected = [processor.image_processor(images=[i], return_tensors="pt")["image_grid_thw"][0].tolist()
                for e in examples for i in (e.get("rejected_images") or e["images"])]
    assert batch["image_grid_thw"].tolist() == one + rejected
    # video tokens (type 2): both rows of every pair; the packed rows hold each prompt's once
    chosen_prompts = (packed["segment_ids"] == SEGMENT_PROMPT) | (packed["segment_ids"] == SEGMENT_CHOSEN_PROMPT)
    prompt_video_tokens = int(packed["mm_token_type_ids"][chosen_prompts].eq(2).sum())
    assert prompt_video_tokens > 0
    assert int(batch["mm_token_type_ids"].eq(2).sum()) == 2 * prompt_video_tokens


def test_packed_row_order_shared_text_and_each_image_once(models):
    _, processor = models["tiny-qwen3-vl"]
    examples = media_batches()["mixed"]
    batch = _packed(processor, examples)
    unpacked = _unpacked(processor, examples)
    assert batch["rejected_prompt_lengths"].tolist()[:3] == [0, 0, 0]
    assert batch["chosen_prompt_lengths"].tolist()[:3] == [0, 0, 0]
    segments, ids, types = batch["segment_ids"], batch["input_ids"], batch["mm_token_type_ids"]
    real = unpacked["attention_mask"].bool() & (unpacked["completion_mask"] == 0)
    for row in (3, 4):  # image-contrast rows: each side's prompt is TRL's, the shared text stops at the first image
        shared = batch["prompt_lengths"][row].item()
        chosen_side = ids[row][(segments[row] == SEGMENT_PROMPT) | (segments[row] == SEGMENT_CHOSEN_PROMPT)]
        rejected_side = ids[row][(segments[row] == SEGMENT_PROMPT) | (segments[row] == SEGMENT_REJECTED_PROMPT)]
        assert torch.equal(chosen_side, unpacked["input_ids"][row][real[row]])
        assert torch.equal(rejected_side, unpacked["input_ids"][5 + row][real[5 + row]])
        assert shared > 0 and types[row, :shared].ne(1).all() and types[row, shared] == 1
    assert types[4, : batch["prompt_lengths"][4]].eq(2).any()  # row 4's video lies in the shared part
    # images: row by row, a row's prompt images then its rejected prompt's
    order = [i for e in examples for i in e["images"] + (e.get("rejected_images") or [])]
    expected = [processor.image_processor(images=[i], return_tensors="pt")["image_grid_thw"][0].tolist() for i in order]
    assert batch["image_grid_thw"].tolist() == expected
    # each clip once: the plain video pair's, and row 4's (before the first image, so shared by both sides)
    assert batch["video_grid_thw"].shape[0] == 2
    assert batch["pixel_values_videos"].shape[0] == int(batch["video_grid_thw"].prod(dim=-1).sum())
    # a video after the first image is in both prompt parts: once per side
    after = _packed(processor, media_batches()["rejected_images"][3:])
    assert after["video_grid_thw"].shape[0] == 2 and after["prompt_lengths"][0] > 0


@pytest.mark.parametrize("family", MEDIA_FAMILIES)
def test_image_contrast_mrope_positions_equal_separate_rows(models, family):
    model, processor = models[family]
    example = media_batches()["mixed"][4]  # image + video, rejected image of another size
    batch = _packed(processor, [example])
    positions = packed_position_ids(model, batch)[:, 0]
    segments = batch["segment_ids"][0]
    separate = _unpacked(processor, [example])
    sides = {0: (SEGMENT_CHOSEN_PROMPT, SEGMENT_CHOSEN), 1: (SEGMENT_REJECTED_PROMPT, SEGMENT_REJECTED)}
    for row, (own_prompt, answer) in sides.items():  # rows [prompt, chosen] and [prompt, rejected]
        real = separate["attention_mask"][row].bool()
        extra = {}
        if "second_per_grid_ts" in separate:
            extra["second_per_grid_ts"] = separate["second_per_grid_ts"][row : row + 1]
        expected, _ = model.model.get_rope_index(
            separate["input_ids"][row : row + 1], mm_token_type_ids=separate["mm_token_type_ids"][row : row + 1],
            image_grid_thw=separate["image_grid_thw"][row : row + 1],
            video_grid_thw=separate["video_grid_thw"][row : row + 1],
            attention_mask=separate["attention_mask"][row : row + 1], **extra)
        side = (segments == SEGMENT_PROMPT) | (segments == own_prompt) | (segments == answer)
        assert torch.equal(positions[:, side], expected[:, 0, real]), row
    # the raw rope index over the whole row has the rejected side off by one constant (on all three rows)
    raw = packed_position_ids(model, batch, renumber_rejected=False)[:, 0]
    rejected_side = (segments == SEGMENT_REJECTED_PROMPT) | (segments == SEGMENT_REJECTED)
    shift = (raw[:, rejected_side] - positions[:, rejected_side]).unique()
    assert shift.numel() == 1 and shift.item() > 0


def test_max_length_cuts_each_side_like_trl(models):
    """Each answer is cut so that its own prompt + answer fits (the rejected prompt here is shorter)."""
    model, processor = models["tiny-qwen3-vl"]
    examples = media_batches()["rejected_images"][:1]  # rejected image has fewer tokens than the chosen one
    full = _packed(processor, examples)
    shared = full["prompt_lengths"].item()
    prompt = shared + full["chosen_prompt_lengths"].item()
    rejected_prompt = shared + full["rejected_prompt_lengths"].item()
    assert rejected_prompt < prompt
    max_length = prompt + 2
    batch = PackedPreferenceCollator(processor, max_length=max_length)(copy.deepcopy(examples))
    assert batch["chosen_lengths"].tolist() == [2]
    assert batch["rejected_lengths"].item() == min(full["rejected_lengths"].item(), max_length - rejected_prompt) > 2
    with torch.no_grad():
        chosen, rejected = separate_logps(model, VisionPreferenceCollator(processor, max_length=max_length)(
            copy.deepcopy(examples)))
        packed = packed_logps(model, batch)
    torch.testing.assert_close(packed.chosen, chosen, atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(packed.rejected, rejected, atol=TOLERANCE, rtol=0)


# --- negative checks: the comparison catches a wrong mask or wrong positions --------------------

def _rejected_error(model, processor, examples, **overrides):
    with torch.no_grad():
        _, truth = per_sequence_batch(model, processor, examples)
        batch = _packed(processor, examples)
        packed = packed_logps(model, batch, **{k: f(model, batch) for k, f in overrides.items()})
    return (packed.rejected - truth).abs().max().item()


def _rejected_side_sees_chosen_side(model, batch):
    segments = batch["segment_ids"]
    query, key = segments[:, :, None], segments[:, None, :]
    leak = ((query == SEGMENT_REJECTED_PROMPT) | (query == SEGMENT_REJECTED)) & (
        (key == SEGMENT_CHOSEN_PROMPT) | (key == SEGMENT_CHOSEN))
    causal = torch.ones(segments.shape[1], segments.shape[1], dtype=torch.bool).tril()
    return to_model_mask(packed_allowed(segments) | (leak & causal)[:, None], model.config._attn_implementation,
                         torch.float32)


def _rejected_answer_not_renumbered_with_its_prompt(model, batch):
    positions = packed_position_ids(model, batch)
    answer = batch["segment_ids"] == SEGMENT_REJECTED
    return positions + 7 * answer[None].long()  # breaks the distance between the rejected prompt and answer


@pytest.mark.parametrize("kind", ["rejected_images", "video"])
def test_wrong_mask_or_positions_fail_the_comparison(models, kind):
    model, processor = models["tiny-qwen3-vl"]
    examples = media_batches()[kind]
    assert _rejected_error(model, processor, examples) < TOLERANCE
    assert _rejected_error(model, processor, examples,
                           position_ids=_rejected_answer_not_renumbered_with_its_prompt) > 10 * TOLERANCE
    if kind == "rejected_images":
        leaking = _rejected_error(model, processor, examples, attention_mask=_rejected_side_sees_chosen_side)
        assert leaking > 10 * TOLERANCE


def test_rejected_answer_after_a_long_video_follows_the_last_prompt_token(models):
    """Qwen2.5-VL numbers a video's time axis past the text after it: counting from the prompt's largest
    position (instead of its last token's) shifts the rejected answer, and the comparison catches it."""
    model, processor = models["tiny-qwen2.5-vl"]
    examples = media_batches()["video"][2:]
    batch = _packed(processor, examples)
    raw = packed_position_ids(model, batch, renumber_rejected=False)
    prompt = batch["prompt_lengths"][0].item()
    assert raw[:, 0, :prompt].max() > raw[0, 0, prompt - 1]  # the case: the video reaches past the text after it

    def from_largest_position(model, batch):
        positions = packed_position_ids(model, batch)
        rejected = batch["segment_ids"] == SEGMENT_REJECTED
        order = rejected.long().cumsum(dim=1) - 1
        positions[:, rejected] = raw[:, 0, :prompt].max() + 1 + order[rejected]
        return positions

    assert _rejected_error(model, processor, examples) < TOLERANCE
    assert _rejected_error(model, processor, examples, position_ids=from_largest_position) > 10 * TOLERANCE


def test_sharing_placeholder_tokens_fails_the_comparison(models, monkeypatch):
    """Equal placeholder ids are not equal inputs: sharing the common token prefix past the text cannot pass."""
    import nbtools.packing.layout as layout

    model, processor = models["tiny-qwen3-vl"]
    examples = media_batches()["rejected_images"][2:3]  # same-size images: identical ids through the image tokens

    def common_prefix(first, second, first_types, placeholders):
        common = next((i for i, (a, b) in enumerate(zip(first, second)) if a != b), min(len(first), len(second)))
        return min(common, len(second) - 1)  # (the whole prompt here; keep one token on each side)

    assert _rejected_error(model, processor, examples) < TOLERANCE
    monkeypatch.setattr(layout, "shared_prefix_length", common_prefix)
    # the rejected image's placeholders would go to the chosen image's features: the model refuses
    with pytest.raises(ValueError, match="Image features and image tokens do not match"):
        _rejected_error(model, processor, examples)


# --- DPO losses and LoRA gradients --------------------------------------------------------------

def _per_sequence_loss(peft_model, processor, examples):
    chosen, rejected = per_sequence_batch(peft_model, processor, examples)
    with torch.no_grad(), peft_model.disable_adapter():
        ref_chosen, ref_rejected = per_sequence_batch(peft_model, processor, examples)
    return pair_losses(chosen, rejected, ref_chosen, ref_rejected, beta=BETA).mean()


def _unpacked_loss(peft_model, processor, examples):
    batch = _unpacked(processor, examples)
    chosen, rejected = separate_logps(peft_model, batch)
    with torch.no_grad(), peft_model.disable_adapter():
        ref_chosen, ref_rejected = separate_logps(peft_model, batch)
    return pair_losses(chosen, rejected, ref_chosen, ref_rejected, beta=BETA).mean()


@pytest.mark.slow
@pytest.mark.parametrize("family", MEDIA_FAMILIES)
def test_dpo_loss_and_lora_gradients_agree_on_a_mixed_batch(models, family):
    model, processor = models[family]
    peft_model = _lora_model(model)
    examples = media_batches()["mixed"]
    results = {}
    for name, compute in (("per_sequence", lambda: _per_sequence_loss(peft_model, processor, examples)),
                          ("unpacked", lambda: _unpacked_loss(peft_model, processor, examples)),
                          ("packed", lambda: packed_dpo_step(peft_model, _packed(processor, examples),
                                                             beta=BETA).loss)):
        peft_model.zero_grad()
        loss = compute()
        loss.backward()
        results[name] = (loss.detach(), _lora_grads(peft_model))
    truth_loss, truth_grads = results["per_sequence"]
    assert abs(truth_loss.item() - math.log(2)) > 5 * TOLERANCE and len(truth_grads) > 0  # the adapter moved the policy
    for name in ("unpacked", "packed"):
        loss, grads = results[name]
        torch.testing.assert_close(loss, truth_loss, atol=TOLERANCE, rtol=0, msg=name)
        assert grads.keys() == truth_grads.keys()
        for parameter in truth_grads:
            assert truth_grads[parameter].abs().max() > 0, parameter
            torch.testing.assert_close(grads[parameter], truth_grads[parameter], atol=TOLERANCE, rtol=1e-3,
                                       msg=f"{name}: {parameter}")


# --- images and videos encoded once per step ---------------------------------------------------

def test_images_and_videos_encoded_once_per_packed_step(models):
    model, processor = models["tiny-qwen3-vl"]
    peft_model = _lora_model(model)
    examples = media_batches()["mixed"]
    batch = _packed(processor, examples)
    grids = batch["image_grid_thw"].shape[0] + batch["video_grid_thw"].shape[0]
    # pictures in row order: red; blue, green (pair 4's two sides); green, small (pair 5's): green is encoded once
    assert batch["image_copies"].tolist() == [0, 1, 2, 2, 4] and "video_copies" not in batch
    counter = EncodingCounter()
    with counter.watch(peft_model):
        reused = packed_dpo_step(peft_model, batch, beta=BETA)
    assert reused.reused_image_features and counter.images == grids - 1
    counter = EncodingCounter()
    with counter.watch(peft_model):
        per_pass = packed_dpo_step(peft_model, batch, beta=BETA, reuse_vision=False)
    assert counter.images == 2 * grids
    torch.testing.assert_close(reused.loss, per_pass.loss, atol=1e-6, rtol=0)
    # the unpacked layout encodes every image and video of a shared prompt twice per forward
    unpacked = _unpacked(processor, examples)
    assert unpacked["image_grid_thw"].shape[0] + unpacked["video_grid_thw"].shape[0] > grids


# --- reference cache key --------------------------------------------------------------------------

def test_cache_key_covers_videos_frame_settings_and_rejected_images(models, tmp_path):
    from nbtools.models import resolve_model_path
    from nbtools.packing import ReferenceLogpsStore, reference_fingerprint
    from nbtools.packing.ref_cache import pair_key

    _, processor = models["tiny-qwen3-vl"]
    fingerprint = reference_fingerprint(resolve_model_path("tiny-qwen3-vl"), processor, max_pixels=64 * 64,
                                        dtype=torch.float32)
    example = media_batches()["mixed"][4]  # image, video and rejected image
    key = pair_key(example, fingerprint)
    assert pair_key(copy.deepcopy(example), fingerprint) == key  # same input, same key
    rebuilt = copy.deepcopy(example)
    rebuilt["videos"] = [make_clip(4, 64, 64, 0)]  # decoded again: same frames, same key
    assert pair_key(rebuilt, fingerprint) == key

    changed = []
    pixel = copy.deepcopy(example)
    pixel["videos"][0].frames[2, 3, 4, 0] ^= 1
    changed.append(("video pixel", pixel))
    for name, settings in (("fps", VideoSettings(fps=1.0)), ("max_frames", VideoSettings(max_frames=8)),
                           ("video_max_pixels", VideoSettings(video_max_pixels=64 * 64))):
        other = copy.deepcopy(example)
        other["videos"][0] = dataclasses.replace(other["videos"][0], settings=settings)
        changed.append((name, other))
    sampled = copy.deepcopy(example)
    sampled["videos"][0].metadata.frames_indices = [0, 1, 2, 3]
    changed.append(("frame indices", sampled))
    rejected = copy.deepcopy(example)
    rejected["rejected_images"][0].putpixel((1, 1), (0, 0, 0))
    changed.append(("rejected image pixel", rejected))
    dropped = copy.deepcopy(example)
    del dropped["rejected_images"]
    changed.append(("no rejected images", dropped))
    swapped = copy.deepcopy(example)
    swapped["images"], swapped["rejected_images"] = swapped["rejected_images"], swapped["images"]
    changed.append(("images swapped with rejected images", swapped))
    keys = {name: pair_key(value, fingerprint) for name, value in changed}
    assert all(value != key for value in keys.values()), keys
    assert len(set(keys.values())) == len(keys)

    # image-only pairs keep the key they had before videos and rejected images existed
    from nbtools.packing.digest import image_bytes
    from nbtools.packing.ref_cache import _sha, _without_nones
    import json

    plain = media_batches()["mixed"][1]
    text = json.dumps({k: _without_nones(plain.get(k)) for k in ("prompt", "chosen", "rejected")}, sort_keys=True,
                      default=str)
    assert pair_key(plain, fingerprint) == _sha(fingerprint.digest(), _sha(text, *map(image_bytes, plain["images"])))

    store = ReferenceLogpsStore(tmp_path)
    store.put(key, -1.0, -2.0)
    chosen, rejected = store.lookup([copy.deepcopy(example)], fingerprint)
    assert (chosen.tolist(), rejected.tolist()) == ([-1.0], [-2.0])  # the same input hits
    for _, value in changed:  # each change misses
        assert store.lookup([value], fingerprint) is None


# --- TRL's own loss on our unpacked batches ----------------------------------------------------

@pytest.mark.slow
def test_trl_trainer_loss_on_unpacked_media_batches_equals_the_packed_step(models, tmp_path):
    """TRL's DPOTrainer passes the video keys through to the model: its loss on our unpacked batch is the packed one."""
    from test_packing import batches
    from test_packing_trainer import _trainer

    model, processor = models["tiny-qwen3-vl"]
    trainer = _trainer(_lora_model(model), processor, batches()["mixed"], tmp_path)  # plain rows: a dataset to build on
    trainer.model.train()
    examples = media_batches()["mixed"]
    metrics = trainer._metrics["train"]

    def loss_and_logps(batch):
        loss = trainer.compute_loss(trainer.model, batch)
        return loss, metrics["logps/chosen"][-1], metrics["logps/rejected"][-1]

    plain = loss_and_logps(_unpacked(processor, examples))
    packed = loss_and_logps(_packed(processor, examples))
    torch.testing.assert_close(packed[0], plain[0], atol=TOLERANCE, rtol=0)
    assert packed[1:] == pytest.approx(plain[1:], abs=TOLERANCE)
    # without the videos' pixels TRL's log-probs differ: the comparison can fail
    broken = _unpacked(processor, examples)
    broken["pixel_values_videos"] = torch.zeros_like(broken["pixel_values_videos"])
    assert abs(loss_and_logps(broken)[1] - plain[1]) > 10 * TOLERANCE
