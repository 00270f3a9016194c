"""Which model families packing is verified for, and why it is off for the rest."""

from __future__ import annotations

from dataclasses import dataclass

# model_type -> rope kind. Each entry is covered by the equivalence tests in tests/test_packing*.py.
PACKING_FAMILIES = {
    "qwen3_vl": "mrope",
    "qwen2_5_vl": "mrope",
    "qwen2_vl": "mrope",
    "llava": "1d",
}
PACKING_ATTENTION = ("sdpa", "eager")


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
            "which only 'sdpa' and 'eager' take; load the model with attn_implementation='sdpa'",
        )
    return PackingSupport(True, f"packing on ({model_type}, {PACKING_FAMILIES[model_type]} positions, {attention})")
