"""Contract tests for packed DPO pairs: packed == separate (TRL layout) log-probs, losses and LoRA
gradients, on the tiny models in fp32; plus negative checks that a wrong mask or wrong positions
are caught, image-feature reuse, and the reference-log-prob cache."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from PIL import Image

from nbtools.packing import (
    EncodingCounter,
    PackedPreferenceCollator,
    ReferenceLogpsStore,
    packed_dpo_step,
    packed_logps,
    pair_losses,
    packing_supported,
    precompute_reference_logps,
    reference_fingerprint,
    separate_logps,
    vision_features_reusable,
)
from nbtools.packing.layout import SEGMENT_CHOSEN, SEGMENT_PROMPT, SEGMENT_REJECTED, pack_pieces, PackedPieces
from nbtools.packing.mask import packed_allowed, packed_attention_mask, to_model_mask
from nbtools.packing.positions import packed_position_ids
from nbtools.packing.ref_cache import pair_key

TOLERANCE = 1e-4
FAMILIES = ["tiny-qwen3-vl", "tiny-qwen2.5-vl", "tiny-qwen2-vl", "tiny-llava"]
BETA = 0.1


def _image(width: int, height: int, colour: tuple[int, int, int]) -> Image.Image:
    image = Image.new("RGB", (width, height), colour)
    # some structure so different positions give different features
    for x in range(0, width, 7):
        for y in range(0, height, 5):
            image.putpixel((x, y), ((x * 3) % 256, (y * 5) % 256, (x + y) % 256))
    return image


def _pair(prompt, chosen, rejected, images=()):
    return {
        "images": list(images),
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def _user(text):
    return [{"role": "user", "content": text}]


def batches() -> dict[str, list[dict]]:
    red, green, blue = _image(64, 96, (200, 30, 30)), _image(128, 64, (20, 180, 40)), _image(96, 96, (30, 30, 220))
    multi_turn = [
        {"role": "user", "content": "What is in the picture?"},
        {"role": "assistant", "content": "A shape."},
        {"role": "user", "content": "What colour is it?"},
    ]
    return {
        "no_images": [
            _pair(_user("Say yes or no."), "yes", "no, certainly not, never"),
            _pair(multi_turn, "It is a red square on white, I think.", "blue"),
        ],
        "one_image": [
            _pair(_user("What colour is the shape?"), "It is red.", "It is a blue one, very blue.", images=[red]),
            _pair(multi_turn, "green", "The shape is purple and it is large.", images=[green]),
        ],
        "two_images": [
            _pair(_user("Which image is red?"), "The first one.", "The second.", images=[red, blue]),
            _pair(multi_turn, "Both are bright.", "No idea at all, sorry.", images=[green, red]),
        ],
        "mixed": [
            _pair(_user("What colour is the shape?"), "It is red.", "It is a blue one, very blue.", images=[red]),
            _pair(multi_turn, "green and blue", "no", images=[green, blue]),
            _pair(_user("Just text here."), "fine", "not fine at all, really"),
        ],
    }


@pytest.fixture(scope="session")
def models():
    """Tiny models in fp32 (sdpa), loaded once."""
    from nbtools.models import load_model_and_processor

    loaded = {}
    for name in FAMILIES:
        torch.manual_seed(0)
        model, processor = load_model_and_processor(name, dtype=torch.float32, device="cpu", attn_implementation="sdpa")
        loaded[name] = (model.eval(), processor)
    return loaded


def _separate_batch(processor, examples):
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    return DataCollatorForVisionPreference(processor)(copy.deepcopy(examples))


# --- mask and positions, without a model -------------------------------------------------------

def test_mask_rules_on_a_small_row():
    # prompt 2, chosen 2, rejected 2, padding 1
    segments = torch.tensor([[1, 1, 2, 2, 3, 3, 0]])
    allowed = packed_allowed(segments)[0, 0].int()
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0, 0],
            [1, 1, 0, 0, 1, 0, 0],  # rejected: prompt + itself, never chosen
            [1, 1, 0, 0, 1, 1, 0],
            [0, 0, 0, 0, 0, 0, 1],  # padding: only itself
        ]
    )
    assert torch.equal(allowed, expected)


def test_eager_mask_is_additive_and_sdpa_mask_is_boolean():
    segments = torch.tensor([[1, 2, 3, 0]])
    sdpa = packed_attention_mask(segments, "sdpa", torch.float32)
    eager = packed_attention_mask(segments, "eager", torch.float32)
    assert sdpa.dtype == torch.bool
    assert eager.dtype == torch.float32
    assert torch.equal(eager == 0, sdpa)
    assert eager.min().item() == torch.finfo(torch.float32).min
    with pytest.raises(ValueError, match="packing needs attn_implementation 'sdpa' or 'eager', got 'flash_attention_2'"):
        to_model_mask(packed_allowed(segments), "flash_attention_2", torch.float32)


def test_pack_pieces_layout_and_right_padding():
    batch = pack_pieces(
        [PackedPieces([5, 6, 7], [8], [9, 10]), PackedPieces([5], [8, 8], [9])], pad_token_id=0
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10], [5, 8, 8, 9, 0, 0]]
    assert batch["segment_ids"].tolist() == [[1, 1, 1, 2, 3, 3], [1, 2, 2, 3, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1] * 6, [1, 1, 1, 1, 0, 0]]
    with pytest.raises(ValueError, match="pair 1: the prompt is empty"):
        pack_pieces([PackedPieces([1], [2], [3]), PackedPieces([], [2], [3])], pad_token_id=0)


# --- equivalence with separate rows ------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["no_images", "one_image", "two_images", "mixed"])
def test_packed_logps_equal_separate_rows(models, family, kind):
    model, processor = models[family]
    examples = batches()[kind]
    with torch.no_grad():
        chosen, rejected = separate_logps(model, _separate_batch(processor, examples))
        packed = packed_logps(model, PackedPreferenceCollator(processor)(copy.deepcopy(examples)))
    torch.testing.assert_close(packed.chosen, chosen, atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(packed.rejected, rejected, atol=TOLERANCE, rtol=0)


# system prompt + 1 image, 2 images, multi-turn with 2 images, multi-turn text-only, system + text-only
SHOWCASE_LINES = (0, 9, 10, 13, 14)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["tiny-qwen3-vl", "tiny-qwen2.5-vl"])
def test_packed_logps_equal_separate_rows_on_showcase_data(models, family):
    """The data layer's own examples (structured content, image placeholders, system prompts)."""
    from nbtools.data.convert import to_training_example
    from nbtools.data.load import load_records
    from nbtools.models import load_processor

    model, _ = models[family]
    max_pixels = 64 * 64
    processor = load_processor(family, max_pixels=max_pixels)
    records = load_records(Path(__file__).resolve().parents[1] / "data_samples/showcase/pairs.jsonl").records
    family_name = model.config.model_type
    examples = [to_training_example(records[i], max_pixels=max_pixels, family=family_name) for i in SHOWCASE_LINES]
    assert [len(e["images"]) for e in examples] == [1, 2, 2, 0, 0]
    with torch.no_grad():
        chosen, rejected = separate_logps(model, _separate_batch(processor, examples))
        packed = packed_logps(model, PackedPreferenceCollator(processor)(copy.deepcopy(examples)))
    torch.testing.assert_close(packed.chosen, chosen, atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(packed.rejected, rejected, atol=TOLERANCE, rtol=0)


def test_packed_rows_are_shorter_than_separate_rows(models):
    _, processor = models["tiny-qwen3-vl"]
    examples = batches()["mixed"]
    packed = PackedPreferenceCollator(processor)(copy.deepcopy(examples))
    separate = _separate_batch(processor, examples)
    assert packed["input_ids"].shape[0] == len(examples)
    assert int(packed["attention_mask"].sum()) < int(separate["attention_mask"].sum())
    assert packed["image_grid_thw"].shape[0] == 3  # each image once
    # TRL's layout feeds every image twice (once per row)
    assert separate["image_grid_thw"].shape[0] == 6
    assert separate["pixel_values"].shape[0] == 2 * packed["pixel_values"].shape[0]


def test_eager_attention_with_additive_mask_equals_separate_rows(models):
    from nbtools.models import load_model_and_processor

    models["tiny-qwen3-vl"]
    model, processor = load_model_and_processor(
        "tiny-qwen3-vl", dtype=torch.float32, device="cpu", attn_implementation="eager"
    )
    examples = batches()["mixed"]
    with torch.no_grad():
        chosen, rejected = separate_logps(model.eval(), _separate_batch(processor, examples))
        packed = packed_logps(model, PackedPreferenceCollator(processor)(copy.deepcopy(examples)))
    torch.testing.assert_close(packed.chosen, chosen, atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(packed.rejected, rejected, atol=TOLERANCE, rtol=0)


def test_max_length_truncates_answers_like_trl(models):
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    model, processor = models["tiny-qwen3-vl"]
    examples = batches()["one_image"]
    max_length = 48  # prompts are 23 and 44 tokens: the second pair's answers are cut to 4 tokens
    trl_batch = DataCollatorForVisionPreference(processor, max_length=max_length)(copy.deepcopy(examples))
    packed_batch = PackedPreferenceCollator(processor, max_length=max_length)(copy.deepcopy(examples))
    assert packed_batch["prompt_lengths"].tolist() == [23, 44]
    assert packed_batch["chosen_lengths"].tolist() == [6, 4]
    assert packed_batch["rejected_lengths"].tolist() == [11, 4]
    with torch.no_grad():
        chosen, rejected = separate_logps(model, trl_batch)
        packed = packed_logps(model, packed_batch)
    torch.testing.assert_close(packed.chosen, chosen, atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(packed.rejected, rejected, atol=TOLERANCE, rtol=0)
    with pytest.raises(ValueError, match=r"pair 1 of the batch: its prompt has 44 tokens \(images included\), which "
                                         r"leaves no room for an answer within max_length=44; raise max_length"):
        PackedPreferenceCollator(processor, max_length=44)(copy.deepcopy(examples))


# --- negative checks: the equivalence test must catch a wrong mask or wrong positions ----------

def _max_rejected_error(model, processor, examples, **overrides):
    with torch.no_grad():
        _, rejected = separate_logps(model, _separate_batch(processor, examples))
        batch = PackedPreferenceCollator(processor)(copy.deepcopy(examples))
        packed = packed_logps(model, batch, **{k: f(model, batch) for k, f in overrides.items()})
    return (packed.rejected - rejected).abs().max().item()


def _mask_rejected_sees_chosen(model, batch):
    segments = batch["segment_ids"]
    allowed = packed_allowed(segments)
    leak = (segments[:, :, None] == SEGMENT_REJECTED) & (segments[:, None, :] == SEGMENT_CHOSEN)
    return to_model_mask(allowed | leak[:, None], model.config._attn_implementation, torch.float32)


def _positions_not_renumbered(model, batch):
    return packed_position_ids(model, batch, renumber_rejected=False)


@pytest.mark.parametrize("family", ["tiny-qwen3-vl", "tiny-llava"])
def test_wrong_mask_fails_the_equivalence_check(models, family):
    model, processor = models[family]
    assert _max_rejected_error(model, processor, batches()["mixed"]) < TOLERANCE
    assert _max_rejected_error(model, processor, batches()["mixed"], attention_mask=_mask_rejected_sees_chosen) > 10 * TOLERANCE


@pytest.mark.parametrize("family", ["tiny-qwen3-vl", "tiny-llava"])
def test_wrong_positions_fail_the_equivalence_check(models, family):
    model, processor = models[family]
    assert _max_rejected_error(model, processor, batches()["mixed"], position_ids=_positions_not_renumbered) > 10 * TOLERANCE


def test_rejected_mrope_positions_equal_those_of_a_separate_row(models):
    model, processor = models["tiny-qwen3-vl"]
    examples = batches()["two_images"][:1]
    batch = PackedPreferenceCollator(processor)(copy.deepcopy(examples))
    positions = packed_position_ids(model, batch)
    assert positions.shape[0] == 3
    segments = batch["segment_ids"][0]
    # the [prompt, rejected] row as TRL builds it, positions from the model's own rope index
    separate = _separate_batch(processor, examples)
    row = 1  # rejected row
    real = separate["attention_mask"][row].bool()
    sep_positions, _ = model.model.get_rope_index(
        separate["input_ids"][row : row + 1], mm_token_type_ids=separate["mm_token_type_ids"][row : row + 1],
        image_grid_thw=separate["image_grid_thw"][:2], attention_mask=separate["attention_mask"][row : row + 1],
    )
    completion = separate["completion_mask"][row].bool()
    expected_rejected = sep_positions[:, 0, completion & real]
    assert torch.equal(positions[:, 0, segments == SEGMENT_REJECTED], expected_rejected)
    prompt_max = positions[:, 0, segments == SEGMENT_PROMPT].max()
    assert positions[:, 0, segments == SEGMENT_REJECTED][:, 0].tolist() == [prompt_max.item() + 1] * 3


# --- losses and LoRA gradients -----------------------------------------------------------------

def _lora_model(model, *, on_vision: bool = False):
    from peft import LoraConfig, get_peft_model

    target = r".*language_model.*\.(q_proj|v_proj)"
    if on_vision:
        target = r".*(language_model.*\.(q_proj|v_proj)|visual.*\.qkv)"
    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules=target, lora_dropout=0.0))
    generator = torch.Generator().manual_seed(0)
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:  # move away from the reference so the loss is not log 2
            parameter.data = torch.randn(parameter.shape, generator=generator) * 0.05
    return peft_model


def _separate_loss(peft_model, processor, examples):
    batch = _separate_batch(processor, examples)
    chosen, rejected = separate_logps(peft_model, batch)
    with torch.no_grad(), peft_model.disable_adapter():
        ref_chosen, ref_rejected = separate_logps(peft_model, batch)
    return pair_losses(chosen, rejected, ref_chosen, ref_rejected, beta=BETA).mean()


def _lora_grads(peft_model):
    return {n: p.grad.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad}


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_dpo_loss_and_lora_gradients_equal_separate_rows(models, family):
    model, processor = models[family]
    peft_model = _lora_model(model)
    examples = batches()["mixed"]

    loss = _separate_loss(peft_model, processor, examples)
    loss.backward()
    expected = _lora_grads(peft_model)
    peft_model.zero_grad()

    result = packed_dpo_step(peft_model, PackedPreferenceCollator(processor)(copy.deepcopy(examples)), beta=BETA)
    result.loss.backward()
    got = _lora_grads(peft_model)

    assert abs(loss.item() - 0.6931) > 1e-3  # the adapter really moved the policy away from the reference
    torch.testing.assert_close(result.loss, loss, atol=TOLERANCE, rtol=0)
    assert expected.keys() == got.keys() and len(got) > 0
    for name in expected:
        assert expected[name].abs().max() > 0, name
        torch.testing.assert_close(got[name], expected[name], atol=TOLERANCE, rtol=1e-3, msg=name)


# --- images encoded once per step --------------------------------------------------------------

def test_images_encoded_once_per_step_when_vision_is_frozen(models):
    model, processor = models["tiny-qwen3-vl"]
    peft_model = _lora_model(model)
    assert vision_features_reusable(peft_model)
    batch = PackedPreferenceCollator(processor)(copy.deepcopy(batches()["mixed"]))
    images = batch["image_grid_thw"].shape[0]

    counter = EncodingCounter()
    with counter.watch(peft_model):
        reused = packed_dpo_step(peft_model, batch, beta=BETA)
    assert reused.reused_image_features and counter.images == images

    counter = EncodingCounter()
    with counter.watch(peft_model):
        per_pass = packed_dpo_step(peft_model, batch, beta=BETA, reuse_vision=False)
    assert not per_pass.reused_image_features and counter.images == 2 * images
    torch.testing.assert_close(reused.loss, per_pass.loss, atol=1e-6, rtol=0)

    # gradient checkpointing's input-grad hooks reach the vision embeddings too; the shared
    # features are still computed without autograd, so no backward runs through the frozen tower
    from nbtools.packing.vision_cache import encode_images

    peft_model.enable_input_require_grads()
    try:
        features = encode_images(peft_model, batch)
        assert not any(f.requires_grad for f in features["image"].pooler_output)
    finally:
        peft_model.disable_input_require_grads()


def test_lora_on_the_vision_tower_falls_back_to_encoding_per_pass(models):
    model, processor = models["tiny-qwen3-vl"]
    peft_model = _lora_model(model, on_vision=True)
    assert not vision_features_reusable(peft_model)
    batch = PackedPreferenceCollator(processor)(copy.deepcopy(batches()["one_image"]))
    counter = EncodingCounter()
    with counter.watch(peft_model):
        result = packed_dpo_step(peft_model, batch, beta=BETA)
    assert not result.reused_image_features and counter.images == 2 * batch["image_grid_thw"].shape[0]
    torch.testing.assert_close(result.loss, _separate_loss(peft_model, processor, batches()["one_image"]), atol=TOLERANCE, rtol=0)


# --- reference log-probs computed once ---------------------------------------------------------

def _fingerprint(processor, max_pixels=256 * 256):
    from nbtools.models import resolve_model_path

    return reference_fingerprint(resolve_model_path("tiny-qwen3-vl"), processor, max_pixels=max_pixels, dtype=torch.float32)


def test_precomputed_reference_gives_the_same_losses_as_on_the_fly(models, tmp_path):
    model, processor = models["tiny-qwen3-vl"]
    peft_model = _lora_model(model)
    examples = batches()["mixed"]
    store = ReferenceLogpsStore(tmp_path / "ref_logps")
    fingerprint = _fingerprint(processor)

    report = precompute_reference_logps(peft_model, examples, PackedPreferenceCollator(processor), store, fingerprint, batch_size=2)
    assert (report.computed, report.reused) == (3, 0)
    again = precompute_reference_logps(peft_model, examples, PackedPreferenceCollator(processor), store, fingerprint)
    assert (again.computed, again.reused) == (0, 3)

    cached_batch = PackedPreferenceCollator(processor, reference_lookup=store.lookup_for(fingerprint))(copy.deepcopy(examples))
    assert "ref_chosen_logps" in cached_batch
    plain_batch = PackedPreferenceCollator(processor)(copy.deepcopy(examples))
    counter = EncodingCounter()
    with counter.watch(peft_model):
        cached = packed_dpo_step(peft_model, cached_batch, beta=BETA)
    assert counter.calls == 1  # policy pass only
    on_the_fly = packed_dpo_step(peft_model, plain_batch, beta=BETA)
    torch.testing.assert_close(cached.loss, on_the_fly.loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(cached.ref_chosen_logps, on_the_fly.ref_chosen_logps, atol=1e-5, rtol=0)
    assert cached.metrics.keys() == on_the_fly.metrics.keys()
    assert {"rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected", "logits/chosen"} <= cached.metrics.keys()


def test_changed_inputs_change_the_cache_key(models, tmp_path):
    _, processor = models["tiny-qwen3-vl"]
    example = batches()["mixed"][0]
    base = _fingerprint(processor)
    key = pair_key(example, base)
    assert pair_key(copy.deepcopy(example), _fingerprint(processor)) == key  # same inputs, same key

    assert pair_key(example, _fingerprint(processor, max_pixels=128 * 128)) != key
    changed_image = copy.deepcopy(example)
    changed_image["images"][0].putpixel((1, 1), (0, 0, 0))
    assert pair_key(changed_image, base) != key
    changed_text = copy.deepcopy(example)
    changed_text["chosen"][0]["content"] += "!"
    assert pair_key(changed_text, base) != key
    import dataclasses

    assert pair_key(example, dataclasses.replace(base, dtype="bfloat16")) != key
    assert pair_key(example, dataclasses.replace(base, starting_adapter="other")) != key

    from datasets import Dataset

    # the trainer's dataset rows (structs unified, images re-decoded) key the same as the raw examples
    assert pair_key(Dataset.from_list([copy.deepcopy(example)])[0], base) == key
    structured = copy.deepcopy(example)
    structured["prompt"] = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]}]
    assert pair_key(Dataset.from_list([copy.deepcopy(structured)])[0], base) == pair_key(structured, base) != key

    store = ReferenceLogpsStore(tmp_path)
    store.put(key, -1.0, -2.0)
    chosen, rejected = store.lookup([example], base)
    assert chosen.tolist() == [-1.0] and rejected.tolist() == [-2.0]
    assert store.lookup([changed_image], base) is None  # a changed input never reuses a stale value


# --- switch ------------------------------------------------------------------------------------

def test_packing_supported_per_family(models):
    model, _ = models["tiny-qwen3-vl"]
    assert packing_supported(model).supported
    from transformers import PretrainedConfig

    other = PretrainedConfig()
    other.model_type = "idefics3"
    support = packing_supported(other)
    assert not support.supported and "model type 'idefics3'" in support.note
    flash = copy.deepcopy(model.config)
    flash._attn_implementation = "flash_attention_2"
    support = packing_supported(flash)
    assert not support.supported and "attn_implementation='flash_attention_2'" in support.note
