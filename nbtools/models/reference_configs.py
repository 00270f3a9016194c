"""Real-shaped configs of well-known models, written from their published dimensions (no download).

These are config facts only (layer counts and widths from each model's ``config.json``), so the
memory estimate works offline for the models users name most. ``PUBLISHED_PARAMETERS`` holds
the total parameter count published for each model, with its source; a test builds every
config on the meta device and checks its parameter count against that total (within 1%), so
a wrong width or layer count cannot slip in. Instruct and Thinking variants share dimensions.

Sizes without a published total we could cite are left out on purpose (see the README):
Qwen3-VL-32B and Qwen2.5-VL (3B, 7B, 32B, 72B).
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


def _qwen2_vl(*, hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, vocab: int,
              tied: bool) -> dict:
    """A Qwen2-VL config.json: Qwen2 text model + the 675M-parameter ViT (32 layers, width 1280)."""
    return {
        "model_type": "qwen2_vl",
        "tie_word_embeddings": tied,
        **_QWEN_VL_TOKENS,
        "text_config": {
            "model_type": "qwen2_vl_text",
            "vocab_size": vocab,
            "hidden_size": hidden,
            "intermediate_size": intermediate,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "hidden_act": "silu",
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-6,
            "tie_word_embeddings": tied,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
        },
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


# Qwen/Qwen3-VL-2B-Instruct: text as Qwen3-1.7B (2048 wide, 28 layers), the 24-layer ViT, tied embeddings.
QWEN3_VL_2B = _qwen3_vl(hidden=2048, intermediate=6144, layers=28, heads=16, tied=True, vision_depth=24,
                        vision_hidden=1024, vision_intermediate=4096, deepstack=[5, 11, 17])
# Qwen/Qwen3-VL-4B-Instruct: 2560 wide, 36 layers, the 24-layer ViT, tied embeddings.
QWEN3_VL_4B = _qwen3_vl(hidden=2560, intermediate=9728, layers=36, heads=32, tied=True, vision_depth=24,
                        vision_hidden=1024, vision_intermediate=4096, deepstack=[5, 11, 17])
# Qwen/Qwen3-VL-8B-Instruct: 4096 wide, 36 layers, the 27-layer ViT (width 1152), separate lm_head.
QWEN3_VL_8B = _qwen3_vl(hidden=4096, intermediate=12288, layers=36, heads=32, tied=False, vision_depth=27,
                        vision_hidden=1152, vision_intermediate=4304, deepstack=[8, 16, 24])
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
    "Qwen/Qwen2-VL-2B": QWEN2_VL_2B,
    "Qwen/Qwen2-VL-7B": QWEN2_VL_7B,
    "Qwen/Qwen2-VL-72B": QWEN2_VL_72B,
}
# Released names per size: Qwen3-VL ships Instruct and Thinking, Qwen2-VL Instruct and the base model.
_VARIANTS = {"Qwen/Qwen3-VL": ("-Instruct", "-Thinking"), "Qwen/Qwen2-VL": ("-Instruct", "")}

REFERENCE_CONFIGS = {
    size + suffix: config
    for size, config in _SIZES.items()
    for family, suffixes in _VARIANTS.items() if size.startswith(family + "-")
    for suffix in suffixes
}

# Total parameters as published (billions), with where the figure was published.
PUBLISHED_PARAMETERS = {
    # "Total model parameters 2.128B ... calculated from the tensors stored in the upstream checkpoint"
    # (https://huggingface.co/OpenExplorer/Qwen3-VL-2B-Instruct, model card of the Qwen/Qwen3-VL-2B-Instruct weights)
    "Qwen/Qwen3-VL-2B": 2.128,
    # 4.438B, same source: https://huggingface.co/OpenExplorer/Qwen3-VL-4B-Instruct
    "Qwen/Qwen3-VL-4B": 4.438,
    # 8.767B, same source: https://huggingface.co/OpenExplorer/Qwen3-VL-8B-Instruct
    "Qwen/Qwen3-VL-8B": 8.767,
    # "Model size 2.21B params" (Hugging Face safetensors metadata of the Qwen2-VL-2B-Instruct weights, e.g.
    # https://huggingface.co/zhangfaen/Qwen2-VL-2B-checkpoint; "Parameters 2.21" for Qwen/Qwen2-VL-2B-Instruct
    # on https://ai-nexus-293.pages.dev/model/huggingface:qwen:qwen2-vl-2b-instruct)
    "Qwen/Qwen2-VL-2B": 2.21,
    # "Model size 8.29B params" (Hugging Face safetensors metadata of Qwen2-VL-7B-Instruct fine-tunes that keep
    # its shapes, e.g. https://huggingface.co/neutronprawn/Qwen2-VL-7B-Instruct-LoRA-FT); "8.3B" in the
    # Qwen2-VL table of https://docs.cognisoc.com/unillm/models/vision-language/qwen2-vl/
    "Qwen/Qwen2-VL-7B": 8.29,
    # "73B" total for Qwen2-VL 72B (https://docs.cognisoc.com/unillm/models/vision-language/qwen2-vl/)
    "Qwen/Qwen2-VL-72B": 73.0,
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
