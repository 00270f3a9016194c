"""Models: loading (tiny ids, folders, hub ids), families, LoRA targets, built-in tiny VLMs."""

from .families import FAMILIES, Family, UnsupportedModelError, detect_family, supported_model_types
from .loading import (
    ModelNotAvailableOfflineError,
    apply_max_pixels,
    apply_video_settings,
    load_model_and_processor,
    load_processor,
    local_model_folder,
    resolve_model_path,
)
from .tiny import TINY_SPECS, build_tiny_model
from .warm import WARM_MODEL_ID  # registers the warm-started tiny model (warm.py builds on tiny.py)
from .variant import model_variant, strip_empty_think, variant_mismatch

TINY_MODEL_IDS: tuple[str, ...] = tuple(TINY_SPECS)

__all__ = [
    "FAMILIES",
    "Family",
    "ModelNotAvailableOfflineError",
    "TINY_MODEL_IDS",
    "WARM_MODEL_ID",
    "UnsupportedModelError",
    "apply_max_pixels",
    "apply_video_settings",
    "build_tiny_model",
    "detect_family",
    "load_model_and_processor",
    "load_processor",
    "local_model_folder",
    "model_variant",
    "resolve_model_path",
    "strip_empty_think",
    "supported_model_types",
    "variant_mismatch",
]
