"""Real-shaped configs of well-known models, written from their published dimensions (no download).

Used by the memory estimate (parameter counts on the meta device) and its tests.
"""

from __future__ import annotations

# Qwen/Qwen3-VL-4B-Instruct (config.json dimensions; ~4.44 B parameters, tied embeddings).
QWEN3_VL_4B = {
    "model_type": "qwen3_vl",
    "tie_word_embeddings": True,
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "text_config": {
        "model_type": "qwen3_vl_text",
        "vocab_size": 151936,
        "hidden_size": 2560,
        "intermediate_size": 9728,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "hidden_act": "silu",
        "max_position_embeddings": 262144,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5000000.0,
            "mrope_section": [24, 20, 20],
            "mrope_interleaved": True,
        },
    },
    "vision_config": {
        "model_type": "qwen3_vl_vision",
        "depth": 24,
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_heads": 16,
        "hidden_act": "gelu_pytorch_tanh",
        "in_channels": 3,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": 2560,
        "num_position_embeddings": 2304,
        "deepstack_visual_indexes": [5, 11, 17],
    },
}

REFERENCE_CONFIGS = {
    "Qwen/Qwen3-VL-4B-Instruct": QWEN3_VL_4B,
    "Qwen/Qwen3-VL-4B-Thinking": QWEN3_VL_4B,
}


def reference_config(name: str):
    """A transformers config object for a known model name, or None."""
    from transformers import AutoConfig

    raw = REFERENCE_CONFIGS.get(name)
    if raw is None:
        return None
    raw = dict(raw)
    model_type = raw.pop("model_type")
    return AutoConfig.for_model(model_type, **raw)
