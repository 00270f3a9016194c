"""Which model families packing is verified for, and why it is off for the rest."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any, Optional

from nbtools.config import ConfigError, check_attention

# model_type -> rope kind. Each entry is covered by the equivalence tests in tests/test_packing*.py.
PACKING_FAMILIES = {
    "qwen3_vl": "mrope",
    "qwen2_5_vl": "mrope",
    "qwen2_vl": "mrope",
    "llava": "1d",
}
# The FlexAttention kernel nbtools.packing.block_mask registers with transformers' AttentionInterface.
BLOCK_MASK_ATTENTION = "nbtools_block_mask"
BLOCK_MASK_MODULE = "nbtools.packing.block_mask"
# Kernels that take a packed pair's mask (sdpa/eager: a 4-D tensor; the block-mask kernel: its own block mask).
PACKING_ATTENTION = ("sdpa", "eager", BLOCK_MASK_ATTENTION)


@dataclass(frozen=True)
class PackingSupport:
    supported: bool
    note: str


def packing_supported(model_or_config) -> PackingSupport:
    """Whether packed pairs give TRL's log-probs for this model; ``note`` says why not when off."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if model_type not in PACKING_FAMILIES:
        return PackingSupport(
            False,
            f"packing is off for model type {model_type!r}: only {', '.join(sorted(PACKING_FAMILIES))} "
            "are verified to give the same log-probs as separate rows",
        )
    attention = getattr(config, "_attn_implementation", None) or "eager"
    if attention not in PACKING_ATTENTION:
        return PackingSupport(
            False,
            f"packing is off with attn_implementation={attention!r}: it needs a 4-D attention mask, "
            f"which only 'sdpa', 'eager' and {BLOCK_MASK_ATTENTION!r} take; load the model with "
            "attn_implementation='sdpa'",
        )
    return PackingSupport(True, f"packing on ({model_type}, {PACKING_FAMILIES[model_type]} positions, {attention})")


@dataclass(frozen=True)
class AttentionChoice:
    implementation: str  # the name the model is loaded with (attn_implementation=...)
    note: str  # what was chosen and why, for the run's messages and run.json


def flash_attention_installed() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def block_mask_available() -> bool:
    """True when nbtools.packing.block_mask exists and registers the kernel under BLOCK_MASK_ATTENTION.

    Importing it registers the kernel with transformers, which from_pretrained needs before it sees the name.
    """
    if importlib.util.find_spec(BLOCK_MASK_MODULE) is None:
        return False
    module = importlib.import_module(BLOCK_MASK_MODULE)
    return getattr(module, "BLOCK_MASK_ATTENTION", None) == BLOCK_MASK_ATTENTION


def resolve_attention(choice: str, device_type: str, dtype: Any, packing: bool, *,
                      flash_installed: Optional[bool] = None,
                      block_mask: Optional[bool] = None) -> AttentionChoice:
    """The kernel a run loads its model with, decided before any model loads.

    ``choice``: RunConfig.attn_implementation; ``packing``: whether this run's pairs will be packed.
    ``flash_installed``/``block_mask``: what is installed (None: look). ``auto`` never picks
    flash_attention_2 for packed pairs: packing would then turn itself off. Impossible explicit
    choices raise ConfigError naming the field and the fix.
    """
    import torch

    if choice == "block-mask" and not packing:
        raise ConfigError("attn_implementation", "the block-mask kernel runs packed pairs only, and this run's pairs "
                          "will not be packed (packing: false, or a loss_type the packed step does not implement)",
                          "set attn_implementation: auto or sdpa")
    check_attention(choice, packing)
    on_cuda = device_type == "cuda"
    if choice == "block-mask":
        if not on_cuda:
            raise ConfigError("attn_implementation", "the block-mask kernel (FlexAttention) needs a CUDA GPU: torch "
                              "has no FlexAttention backward pass on the CPU, and this run is on the CPU",
                              "set attn_implementation: auto or sdpa")
        if not (block_mask if block_mask is not None else block_mask_available()):
            raise ConfigError("attn_implementation", f"the block-mask kernel needs {BLOCK_MASK_MODULE}, which this "
                              "installation of nbtools lacks", "set attn_implementation: auto or sdpa")
        return AttentionChoice(BLOCK_MASK_ATTENTION, f"attention: {BLOCK_MASK_ATTENTION} (attn_implementation: "
                                                     "block-mask)")
    if choice != "auto":
        return AttentionChoice(choice, f"attention: {choice} (attn_implementation: {choice})")
    if packing:
        if on_cuda and (block_mask if block_mask is not None else block_mask_available()):
            return AttentionChoice(BLOCK_MASK_ATTENTION, f"attention: {BLOCK_MASK_ATTENTION} (auto: packed pairs "
                                                         "on a CUDA GPU)")
        return AttentionChoice("sdpa", "attention: sdpa (auto: packed pairs need a 4-D mask)")
    half = dtype in (torch.bfloat16, torch.float16)
    if on_cuda and half and (flash_installed if flash_installed is not None else flash_attention_installed()):
        return AttentionChoice("flash_attention_2", "attention: flash_attention_2 (auto: installed, CUDA, "
                                                    "half precision, pairs not packed)")
    return AttentionChoice("sdpa", "attention: sdpa (auto)")
