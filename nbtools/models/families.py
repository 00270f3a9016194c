"""Which VLM architectures nbtools supports, and what differs between them.

A Family answers the questions other modules ask about a model without loading it:
how many pixels one image token covers, whether padding-free packing works, and which
module names belong to the vision tower, the projector and the language model (so LoRA
can be kept off the vision side and parameters can be reported per component).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from nbtools.errors import UserError


@dataclass(frozen=True)
class Family:
    """Facts about one supported VLM family."""

    name: str
    model_types: tuple[str, ...]
    # pixels one image token covers (patch side * spatial merge side, squared); None = fixed-size images
    pixels_per_token: int | None
    # side in px of the square covered by one image token (patch_size * merge_size); None = fixed-size images
    token_side_px: int | None
    # padding-free packing (position_ids reset per sequence) works for this family's attention/rope
    packing_supported: bool
    # regexes over fully-qualified module names (from model.named_modules())
    vision_tower_pattern: str
    projector_pattern: str
    language_model_pattern: str
    lm_head_pattern: str = r"^lm_head(\.|$)"
    # whether max_pixels can be applied to the image processor (dynamic resolution)
    dynamic_resolution: bool = True
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def component_of(self, module_name: str) -> str:
        """'vision', 'projector', 'language_model', 'lm_head' or 'other' for a module/parameter name."""
        # projector first: in Qwen models the merger lives inside the vision module
        if re.search(self.projector_pattern, module_name):
            return "projector"
        if re.search(self.vision_tower_pattern, module_name):
            return "vision"
        if re.search(self.lm_head_pattern, module_name):
            return "lm_head"
        if re.search(self.language_model_pattern, module_name):
            return "language_model"
        return "other"


_QWEN_LM = r"^(model\.)?language_model\."
_QWEN_VISION = r"^(model\.)?visual\."

FAMILIES: dict[str, Family] = {
    "qwen3_vl": Family(
        name="qwen3_vl",
        model_types=("qwen3_vl",),
        pixels_per_token=32 * 32,
        token_side_px=32,
        packing_supported=True,
        vision_tower_pattern=_QWEN_VISION,
        projector_pattern=r"^(model\.)?visual\.(merger|deepstack_merger_list)(\.|$)",
        language_model_pattern=_QWEN_LM,
        notes="16-px patches, 2x2 spatial merge; deepstack mergers feed vision features into early LM layers",
    ),
    "qwen2_5_vl": Family(
        name="qwen2_5_vl",
        model_types=("qwen2_5_vl",),
        pixels_per_token=28 * 28,
        token_side_px=28,
        packing_supported=True,
        vision_tower_pattern=_QWEN_VISION,
        projector_pattern=r"^(model\.)?visual\.merger(\.|$)",
        language_model_pattern=_QWEN_LM,
        notes="14-px patches, 2x2 spatial merge, windowed vision attention",
    ),
    "qwen2_vl": Family(
        name="qwen2_vl",
        model_types=("qwen2_vl",),
        pixels_per_token=28 * 28,
        token_side_px=28,
        packing_supported=True,
        vision_tower_pattern=_QWEN_VISION,
        projector_pattern=r"^(model\.)?visual\.merger(\.|$)",
        language_model_pattern=_QWEN_LM,
        notes="14-px patches, 2x2 spatial merge",
    ),
    "llava": Family(
        name="llava",
        model_types=("llava",),
        pixels_per_token=None,
        token_side_px=None,
        packing_supported=False,
        vision_tower_pattern=r"^(model\.)?vision_tower\.",
        projector_pattern=r"^(model\.)?multi_modal_projector(\.|$)",
        language_model_pattern=r"^(model\.)?language_model\.",
        dynamic_resolution=False,
        notes="fixed-size images (resized to the vision tower's image_size); max_pixels does not apply",
    ),
}

_BY_MODEL_TYPE = {mt: fam for fam in FAMILIES.values() for mt in fam.model_types}


class UnsupportedModelError(UserError, ValueError):
    """The model's architecture is not one nbtools knows how to train."""


def supported_model_types() -> list[str]:
    return sorted(_BY_MODEL_TYPE)


def _model_type_of(model_or_config: Any) -> str | None:
    if isinstance(model_or_config, str):
        return model_or_config
    if isinstance(model_or_config, dict):
        return model_or_config.get("model_type")
    config = getattr(model_or_config, "config", model_or_config)
    # a PEFT wrapper: look through to the base model's config
    if not hasattr(config, "model_type") and hasattr(model_or_config, "get_base_model"):
        config = model_or_config.get_base_model().config
    return getattr(config, "model_type", None)


def detect_family(model_or_config: Any) -> Family:
    """Family of a model, a config (object or dict) or a model_type string; clear error if unsupported."""
    model_type = _model_type_of(model_or_config)
    family = _BY_MODEL_TYPE.get(model_type or "")
    if family is None:
        raise UnsupportedModelError(
            f"model type {model_type!r} is not supported by nbtools. Supported families: "
            + ", ".join(f"{f.name} ({'/'.join(f.model_types)})" for f in FAMILIES.values())
            + ". Choose a model of one of these families, e.g. Qwen/Qwen3-VL-4B-Instruct or the built-in 'tiny-qwen3-vl'."
        )
    return family
