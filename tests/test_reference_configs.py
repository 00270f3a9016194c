"""Built-in dimensions of common models: the estimate works offline for them, and each matches its published size."""

from __future__ import annotations

from functools import lru_cache

import pytest

from nbtools.config import RunConfig
from nbtools.models.reference_configs import (HUB_LISTED_BILLIONS, PUBLISHED_PARAMETERS, REFERENCE_CONFIGS,
                                              reference_config, reference_names)

SIZES = sorted(PUBLISHED_PARAMETERS)


def first_name(size: str) -> str:
    return next(n for n in reference_names() if n.startswith(size + "-"))


@lru_cache(maxsize=None)  # each size is built once although two tests count it
def meta_parameter_count(name: str) -> int:
    import torch
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(reference_config(name))
    return sum(p.numel() for p in model.parameters())  # tied embeddings counted once, as in the checkpoint


@pytest.mark.parametrize("size", SIZES)
def test_parameter_count_on_the_meta_device_matches_the_published_total(size):
    name = first_name(size)
    published = PUBLISHED_PARAMETERS[size] * 1e9
    counted = meta_parameter_count(name)
    assert abs(counted - published) / published < 0.01, (name, counted, published)


@pytest.mark.parametrize("size", sorted(HUB_LISTED_BILLIONS))
def test_parameter_count_rounds_to_the_size_the_hub_lists_for_the_official_repo(size):
    counted = meta_parameter_count(first_name(size))
    assert round(counted / 1e9) == HUB_LISTED_BILLIONS[size], (size, counted)


def test_every_size_has_a_published_total_and_its_released_names():
    sizes = {name.rsplit("-", 1)[0] if name.endswith(("-Instruct", "-Thinking")) else name for name in REFERENCE_CONFIGS}
    assert sizes == set(PUBLISHED_PARAMETERS)
    assert set(HUB_LISTED_BILLIONS) <= sizes
    for name in ("Qwen/Qwen3-VL-2B-Instruct", "Qwen/Qwen3-VL-8B-Thinking", "Qwen/Qwen3-VL-4B-Instruct",
                 "Qwen/Qwen3-VL-32B-Instruct", "Qwen/Qwen3-VL-32B-Thinking", "Qwen/Qwen2.5-VL-3B-Instruct",
                 "Qwen/Qwen2.5-VL-7B-Instruct", "Qwen/Qwen2.5-VL-32B-Instruct", "Qwen/Qwen2.5-VL-72B-Instruct",
                 "Qwen/Qwen2-VL-7B-Instruct", "Qwen/Qwen2-VL-72B"):
        assert reference_config(name) is not None, name
    assert reference_config("Qwen/Qwen3-VL-5B-Instruct") is None  # no guessing
    assert reference_config("Qwen/Qwen2.5-VL-7B-Thinking") is None  # Qwen2.5-VL has no Thinking release
    assert reference_config("Qwen/Qwen2.5-VL-7B-Instruct").model_type == "qwen2_5_vl"
    # Instruct and Thinking are the same network
    assert REFERENCE_CONFIGS["Qwen/Qwen3-VL-8B-Instruct"] is REFERENCE_CONFIGS["Qwen/Qwen3-VL-8B-Thinking"]


def test_reference_config_is_a_fresh_copy():
    first = reference_config("Qwen/Qwen3-VL-2B-Instruct")
    first.text_config.hidden_size = 1
    assert reference_config("Qwen/Qwen3-VL-2B-Instruct").text_config.hidden_size == 2048


def test_the_form_estimates_the_model_its_help_names_offline(monkeypatch):
    """Qwen/Qwen3-VL-2B-Instruct (the example in the model field's help) is not in any cache here."""
    from nbtools.widgets.estimate_view import estimate_html

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = RunConfig(model="Qwen/Qwen3-VL-2B-Instruct", train_file="data_samples/shapes/train.jsonl",
                       batch_size=2, max_pixels=262144, max_context_length=1024)
    html = estimate_html(config, 24.0)
    assert "Estimated peak GPU memory per device" in html and "unavailable" not in html
    assert "fits in 24 GiB" in html
    # tokens are estimated (the tokenizer is not cached) and the text says so once, without nested brackets
    assert "estimated at ~4 characters per token: the tokenizer of Qwen/Qwen3-VL-2B-Instruct is not available " \
           "offline" in html
    assert "((" not in html and "))" not in html and "pass a model" not in html


def test_a_bigger_model_needs_more_memory():
    from nbtools.estimate import estimate_memory

    settings = dict(batch_size=1, max_context_length=1024, max_pixels=262144, lora_rank=8,
                    gradient_checkpointing=True, precision="bf16")
    small = estimate_memory("Qwen/Qwen3-VL-2B-Instruct", **settings)
    big = estimate_memory("Qwen/Qwen3-VL-8B-Instruct", **settings)
    assert big.total_gib > 2 * small.total_gib
    # Qwen2.5-VL (another model type) is estimated offline too
    assert estimate_memory("Qwen/Qwen2.5-VL-7B-Instruct", **settings).total_gib > \
        1.5 * estimate_memory("Qwen/Qwen2.5-VL-3B-Instruct", **settings).total_gib
