"""Memory/token estimate: exact arithmetic where it is exact, sane behaviour elsewhere."""

from __future__ import annotations

import pytest

from nbtools.estimate import (
    ADAMW_BYTES_PER_PARAM,
    GIB,
    count_parameters,
    estimate_memory,
    lora_parameter_count,
    weight_bytes,
)
from nbtools.images import VISION_MARKERS
from nbtools.models import load_model_and_processor
from nbtools.models.lora import parameter_report

QWEN3_VL_4B = "Qwen/Qwen3-VL-4B-Instruct"  # built from written-in dimensions, no download
IMAGE = 784 + VISION_MARKERS  # one 896x896 image in the prompt: (896 / 32)^2 image tokens + vision start/end
# The reference setup: LoRA r=8, 4 pairs of 896x896 images, ~100-token answers, checkpointing on.
REFERENCE = dict(
    batch_size=4, max_context_length=2048, max_pixels=896 * 896, lora_rank=8, gradient_checkpointing=True,
    precision="bf16", prompt_text_tokens=30, answer_tokens=100,
)


def test_parameter_counts_match_the_real_tiny_model():
    model, _ = load_model_and_processor("tiny-qwen3-vl")
    report = parameter_report(model)["components"]
    counts = count_parameters("tiny-qwen3-vl")
    for component in ("vision", "projector", "language_model", "lm_head"):
        assert getattr(counts, component) == report[component]["total"], component
    assert counts.total == sum(p.numel() for p in model.parameters())


def test_lora_count_matches_peft():
    from peft import get_peft_model

    from nbtools.models.lora import lora_config

    model, _ = load_model_and_processor("tiny-qwen2.5-vl")
    peft_model = get_peft_model(model, lora_config(model, lora_rank=4))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert lora_parameter_count("tiny-qwen2.5-vl", 4) == trainable


def test_qwen3_vl_4b_exact_parts():
    counts = count_parameters(QWEN3_VL_4B)
    assert counts.total == 4_437_815_808  # tied embeddings: lm_head shares embed_tokens
    assert counts.lm_head == 0
    assert weight_bytes(counts, "bf16") == 2 * 4_437_815_808
    assert weight_bytes(counts, "fp32") == 4 * 4_437_815_808
    # r x (in + out) per projection: q 2560->4096, k/v 2560->1024, o 4096->2560, gate/up 2560->9728, down 9728->2560
    per_layer = 8 * ((2560 + 4096) + 2 * (2560 + 1024) + (4096 + 2560) + 2 * (2560 + 9728) + (9728 + 2560))
    assert lora_parameter_count(QWEN3_VL_4B, 8) == 36 * per_layer == 16_515_072

    est = estimate_memory(QWEN3_VL_4B, **REFERENCE)
    assert est.weights_bytes == 2 * 4_437_815_808
    assert est.lora_params == 16_515_072
    assert est.optimizer_bytes == ADAMW_BYTES_PER_PARAM * 16_515_072
    assert est.lora_weights_bytes == est.lora_grad_bytes == 4 * 16_515_072
    assert est.total_bytes == (
        est.weights_bytes + est.lora_weights_bytes + est.lora_grad_bytes + est.optimizer_bytes
        + est.activation_bytes + est.attention_bytes + est.reference_pass_bytes + est.logits_bytes
    )
    assert est.image_tokens_per_image == IMAGE
    assert est.tokens_per_image == "786 tokens per image (784 image tokens + vision start/end)"
    assert est.tokens_per_sequence == 30 + IMAGE + 100
    assert est.sequences_per_step == 8  # chosen + rejected


def test_reference_setup_is_near_the_measured_peak():
    """Plain TRL measured 11.9 GiB peak allocated (8.3 GiB weights) on an H200 for this setup."""
    est = estimate_memory(QWEN3_VL_4B, gpu_memory_gib=141, **REFERENCE)
    assert abs(est.weights_bytes / GIB - 8.3) < 0.05
    assert 10.7 < est.total_gib < 13.1  # within 10% of the measurement
    assert est.fits is True and est.advice == []


def test_checkpointing_and_advice():
    off = estimate_memory(QWEN3_VL_4B, **{**REFERENCE, "gradient_checkpointing": False}, gpu_memory_gib=24)
    on = estimate_memory(QWEN3_VL_4B, **REFERENCE, gpu_memory_gib=24)
    assert off.activation_bytes == on.activation_bytes_without_checkpointing > 10 * on.activation_bytes
    assert off.fits is False and on.fits is True
    assert off.advice[0].startswith("turn on gradient_checkpointing")
    assert any("max_pixels" in tip for tip in off.advice)
    assert any("4-bit" in tip for tip in off.advice)
    text = off.format()
    assert "fits in 24 GiB: NO" in text and "advice: turn on gradient_checkpointing" in text


def test_batch_size_advice_names_a_fitting_value():
    est = estimate_memory(QWEN3_VL_4B, **{**REFERENCE, "batch_size": 16}, gpu_memory_gib=16)
    tip = next(t for t in est.advice if t.startswith("lower batch_size to"))
    fitting = int(tip.split()[3])
    assert 1 <= fitting < 16
    assert estimate_memory(QWEN3_VL_4B, **{**REFERENCE, "batch_size": fitting}, gpu_memory_gib=16).fits


