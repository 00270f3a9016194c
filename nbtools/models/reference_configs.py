"""Real-shaped configs of well-known models, written from their published dimensions (no download).

These are config facts only (layer counts and widths from each model's ``config.json``), so the
memory estimate works offline for the models users name most. ``PUBLISHED_PARAMETERS`` holds
the total parameter count published for each model, with its source; a test builds every
config on the meta device and checks its parameter count against that total (within 1%), so
a wrong width or layer count cannot slip in. Instruct and Thinking variants share dimensions.

Exact totals are not on the official model cards; the official Qwen repositories on the Hugging
Face Hub show the total rounded to whole billions (``HUB_LISTED_BILLIONS``, also checked), so the
precise figure comes from a secondary source that read the upstream checkpoint (named per entry).
"""

from __future__ import annotations

import copy

# Token ids shared by the Qwen2-VL, Qwen2.5-VL and Qwen3-VL tokenizers.
_QWEN_VL_TOKENS = {
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
}


def _qwen3_vl(*, hidden: int, intermediate: int, layers: int, heads: int, tied: bool, vision_depth: int,
              vision_hidden: int, vision_intermediate: int, deepstack: list[int]) -> dict:
    """A Qwen3-VL config.json in transformers' nested form (text_config / vision_config)."""
    return {
        "model_type": "qwen3_vl",
        "tie_word_embeddings": tied,
        **_QWEN_VL_TOKENS,
        "text_config": {
            "model_type": "qwen3_vl_text",
            "vocab_size": 151936,
            "hidden_size": hidden,
            "intermediate_size": intermediate,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "hidden_act": "silu",
            "max_position_embeddings": 262144,
            "rms_norm_eps": 1e-6,
            "tie_word_embeddings": tied,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5000000.0,
                "mrope_section": [24, 20, 20],
                "mrope_interleaved": True,
            },
        },
        "vision_config": {
            "model_type": "qwen3_vl_vision",
            "depth": vision_depth,
            "hidden_size": vision_hidden,
            "intermediate_size": vision_intermediate,
            "num_heads": 16,
            "hidden_act": "gelu_pytorch_tanh",
            "in_channels": 3,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": hidden,
            "num_position_embeddings": 2304,
            "deepstack_visual_indexes": deepstack,
        },
    }


def _qwen2_text(model_type: str, max_positions: int, *, hidden: int, intermediate: int, layers: int, heads: int,
                kv_heads: int, vocab: int, tied: bool) -> dict:
    """The text_config of Qwen2-VL and Qwen2.5-VL: a Qwen2 decoder with 3-section multimodal rope
    (the two differ only in its model type and context length)."""
    return {
        "model_type": model_type,
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "hidden_act": "silu",
        "max_position_embeddings": max_positions,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": tied,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
    }


