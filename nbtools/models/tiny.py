"""Built-in tiny VLMs, built offline on first use and cached as ordinary HF folders.

Each id maps to a builder that writes config + safetensors + tokenizer + processors into a
folder. Builds are seeded (byte-reproducible), done in a temporary folder and renamed into
place under a file lock, so concurrent test processes never see a half-written model.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from nbtools.paths import model_cache_dir

from .chat_templates import INSTRUCT_CHAT_TEMPLATE, LLAVA_CHAT_TEMPLATE
from .tokenizer import build_hf_tokenizer

# Bump when a builder's output changes. It is part of each cached folder's name, so checkouts of
# different versions sharing one cache never rebuild each other's models.
BUILD_VERSION = 2
MARKER_FILE = "nbtools_tiny.json"
SEED = 1234
VOCAB_SIZE = 2048

# Qwen3-VL's native min/max pixels are large; the tiny models keep images cheap:
# 128x128 -> 4x4 merged tokens = 16 image tokens.
TINY_MIN_PIXELS = 32 * 32
TINY_MAX_PIXELS = 256 * 256


@dataclass(frozen=True)
class TinySpec:
    """One built-in tiny model: its id, what it imitates, and how to build it."""

    model_id: str
    family: str
    description: str
    build: Callable[[Path], None]
    # Extra words for the cached folder's name, read at build time (e.g. the warm start's seed,
    # which an environment variable may choose): different variants never share a folder.
    variant: Callable[[], str] | None = None

    def folder_name(self) -> str:
        parts = [self.model_id] + ([self.variant()] if self.variant else []) + [f"b{BUILD_VERSION}"]
        return "-".join(parts)


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _save_model(model, folder: Path) -> None:
    model.save_pretrained(folder, safe_serialization=True)


def _save_random_model(model_class, config, processor, folder: Path) -> None:
    """Seeded random weights for ``config``, saved with the processor: the common end of every builder."""
    _seed_everything(SEED)
    model = model_class(config)
    model.generation_config = _generation_config(processor.tokenizer)
    _save_model(model, folder)
    processor.save_pretrained(folder)


def _qwen_tokenizer():
    return build_hf_tokenizer(INSTRUCT_CHAT_TEMPLATE, vocab_size=VOCAB_SIZE, seed=0)


def _special_ids(tokenizer) -> dict[str, int]:
    ids = {
        "image_token_id": tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        "video_token_id": tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        "vision_start_token_id": tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end_token_id": tokenizer.convert_tokens_to_ids("<|vision_end|>"),
    }
    return ids


def _generation_config(tokenizer):
    from transformers import GenerationConfig

    return GenerationConfig(
        eos_token_id=[tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )


def _text_token_ids(tokenizer) -> dict:
    """The language model's pad/eos ids, equal to the tokenizer's and the generation config's.

    When they differ, the Trainer "aligns" them at every run and prints a warning a user can do
    nothing about; agreeing from the start keeps training quiet.
    """
    return {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": _generation_config(tokenizer).eos_token_id}


def qwen3_vl_tiny_config(vocab_size: int, special_ids: dict[str, int], token_ids: dict,
                         max_position_embeddings: int = 4096):
    """Qwen3-VL at toy scale: 16-px patches, merge 2 (32x32 px per token), deepstack on both vision layers."""
    from transformers import Qwen3VLConfig

    head_dim = 32
    return Qwen3VLConfig(
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=head_dim,
            max_position_embeddings=max_position_embeddings,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 500000.0,
                # sums to head_dim / 2, split over (time, height, width) like the 4B's [24, 20, 20]
                "mrope_section": [6, 5, 5],
                "mrope_interleaved": True,
            },
            **token_ids,
        ),
        vision_config=dict(
            depth=2,
            hidden_size=64,
            intermediate_size=128,
            num_heads=4,
            patch_size=16,
            spatial_merge_size=2,
            temporal_patch_size=2,
            out_hidden_size=128,
            num_position_embeddings=256,
            deepstack_visual_indexes=[0, 1],
        ),
        tie_word_embeddings=False,
        **special_ids,
    )


def _qwen_image_processors(patch_size: int, merge_size: int, temporal_patch_size: int, video_cls: str):
    import transformers
    from transformers import Qwen2VLImageProcessor

    size = {"shortest_edge": TINY_MIN_PIXELS, "longest_edge": TINY_MAX_PIXELS}
    common = dict(
        size=size,
        patch_size=patch_size,
        merge_size=merge_size,
        temporal_patch_size=temporal_patch_size,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    image_processor = Qwen2VLImageProcessor(**common)
    video_kwargs = dict(common)
    if video_cls == "Qwen3VLVideoProcessor":
        video_kwargs["cap_pixels_per_frame"] = True  # the reference (qwen-vl-utils) behaviour
    video_processor = getattr(transformers, video_cls)(**video_kwargs)
    return image_processor, video_processor


def build_tiny_qwen3_vl(folder: Path, max_position_embeddings: int = 4096) -> None:
    """Random-init Qwen3-VL with a locally trained tokenizer, image and video processors."""
    from transformers import Qwen3VLForConditionalGeneration, Qwen3VLProcessor

    tokenizer = _qwen_tokenizer()
    config = qwen3_vl_tiny_config(len(tokenizer), _special_ids(tokenizer), _text_token_ids(tokenizer),
                                  max_position_embeddings)
    image_processor, video_processor = _qwen_image_processors(16, 2, 2, "Qwen3VLVideoProcessor")
    processor = Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=INSTRUCT_CHAT_TEMPLATE,
    )
    _save_random_model(Qwen3VLForConditionalGeneration, config, processor, folder)


def _qwen2_text_config(vocab_size: int, token_ids: dict) -> dict:
    # head_dim 32 -> 16 rotary frequencies split (time, height, width) like Qwen2-VL's [16, 24, 24]
    return dict(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 6, 6]},
        bos_token_id=None,
        **token_ids,
    )


def build_tiny_qwen2_5_vl(folder: Path) -> None:
    """Random-init Qwen2.5-VL: 14-px patches, merge 2, windowed vision attention with one full layer."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    tokenizer = _qwen_tokenizer()
    config = Qwen2_5_VLConfig(
        text_config=_qwen2_text_config(len(tokenizer), _text_token_ids(tokenizer)),
        vision_config=dict(
            depth=2, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=128,
            patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
            fullatt_block_indexes=[1],
        ),
        tie_word_embeddings=False,
        **_special_ids(tokenizer),
    )
    image_processor, video_processor = _qwen_image_processors(14, 2, 2, "Qwen2VLVideoProcessor")
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
        chat_template=INSTRUCT_CHAT_TEMPLATE,
    )
    _save_random_model(Qwen2_5_VLForConditionalGeneration, config, processor, folder)


