"""LoRA placement (by module name, per family), include_vision, specs, and the parameter report."""

from __future__ import annotations

import re

import pytest
import torch

from nbtools.models import detect_family, load_model_and_processor
from nbtools.models.lora import (
    DEFAULT_PROJECTIONS,
    LoraTargetError,
    lora_config,
    parameter_report,
    resolve_target_modules,
)

FAMILY_IDS = ["tiny-qwen3-vl", "tiny-qwen2.5-vl", "tiny-qwen2-vl", "tiny-llava"]
LM_PREFIX = "model.language_model.layers."


@pytest.fixture(scope="module")
def models():
    return {model_id: load_model_and_processor(model_id)[0] for model_id in FAMILY_IDS}


def _peft(model, **kwargs):
    import copy

    from peft import get_peft_model

    return get_peft_model(copy.deepcopy(model), lora_config(model, **kwargs))


def _lora_wrapped(peft_model) -> list[str]:
    return sorted(
        re.sub(r"^base_model\.model\.", "", n[: -len(".lora_A")])
        for n, _ in peft_model.named_modules()
        if n.endswith(".lora_A")
    )


@pytest.mark.parametrize("model_id", FAMILY_IDS)
def test_default_lands_on_language_model_projections_only(models, model_id):
    model = models[model_id]
    layers = model.config.get_text_config().num_hidden_layers
    expected = sorted(f"{LM_PREFIX}{i}.{part}" for i in range(layers) for part in
                      ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                       "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"])
    assert sorted(resolve_target_modules(model, "default")) == expected
    peft_model = _peft(model)
    assert _lora_wrapped(peft_model) == expected
    report = parameter_report(peft_model)
    for component in ("vision", "projector", "lm_head"):
        assert report["components"][component]["trainable"] == 0, component
    assert report["components"]["language_model"]["trainable"] == report["trainable"] > 0


def test_all_linear_follows_the_language_model_rule(models):
    model = models["tiny-qwen3-vl"]
    family = detect_family(model)
    names = resolve_target_modules(model, "all-linear")
    assert names and all(family.component_of(n) == "language_model" for n in names)
    assert "lm_head" not in names
    linear_lm = [n for n, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and family.component_of(n) == "language_model"]
    assert names == linear_lm


def test_include_vision_adds_vision_and_projector_and_warns(models):
    model = models["tiny-qwen3-vl"]
    family = detect_family(model)
    with pytest.warns(UserWarning, match="serve the merged model"):
        config = lora_config(model, "all-linear", include_vision=True)
    names = resolve_target_modules(model, "all-linear", include_vision=True)
    components = {family.component_of(n) for n in names}
    assert components == {"vision", "projector", "language_model"}
    assert "model.visual.blocks.0.attn.qkv" in names
    assert "model.visual.merger.linear_fc1" in names
    from peft import get_peft_model
    import copy

    peft_model = get_peft_model(copy.deepcopy(model), config)
    report = parameter_report(peft_model)
    assert report["components"]["vision"]["trainable"] > 0
    assert report["components"]["projector"]["trainable"] > 0
    assert report["components"]["lm_head"]["trainable"] == 0


def test_list_and_regex_specs(models):
    model = models["tiny-qwen2-vl"]
    names = resolve_target_modules(model, ["q_proj", "v_proj"])
    assert names == [f"{LM_PREFIX}{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")]
    regex = resolve_target_modules(model, r".*layers\.1\.mlp\.(up|down)_proj")
    assert regex == [f"{LM_PREFIX}1.mlp.up_proj", f"{LM_PREFIX}1.mlp.down_proj"]
    everything = resolve_target_modules(model, r".*")
    assert "lm_head" not in everything and not any(n.startswith("model.visual") for n in everything)


def test_bad_specs_get_clear_errors(models):
    model = models["tiny-qwen3-vl"]
    with pytest.raises(LoraTargetError, match=r"target_modules=\['qkv'\] matches no Linear module of the language model"):
        resolve_target_modules(model, ["qkv"])  # a vision-only name without include_vision
    with pytest.raises(LoraTargetError, match="regex '\\(' is invalid"):
        resolve_target_modules(model, "(")
    with pytest.raises(LoraTargetError, match="must be 'default', 'all-linear'"):
        resolve_target_modules(model, 3)
    with pytest.raises(LoraTargetError, match="lora_rank must be a positive integer"):
        lora_config(model, lora_rank=0)


def test_lora_hyperparameters(models):
    config = lora_config(models["tiny-qwen3-vl"], lora_rank=4)
    assert (config.r, config.lora_alpha, config.lora_dropout) == (4, 8, 0.05)
    assert lora_config(models["tiny-qwen3-vl"], lora_rank=16, lora_alpha=8).lora_alpha == 8


def test_parameter_report_sums(models):
    model = models["tiny-qwen3-vl"]
    report = parameter_report(model)
    total = sum(p.numel() for p in model.parameters())
    assert report["total"] == total
    assert sum(r["total"] for r in report["components"].values()) == total
    assert report["trainable"] == total and report["trainable_pct"] == 100.0
    assert report["components"]["lm_head"]["total"] == model.lm_head.weight.numel()
    assert report["components"]["vision"]["total"] == sum(
        p.numel() for n, p in model.named_parameters() if n.startswith("model.visual.blocks")
        or n.startswith("model.visual.patch_embed") or n.startswith("model.visual.pos_embed")
    )

    peft_model = _peft(model, lora_rank=8)
    peft_report = parameter_report(peft_model)
    lora_params = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    assert peft_report["trainable"] == lora_params
    assert peft_report["total"] == total + lora_params  # base weights unchanged, adapters added
    # rank x (in + out) for each of the 7 projections in both layers (hidden 128, q 128, kv 64, mlp 256)
    assert lora_params == 2 * 8 * ((128 + 128) + 2 * (128 + 64) + (128 + 128) + 2 * (128 + 256) + (256 + 128))
    assert "language_model" in peft_report["table"] and "%" in peft_report["table"]


def test_default_projection_names_are_the_usual_ones():
    assert DEFAULT_PROJECTIONS == ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
