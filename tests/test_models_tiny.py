"""Built-in tiny models: offline build, loading through the user-facing call, forward + generate."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image

from nbtools.models import (
    TINY_MODEL_IDS,
    detect_family,
    load_model_and_processor,
    load_processor,
    resolve_model_path,
)
from nbtools.models.tiny import BUILD_VERSION, MARKER_FILE, TINY_SPECS, build_tiny_model
from nbtools.models.tokenizer import QWEN_PLAIN_ADDED_TOKENS, QWEN_SPECIAL_TOKENS

RANDOM_IDS = ["tiny-qwen3-vl", "tiny-qwen2.5-vl", "tiny-qwen2-vl", "tiny-llava"]
EXPECTED_FAMILY = {
    "tiny-qwen3-vl": "qwen3_vl",
    "tiny-qwen2.5-vl": "qwen2_5_vl",
    "tiny-qwen2-vl": "qwen2_vl",
    "tiny-llava": "llava",
}
# 128x128 image: Qwen3-VL 32 px per token -> 4x4; Qwen2(.5)-VL 28 px -> 140/28 = 5x5; LLaVA fixed 64/16 -> 4x4
EXPECTED_IMAGE_TOKENS = {"tiny-qwen3-vl": 16, "tiny-qwen2.5-vl": 25, "tiny-qwen2-vl": 25, "tiny-llava": 16}


def _image_token_id(model) -> int:
    config = model.config
    return getattr(config, "image_token_id", None) or config.image_token_index


def _user_turn(text: str = "What colour is the shape?") -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


@pytest.fixture(scope="module")
def loaded():
    return {model_id: load_model_and_processor(model_id) for model_id in RANDOM_IDS}


def test_tiny_ids_are_public():
    assert set(TINY_MODEL_IDS) == set(RANDOM_IDS) | {"tiny-qwen3-vl-warm"}


@pytest.mark.parametrize("model_id", RANDOM_IDS)
def test_tiny_model_is_a_normal_hf_folder(model_id):
    folder = Path(resolve_model_path(model_id))
    assert folder.name == f"{model_id}-b{BUILD_VERSION}"  # the build version keeps older checkouts' builds apart
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", MARKER_FILE):
        assert (folder / name).is_file(), name
    from transformers import AutoModelForImageTextToText, AutoProcessor

    assert AutoProcessor.from_pretrained(folder) is not None
    assert AutoModelForImageTextToText.from_pretrained(folder).config.model_type == EXPECTED_FAMILY[model_id]


@pytest.mark.parametrize("model_id", RANDOM_IDS)
def test_forward_with_image_and_generate(loaded, model_id):
    model, processor = loaded[model_id]
    assert detect_family(model).name == EXPECTED_FAMILY[model_id]
    assert model.dtype == torch.float32  # CPU default
    assert model.config._attn_implementation == "sdpa"
    text = processor.apply_chat_template(_user_turn(), add_generation_prompt=True, tokenize=False)
    image = Image.new("RGB", (128, 128), (200, 30, 30))
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    assert int((inputs["input_ids"] == _image_token_id(model)).sum()) == EXPECTED_IMAGE_TOKENS[model_id]

    out = model(**inputs, labels=inputs["input_ids"])
    assert out.logits.shape == (1, inputs["input_ids"].shape[1], model.config.get_text_config().vocab_size)
    assert torch.isfinite(out.loss)
    out.loss.backward()  # gradients flow into the vision tower too: the image is really used
    vision_grads = [p.grad for n, p in model.named_parameters() if detect_family(model).component_of(n) == "vision"]
    assert any(g is not None and g.abs().sum() > 0 for g in vision_grads)
    model.zero_grad(set_to_none=True)

    generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] > inputs["input_ids"].shape[1]


@pytest.mark.parametrize("model_id", ["tiny-qwen3-vl", "tiny-qwen2-vl"])
def test_video_forward(loaded, model_id):
    import numpy as np

    model, processor = loaded[model_id]
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    video = np.zeros((4, 64, 64, 3), dtype=np.uint8)
    inputs = processor(text=[text], videos=[video], return_tensors="pt", do_sample_frames=False)
    assert int((inputs["input_ids"] == model.config.video_token_id).sum()) > 0
    assert torch.isfinite(model(**inputs).logits).all()


def test_tokenizer_has_qwen_special_tokens(loaded):
    tokenizer = loaded["tiny-qwen3-vl"][1].tokenizer
    for token in QWEN_SPECIAL_TOKENS + QWEN_PLAIN_ADDED_TOKENS:
        ids = tokenizer.encode(token, add_special_tokens=False)
        assert len(ids) == 1 and tokenizer.convert_ids_to_tokens(ids[0]) == token, token
    assert tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.padding_side == "left"
    # the BPE learned the sample domain's words as whole tokens
    assert tokenizer.tokenize("It is a red circle.") == ["It", "Ġis", "Ġa", "Ġred", "Ġcircle", "."]


def test_instruct_chat_template_layout(loaded):
    processor = loaded["tiny-qwen3-vl"][1]
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]},
        {"role": "assistant", "content": "Red."},
        {"role": "user", "content": [{"type": "text", "text": "And this?"}, {"type": "video"}]},
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Colour?<|im_end|>\n"
        "<|im_start|>assistant\nRed.<|im_end|>\n"
        "<|im_start|>user\nAnd this?<|vision_start|><|video_pad|><|vision_end|><|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert "<think>" not in text


def test_llava_template_uses_image_placeholder(loaded):
    processor = loaded["tiny-llava"][1]
    text = processor.apply_chat_template(_user_turn("Hi"), add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>user\n<image>\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_max_pixels_applies_to_image_processors_only():
    processor = load_processor("tiny-qwen3-vl", max_pixels=64 * 64)
    assert processor.image_processor.size.longest_edge == 4096
    # Qwen3-VL's video processor reads longest_edge as a budget over all frames: video_max_pixels sets it
    assert processor.video_processor.size.longest_edge == 256 * 256
    inputs = processor(text=["<|vision_start|><|image_pad|><|vision_end|>"], images=[Image.new("RGB", (128, 128))])
    assert inputs["image_grid_thw"].tolist() == [[1, 4, 4]]  # 64x64 px -> 4x4 patches -> 4 tokens
    default = load_processor("tiny-qwen3-vl")
    assert default.image_processor.size.longest_edge == 256 * 256  # untouched when max_pixels is None


def test_build_is_byte_reproducible(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    TINY_SPECS["tiny-qwen3-vl"].build(first)
    TINY_SPECS["tiny-qwen3-vl"].build(second)
    files = sorted(p.name for p in first.iterdir())
    assert files == sorted(p.name for p in second.iterdir())
    for name in files:
        assert hashlib.sha256((first / name).read_bytes()).digest() == hashlib.sha256((second / name).read_bytes()).digest(), name


def test_concurrent_first_use_builds_once(tmp_path, monkeypatch):
    """Two callers racing on an empty cache both get the complete folder; no temp folders remain."""
    monkeypatch.setenv("NBTOOLS_CACHE_DIR", str(tmp_path))
    calls = []
    spec = TINY_SPECS["tiny-qwen2-vl"]
    original = spec.build

    def counting_build(folder):
        calls.append(folder)
        original(folder)

    monkeypatch.setitem(TINY_SPECS, "tiny-qwen2-vl", type(spec)(spec.model_id, spec.family, spec.description, counting_build))
    results = []
    threads = [threading.Thread(target=lambda: results.append(build_tiny_model("tiny-qwen2-vl"))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert results[0] == results[1] == tmp_path / "models" / f"tiny-qwen2-vl-b{BUILD_VERSION}"
    assert (results[0] / "model.safetensors").is_file()
    assert sorted(p.name for p in (tmp_path / "models").iterdir() if not p.name.endswith(".lock")) == [
        f"tiny-qwen2-vl-b{BUILD_VERSION}"]


def test_stale_build_is_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("NBTOOLS_CACHE_DIR", str(tmp_path))
    folder = tmp_path / "models" / f"tiny-llava-b{BUILD_VERSION}"
    folder.mkdir(parents=True)
    (folder / MARKER_FILE).write_text('{"build_version": -1}')
    assert build_tiny_model("tiny-llava") == folder
    assert (folder / "model.safetensors").is_file()


@pytest.mark.parametrize("model_id", RANDOM_IDS)
def test_configs_agree_with_the_tokenizer_so_training_prints_no_token_warning(model_id, loaded):
    """The Trainer aligns pad/eos ids with the tokenizer and warns when it had to change any
    ("The tokenizer has new PAD/BOS/EOS tokens ..."): the built models need no change."""
    import logging

    from transformers.trainer_utils import align_special_tokens

    model, processor = loaded[model_id]
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("transformers.trainer_utils")
    logger.addHandler(handler)
    try:
        align_special_tokens(model, processor)
    finally:
        logger.removeHandler(handler)
    assert not [r for r in records if "PAD/BOS/EOS" in r.getMessage()]
    text = model.config.get_text_config()
    assert processor.tokenizer.eos_token_id in text.eos_token_id and text.pad_token_id == processor.tokenizer.pad_token_id
