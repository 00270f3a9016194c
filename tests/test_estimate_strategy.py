"""The memory estimate for what training really does: packed rows, and weights sharded under FSDP."""

from __future__ import annotations

import math

import pytest

from nbtools.estimate import GIB, estimate_memory

QWEN3_VL_4B = "Qwen/Qwen3-VL-4B-Instruct"  # written-in dimensions, no download
SETUP = dict(batch_size=4, max_context_length=2048, max_pixels=896 * 896, lora_rank=8, gradient_checkpointing=True,
             precision="bf16", prompt_text_tokens=30, answer_tokens=100)


def test_packing_estimates_one_row_per_pair_and_no_reference_pass():
    trl = estimate_memory(QWEN3_VL_4B, **SETUP)
    packed = estimate_memory(QWEN3_VL_4B, packing=True, **SETUP)
    assert (trl.sequences_per_step, trl.tokens_per_sequence) == (8, 30 + 786 + 100)
    assert (packed.sequences_per_step, packed.tokens_per_sequence) == (4, 30 + 786 + 100 + 100)
    assert packed.reference_pass_bytes == 0 < trl.reference_pass_bytes  # stored reference log-probs
    on_the_fly = estimate_memory(QWEN3_VL_4B, packing=True, precompute_reference=False, **SETUP)
    assert on_the_fly.reference_pass_bytes > 0
    # fewer tokens through the layers: activations shrink by the ratio of tokens
    assert packed.activation_bytes / trl.activation_bytes == pytest.approx((4 * 1016) / (8 * 916), rel=1e-9)
    # the exact parts do not depend on the layout
    assert packed.weights_bytes == trl.weights_bytes and packed.optimizer_bytes == trl.optimizer_bytes
    assert packed.total_bytes < trl.total_bytes
    assert "packed rows" in packed.format()


def test_packed_log_probs_count_one_chunked_tile_not_the_full_vocabulary():
    """The packed step scores answers through TRL's chunked LM head (nbtools.packing.logps)."""
    from trl.kernels.chunked_logprob import TOKEN_CHUNK_SIZE

    from nbtools.estimate import TRL_LOGPROB_TOKEN_CHUNK, TRL_LOGPROB_VOCAB_CHUNK
    from nbtools.packing.logps import LOGPROB_VOCAB_CHUNK

    assert (TRL_LOGPROB_TOKEN_CHUNK, TRL_LOGPROB_VOCAB_CHUNK) == (TOKEN_CHUNK_SIZE, LOGPROB_VOCAB_CHUNK)
    packed = estimate_memory(QWEN3_VL_4B, packing=True, **SETUP)
    answers = 4 * 2 * 100  # 4 pairs, chosen + rejected of 100 tokens
    assert packed.logits_bytes == answers * 32_768 * 4 * 2  # one fp32 tile and its gradient
    assert packed.logits_bytes < answers * 151_936 * 4  # less than one fp32 copy of the full-vocabulary logits
    # past one token tile the term stops growing: 2,000-token answers give 16,000 scored tokens, 4 tiles of 4,096
    long = estimate_memory(QWEN3_VL_4B, packing=True, **{**SETUP, "answer_tokens": 2000, "max_context_length": 4096})
    assert long.logits_bytes == 4096 * 32_768 * 4 * 2


def test_fsdp_shards_weights_and_optimizer_state_per_device():
    ddp = estimate_memory(QWEN3_VL_4B, strategy="ddp", num_devices=4, **SETUP)
    single = estimate_memory(QWEN3_VL_4B, **SETUP)
    assert ddp.total_bytes == single.total_bytes  # DDP: a full copy on every device
    fsdp = estimate_memory(QWEN3_VL_4B, strategy="fsdp", num_devices=4, **SETUP)
    assert fsdp.weights_bytes == math.ceil(single.weights_bytes / 4)
    assert fsdp.optimizer_bytes == math.ceil(single.optimizer_bytes / 4)
    assert fsdp.lora_grad_bytes == math.ceil(single.lora_grad_bytes / 4)
    assert fsdp.activation_bytes == single.activation_bytes  # activations are per device either way
    # gathered while working: at least the (tied) embedding matrix, far less than the whole model
    embeddings = 151_936 * 2560 * 2
    assert embeddings <= fsdp.gathered_bytes < single.weights_bytes / 2
    assert fsdp.total_bytes < single.total_bytes
    assert any(label.startswith("gathered shards") for label, _ in fsdp.rows())
    assert "sharded over 4 devices" in fsdp.format()
    # one device: nothing to shard over
    assert estimate_memory(QWEN3_VL_4B, strategy="fsdp", num_devices=1, **SETUP).total_bytes == single.total_bytes
    with pytest.raises(ValueError, match="strategy must be one of ddp, fsdp"):
        estimate_memory(QWEN3_VL_4B, strategy="zero3", **SETUP)


def test_advice_names_packing_and_fsdp_when_it_does_not_fit():
    tight = estimate_memory(QWEN3_VL_4B, gpu_memory_gib=8, **SETUP)
    assert tight.fits is False
    assert any("packing" in tip for tip in tight.advice)
    assert any("distributed: fsdp" in tip for tip in tight.advice)
    sharded = estimate_memory(QWEN3_VL_4B, gpu_memory_gib=8, packing=True, strategy="fsdp", num_devices=8, **SETUP)
    assert sharded.fits is True and sharded.total_gib < 8 * 0.92