def _qwen2_vl(*, hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, vocab: int,
              tied: bool) -> dict:
    """A Qwen2-VL config.json: Qwen2 text model + the 675M-parameter ViT (32 layers, width 1280)."""
    return {
        "model_type": "qwen2_vl",
        "tie_word_embeddings": tied,
        **_QWEN_VL_TOKENS,
        "text_config": _qwen2_text("qwen2_vl_text", 32768, hidden=hidden, intermediate=intermediate, layers=layers,
                                   heads=heads, kv_heads=kv_heads, vocab=vocab, tied=tied),
        "vision_config": {
            "model_type": "qwen2_vl",
            "depth": 32,
            "embed_dim": 1280,
            "mlp_ratio": 4,
            "num_heads": 16,
            "hidden_size": hidden,
            "in_channels": 3,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
    }


def _qwen2_5_vl(*, hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, vocab: int,
                tied: bool) -> dict:
    """A Qwen2.5-VL config.json: Qwen2.5 text model + the 32-layer windowed-attention ViT (width 1280)."""
    return {
        "model_type": "qwen2_5_vl",
        "tie_word_embeddings": tied,
        **_QWEN_VL_TOKENS,
        "text_config": _qwen2_text("qwen2_5_vl_text", 128000, hidden=hidden, intermediate=intermediate,
                                   layers=layers, heads=heads, kv_heads=kv_heads, vocab=vocab, tied=tied),
        "vision_config": {
            "model_type": "qwen2_5_vl",
            "depth": 32,
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "num_heads": 16,
            "hidden_act": "silu",
            "out_hidden_size": hidden,
            "in_channels": 3,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [7, 15, 23, 31],
            "tokens_per_second": 2,
        },
    }


# Qwen/Qwen3-VL-2B-Instruct: text as Qwen3-1.7B (2048 wide, 28 layers), the 24-layer ViT, tied embeddings.
QWEN3_VL_2B = _qwen3_vl(hidden=2048, intermediate=6144, layers=28, heads=16, tied=True, vision_depth=24,
                        vision_hidden=1024, vision_intermediate=4096, deepstack=[5, 11, 17])
# Qwen/Qwen3-VL-4B-Instruct: 2560 wide, 36 layers, the 24-layer ViT, tied embeddings.
QWEN3_VL_4B = _qwen3_vl(hidden=2560, intermediate=9728, layers=36, heads=32, tied=True, vision_depth=24,
                        vision_hidden=1024, vision_intermediate=4096, deepstack=[5, 11, 17])
# Qwen/Qwen3-VL-8B-Instruct: 4096 wide, 36 layers, the 27-layer ViT (width 1152), separate lm_head.
QWEN3_VL_8B = _qwen3_vl(hidden=4096, intermediate=12288, layers=36, heads=32, tied=False, vision_depth=27,
                        vision_hidden=1152, vision_intermediate=4304, deepstack=[8, 16, 24])
# Qwen/Qwen3-VL-32B-Instruct: 5120 wide, 64 layers (64 query heads), the 27-layer ViT (width 1152), separate lm_head.
QWEN3_VL_32B = _qwen3_vl(hidden=5120, intermediate=25600, layers=64, heads=64, tied=False, vision_depth=27,
                         vision_hidden=1152, vision_intermediate=4304, deepstack=[8, 16, 24])
# Qwen/Qwen2.5-VL-3B-Instruct: Qwen2.5-3B text (tied embeddings) + ViT.
QWEN2_5_VL_3B = _qwen2_5_vl(hidden=2048, intermediate=11008, layers=36, heads=16, kv_heads=2, vocab=151936, tied=True)
# Qwen/Qwen2.5-VL-7B-Instruct: Qwen2.5-7B text + ViT.
QWEN2_5_VL_7B = _qwen2_5_vl(hidden=3584, intermediate=18944, layers=28, heads=28, kv_heads=4, vocab=152064, tied=False)
# Qwen/Qwen2.5-VL-32B-Instruct: Qwen2.5-32B text + ViT.
QWEN2_5_VL_32B = _qwen2_5_vl(hidden=5120, intermediate=27648, layers=64, heads=40, kv_heads=8, vocab=152064,
                             tied=False)
# Qwen/Qwen2.5-VL-72B-Instruct: Qwen2.5-72B text + ViT.
QWEN2_5_VL_72B = _qwen2_5_vl(hidden=8192, intermediate=29568, layers=80, heads=64, kv_heads=8, vocab=152064,
                             tied=False)
# Qwen/Qwen2-VL-2B-Instruct: Qwen2-1.5B text (tied embeddings) + ViT.
QWEN2_VL_2B = _qwen2_vl(hidden=1536, intermediate=8960, layers=28, heads=12, kv_heads=2, vocab=151936, tied=True)
# Qwen/Qwen2-VL-7B-Instruct: Qwen2-7B text + ViT.
QWEN2_VL_7B = _qwen2_vl(hidden=3584, intermediate=18944, layers=28, heads=28, kv_heads=4, vocab=152064, tied=False)
# Qwen/Qwen2-VL-72B-Instruct: Qwen2-72B text + ViT.
QWEN2_VL_72B = _qwen2_vl(hidden=8192, intermediate=29568, layers=80, heads=64, kv_heads=8, vocab=152064, tied=False)

_SIZES = {
    "Qwen/Qwen3-VL-2B": QWEN3_VL_2B,
    "Qwen/Qwen3-VL-4B": QWEN3_VL_4B,
    "Qwen/Qwen3-VL-8B": QWEN3_VL_8B,
    "Qwen/Qwen3-VL-32B": QWEN3_VL_32B,
    "Qwen/Qwen2.5-VL-3B": QWEN2_5_VL_3B,
    "Qwen/Qwen2.5-VL-7B": QWEN2_5_VL_7B,
    "Qwen/Qwen2.5-VL-32B": QWEN2_5_VL_32B,
    "Qwen/Qwen2.5-VL-72B": QWEN2_5_VL_72B,
    "Qwen/Qwen2-VL-2B": QWEN2_VL_2B,
    "Qwen/Qwen2-VL-7B": QWEN2_VL_7B,
    "Qwen/Qwen2-VL-72B": QWEN2_VL_72B,
}
# Released names per size: Qwen3-VL ships Instruct and Thinking, Qwen2.5-VL Instruct, Qwen2-VL Instruct and the base model.
_VARIANTS = {"Qwen/Qwen3-VL": ("-Instruct", "-Thinking"), "Qwen/Qwen2.5-VL": ("-Instruct",),
             "Qwen/Qwen2-VL": ("-Instruct", "")}

REFERENCE_CONFIGS = {
    size + suffix: config
    for size, config in _SIZES.items()
    for family, suffixes in _VARIANTS.items() if size.startswith(family + "-")
    for suffix in suffixes
}

# Total parameters (billions) to 3-4 significant figures, with where the figure was published. None of the
# official model cards states an exact total, so these come from pages that read the upstream checkpoint.
PUBLISHED_PARAMETERS = {
    # "Total model parameters 2.128B ... calculated from the tensors stored in the upstream checkpoint"
    # (https://huggingface.co/OpenExplorer/Qwen3-VL-2B-Instruct, card of a deployment of Qwen/Qwen3-VL-2B-Instruct);
    # "2.13B params" on https://raw.githubusercontent.com/jakemanger/whatmodel/main/pages/model/qwen3-vl-2b-instruct.md
    "Qwen/Qwen3-VL-2B": 2.128,
    # 4.438B, same source: https://huggingface.co/OpenExplorer/Qwen3-VL-4B-Instruct
    "Qwen/Qwen3-VL-4B": 4.438,
    # 8.767B, same source: https://huggingface.co/OpenExplorer/Qwen3-VL-8B-Instruct; "8.77B params" on
    # https://raw.githubusercontent.com/jakemanger/whatmodel/main/pages/model/qwen3-vl-8b-instruct.md
    "Qwen/Qwen3-VL-8B": 8.767,
    # "33.4B params": https://raw.githubusercontent.com/jakemanger/whatmodel/main/pages/model/qwen3-vl-32b-instruct.md
    # ("Model Size: 33.4B" also on https://featherless.ai/models/furiosa-ai/Qwen3-VL-32B-Thinking, a build of the
    # upstream weights)
    "Qwen/Qwen3-VL-32B": 33.4,
    # "3.75B params": https://raw.githubusercontent.com/jakemanger/whatmodel/main/pages/model/qwen2-5-vl-3b.md
    "Qwen/Qwen2.5-VL-3B": 3.75,
    # "Total model parameters 8.292B ... calculated from the tensors stored in the upstream checkpoint"
    # (https://huggingface.co/OpenExplorer/Qwen2.5-VL-7B-Instruct); "8.29B params" on
    # https://raw.githubusercontent.com/jakemanger/whatmodel/main/pages/model/qwen2-5-vl-7b.md
    "Qwen/Qwen2.5-VL-7B": 8.292,
    # "33.5B params": https://raw.githubusercontent.com/jakemanger/whatmodel/main/pages/model/qwen2-5-vl-32b.md
    "Qwen/Qwen2.5-VL-32B": 33.5,
    # "73.4B params": https://raw.githubusercontent.com/jakemanger/whatmodel/main/pages/model/qwen2-5-vl-72b.md
    "Qwen/Qwen2.5-VL-72B": 73.4,
    # "Model size 2.21B params" (Hugging Face safetensors metadata of copies of the Qwen2-VL-2B-Instruct weights, e.g.
    # https://huggingface.co/zhangfaen/Qwen2-VL-2B-checkpoint; "Parameters 2.21" for Qwen/Qwen2-VL-2B-Instruct
    # on https://ai-nexus-293.pages.dev/model/huggingface:qwen:qwen2-vl-2b-instruct)
    "Qwen/Qwen2-VL-2B": 2.21,
    # "8.29B params": https://raw.githubusercontent.com/jakemanger/whatmodel/main/pages/model/qwen2-vl-7b.md
    "Qwen/Qwen2-VL-7B": 8.29,
    # "73.4B params": https://raw.githubusercontent.com/jakemanger/whatmodel/main/pages/model/qwen2-vl-72b.md
    "Qwen/Qwen2-VL-72B": 73.4,
}

# The size the Hugging Face Hub shows for the official Qwen repository (its safetensors total, rounded to whole
# billions), where we found it published: a coarse but first-hand check on the totals above.
HUB_LISTED_BILLIONS = {
    # Qwen/Qwen3-VL-2B-Instruct "2B": https://huggingface.co/collections/djwild/models
    "Qwen/Qwen3-VL-2B": 2,
    # Qwen/Qwen3-VL-4B-Instruct "4B": https://huggingface.co/messi2003/activity/all
    "Qwen/Qwen3-VL-4B": 4,
    # Qwen/Qwen3-VL-8B-Instruct "9B": https://huggingface.co/brzozz/activity/all
    "Qwen/Qwen3-VL-8B": 9,
    # Qwen/Qwen2.5-VL-3B-Instruct "4B", Qwen/Qwen2.5-VL-7B-Instruct "8B": https://huggingface.co/collections/Qwen/qwen25-vl
    "Qwen/Qwen2.5-VL-3B": 4,
    "Qwen/Qwen2.5-VL-7B": 8,
    # Qwen/Qwen2.5-VL-32B-Instruct "33B": https://huggingface.co/AleRo96/activity/likes
    "Qwen/Qwen2.5-VL-32B": 33,
    # Qwen/Qwen2.5-VL-72B-Instruct "73B": https://huggingface.co/Cavalier21/activity/all
    "Qwen/Qwen2.5-VL-72B": 73,
    # Qwen/Qwen2-VL-2B "2B", Qwen/Qwen2-VL-7B-Instruct "8B", Qwen/Qwen2-VL-72B-Instruct "73B":
    # https://huggingface.co/collections/Qwen/qwen2-vl
    "Qwen/Qwen2-VL-2B": 2,
    "Qwen/Qwen2-VL-7B": 8,
    "Qwen/Qwen2-VL-72B": 73,
}


def reference_names() -> list[str]:
    """Every model name with built-in dimensions."""
    return sorted(REFERENCE_CONFIGS)


def reference_config(name: str):
    """A transformers config object for a known model name, or None."""
    from transformers import AutoConfig

    raw = REFERENCE_CONFIGS.get(name)
    if raw is None:
        return None
    raw = copy.deepcopy(raw)
    model_type = raw.pop("model_type")
    return AutoConfig.for_model(model_type, **raw)