def build_tiny_qwen2_vl(folder: Path) -> None:
    """Random-init Qwen2-VL: 14-px patches, merge 2."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    tokenizer = _qwen_tokenizer()
    config = Qwen2VLConfig(
        text_config=_qwen2_text_config(len(tokenizer), _text_token_ids(tokenizer)),
        vision_config=dict(
            depth=2, embed_dim=64, hidden_size=128, mlp_ratio=2, num_heads=4,
            patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
        ),
        tie_word_embeddings=False,
        **_special_ids(tokenizer),
    )
    image_processor, video_processor = _qwen_image_processors(14, 2, 2, "Qwen2VLVideoProcessor")
    processor = Qwen2VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
        chat_template=INSTRUCT_CHAT_TEMPLATE,
    )
    _save_random_model(Qwen2VLForConditionalGeneration, config, processor, folder)


LLAVA_IMAGE_SIZE = 64
LLAVA_PATCH_SIZE = 16


def build_tiny_llava(folder: Path) -> None:
    """Random-init LLaVA (CLIP vision tower + MLP projector + Qwen2 LM), ChatML template with <image>.

    Images are resized to a fixed 64x64: (64/16)^2 = 16 image tokens, like llava-interleave-qwen.
    """
    from transformers import (
        CLIPImageProcessor,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    template = LLAVA_CHAT_TEMPLATE
    tokenizer = build_hf_tokenizer(template, vocab_size=VOCAB_SIZE, seed=0, extra_special_tokens=["<image>"])
    text_config = _qwen2_text_config(len(tokenizer), _text_token_ids(tokenizer))
    text_config.pop("rope_parameters")
    text_config["model_type"] = "qwen2"
    config = LlavaConfig(
        vision_config=dict(
            model_type="clip_vision_model", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, image_size=LLAVA_IMAGE_SIZE, patch_size=LLAVA_PATCH_SIZE, projection_dim=64,
        ),
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        tie_word_embeddings=False,
    )
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": LLAVA_IMAGE_SIZE},
        crop_size={"height": LLAVA_IMAGE_SIZE, "width": LLAVA_IMAGE_SIZE},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=LLAVA_PATCH_SIZE,
        vision_feature_select_strategy="default",
        chat_template=template,
        image_token="<image>",
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
    )
    _save_random_model(LlavaForConditionalGeneration, config, processor, folder)


TINY_SPECS: dict[str, TinySpec] = {}


def register(spec: TinySpec) -> None:
    TINY_SPECS[spec.model_id] = spec


register(TinySpec("tiny-qwen3-vl", "qwen3_vl", "random-init Qwen3-VL (~1M parameters)", build_tiny_qwen3_vl))


register(TinySpec("tiny-qwen2.5-vl", "qwen2_5_vl", "random-init Qwen2.5-VL", build_tiny_qwen2_5_vl))
register(TinySpec("tiny-qwen2-vl", "qwen2_vl", "random-init Qwen2-VL", build_tiny_qwen2_vl))
register(TinySpec("tiny-llava", "llava", "random-init LLaVA (CLIP + MLP projector + Qwen2 LM)", build_tiny_llava))


def is_tiny_id(name: str) -> bool:
    return str(name) in TINY_SPECS


@contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _is_current(folder: Path) -> bool:
    marker = folder / MARKER_FILE
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("build_version") == BUILD_VERSION
    except (OSError, ValueError):
        return False


def build_tiny_model(model_id: str, *, force: bool = False) -> Path:
    """Return the cached folder of a tiny model, building it first if missing or stale."""
    if model_id not in TINY_SPECS:
        raise ValueError(f"unknown tiny model id {model_id!r}; known ids: {', '.join(TINY_SPECS)}")
    return _cached_build(TINY_SPECS[model_id], force=force)


LONG_POSITIONS = 65_536


def build_tiny_qwen3_vl_long(max_position_embeddings: int = LONG_POSITIONS) -> Path:
    """tiny-qwen3-vl with a larger position limit (the built-in one stops at 4,096), for benchmarks of long
    packed rows; cached like the built-in ids, but not one of them (nothing offers it to users)."""
    spec = TinySpec("tiny-qwen3-vl", "qwen3_vl", f"random-init Qwen3-VL, {max_position_embeddings:,} positions",
                    lambda folder: build_tiny_qwen3_vl(folder, max_position_embeddings),
                    variant=lambda: f"pos{max_position_embeddings}")
    return _cached_build(spec)


def _cached_build(spec: TinySpec, *, force: bool = False) -> Path:
    """The spec's folder under the model cache, built (in a temporary folder, renamed under a lock) when missing
    or stale."""
    model_id = spec.model_id
    root = model_cache_dir()
    folder = root / spec.folder_name()
    if not force and _is_current(folder):
        return folder
    with _file_lock(root / f".{folder.name}.lock"):
        if not force and _is_current(folder):  # another process built it while we waited
            return folder
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=root))
        try:
            spec.build(tmp)
            (tmp / MARKER_FILE).write_text(
                json.dumps(
                    {"model_id": model_id, "family": spec.family, "build_version": BUILD_VERSION,
                     "description": spec.description},
                    indent=2,
                )
            )
            if folder.exists():
                shutil.rmtree(folder)
            os.rename(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return folder