def test_quantization_shrinks_linear_weights_only():
    counts = count_parameters(QWEN3_VL_4B)
    q4 = weight_bytes(counts, "bf16", "4bit")
    non_linear = counts.total - counts.linear
    assert q4 < weight_bytes(counts, "bf16") / 2.5
    assert q4 > non_linear * 2  # embeddings and norms stay in bf16
    with pytest.raises(ValueError, match="quantization must be None, '4bit' or '8bit'"):
        weight_bytes(counts, "bf16", "3bit")


def test_images_longer_than_context_are_flagged():
    est = estimate_memory(QWEN3_VL_4B, **{**REFERENCE, "max_context_length": 512})
    assert est.tokens_per_sequence == 512
    assert est.advice[0].startswith(f"images alone take {IMAGE} tokens, more than max_context_length=512")


# --- image-contrast rows and mDPO's contrast pairs ---------------------------------------------------------

PACKED = dict(REFERENCE, packing=True, precompute_reference=True)


def test_image_contrast_rows_count_their_second_prompt():
    plain = estimate_memory(QWEN3_VL_4B, **PACKED)
    contrast = estimate_memory(QWEN3_VL_4B, **PACKED, rejected_images_per_pair=1)
    assert plain.tokens_per_sequence == 30 + IMAGE + 2 * 100
    # [prompt, chosen, rejected prompt (text + its own image), rejected]
    assert contrast.second_prompt_tokens == 30 + IMAGE
    assert contrast.tokens_per_sequence == plain.tokens_per_sequence + 30 + IMAGE
    assert contrast.tokens_per_step == 4 * contrast.tokens_per_sequence
    assert contrast.activation_bytes > plain.activation_bytes and contrast.total_bytes > plain.total_bytes
    assert f"a second prompt of {30 + IMAGE} tokens" in contrast.format()
    # unpacked, TRL's rejected sequence starts with its own prompt: the longer of the two counts
    unpacked = estimate_memory(QWEN3_VL_4B, **REFERENCE, rejected_images_per_pair=2)
    assert unpacked.tokens_per_sequence == 30 + 2 * IMAGE + 100


@pytest.mark.parametrize("lean", [True, False])
def test_mdpo_contrast_pairs_add_rows_to_the_step(lean):
    plain = estimate_memory(QWEN3_VL_4B, **PACKED)
    mdpo = estimate_memory(QWEN3_VL_4B, **PACKED, auxiliary_pairs=1.0, lean_contrast_rows=lean)
    assert mdpo.auxiliary_rows == 4 and mdpo.sequences_per_step == 8
    one_side = 30 + IMAGE + 100  # [corrupted prompt, chosen]
    assert mdpo.tokens_per_step == plain.tokens_per_step + 4 * (one_side if lean else 2 * one_side)
    assert mdpo.activation_bytes > plain.activation_bytes and mdpo.logits_bytes >= plain.logits_bytes
    assert mdpo.total_bytes > plain.total_bytes
    assert estimate_memory(QWEN3_VL_4B, **REFERENCE, auxiliary_pairs=1.0).sequences_per_step == 8  # mDPO: packed only


def test_the_form_estimate_counts_contrast_rows_and_mdpo_pairs(tmp_path):
    import json

    from PIL import Image

    from nbtools.config import RunConfig
    from nbtools.data import validate_dataset
    from nbtools.widgets.estimate_view import data_facts, estimate_html

    for name, colour in (("a.png", "red"), ("b.png", "blue")):
        Image.new("RGB", (64, 64), colour).save(tmp_path / name)
    rows = [{"prompt": "<image>What colour?", "chosen": "Red.", "rejected": "Blue.", "images": ["a.png"]},
            {"prompt": "<image>What colour?", "chosen": "Red.", "rejected": "Red.", "images": ["a.png"],
             "rejected_images": ["b.png"]},
            {"prompt": "Say hi.", "chosen": "Hi.", "rejected": "No."}]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = RunConfig(model="tiny-qwen3-vl", train_file=str(train), validation_split=0.0)
    facts = data_facts(config)
    assert facts.max_rejected_images_per_pair == 1
    counted = validate_dataset(train, model="tiny-qwen3-vl", max_pixels=config.max_pixels).tokens
    first, contrast, text_only = (counted[line] for line in (1, 2, 3))
    # packed: the prompt once and both answers; the contrast row adds the rejected answer's own prompt
    assert facts.epoch.packed == sum(t.prompt + t.chosen + t.rejected for t in (first, contrast, text_only)) \
        + contrast.rejected_prompt
    # unpacked: each answer after its prompt (same-size images on both sides: the second prompt costs the same)
    assert facts.epoch.rows == sum(t.prompt + t.chosen + t.rejected_prompt + t.rejected
                                   for t in (first, contrast, text_only))
    assert facts.epoch.contrast_side == first.prompt + first.chosen + contrast.prompt + contrast.chosen  # with images
    plain = estimate_html(config, None)
    assert "the rejected answer's own prompt where a pair has rejected_images" in plain
    mdpo = estimate_html(config.replace(loss_type=["sigmoid", "mdpo_conditional"]), None)
    assert "2 of them mDPO image-contrast pairs" in mdpo  # batch_size 2: one contrast row per pair, worst case

    def tokens(html):
        return int(html.split("about ")[1].split(" tokens per epoch")[0].replace(",", ""))

    from nbtools.estimate import collator_lays_out_lean_contrast_rows

    sides = 1 if collator_lays_out_lean_contrast_rows() else 2
    assert tokens(plain) == facts.epoch.packed
    assert tokens(mdpo) == facts.epoch.packed + sides * facts.epoch.contrast_side
    assert tokens(estimate_html(config.replace(packing=False), None)) == facts.epoch.rows  # mDPO rows: packed only
