"""Encode each step's images once and reuse the features for the reference pass.

The vision tower is frozen and carries no adapter by default, so for a given batch its
output is identical under the policy and under the reference (adapter disabled). The policy
forward encodes the pixels (transformers returns the encoder outputs as ``image_outputs`` /
``video_outputs``); the reference forward takes them back through ``mm_encoder_outputs``
instead of the pixels. When any parameter of the image path is trainable (LoRA on the vision
tower or projector, or an unfrozen tower), the features differ between the two passes and we
fall back to encoding per pass.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager

import torch

from .logps import unwrap_model

# Sub-modules of the multimodal backbone that turn pixels into features (names per family).
VISION_MODULE_NAMES = ("visual", "vision_tower", "vision_model", "multi_modal_projector", "connector", "merger")


def vision_modules(model) -> list[torch.nn.Module]:
    """The modules on the image path (tower + projector) of a VLM, as far as they can be found."""
    base = unwrap_model(model)
    backbone = getattr(base, "model", base)
    found = []
    for name in VISION_MODULE_NAMES:
        module = getattr(backbone, name, None)
        if isinstance(module, torch.nn.Module):
            found.append(module)
    return found


def vision_features_reusable(model) -> bool:
    """True when the image path has no trainable parameter and no adapter, so its output is the same in every pass."""
    modules = vision_modules(model)
    if not modules:
        return False
    for module in modules:
        for name, parameter in module.named_parameters():
            if parameter.requires_grad or "lora_" in name:
                return False
    return True


def _call_encoder(method, pixels, extras: dict):
    accepted = inspect.signature(method).parameters
    kwargs = {k: v for k, v in extras.items() if k in accepted and v is not None}
    return method(pixels, return_dict=True, **kwargs)


def encode_images(model, batch: dict) -> dict | None:
    """Encoder outputs for the batch's images/videos, computed once without autograd.

    Only valid when :func:`vision_features_reusable` holds: nothing on the image path trains,
    so no gradient has to flow back through it. Skipping the graph also spares the backward
    pass through the frozen tower that gradient checkpointing's input-grad hooks would cause.
    """
    base = unwrap_model(model)
    backbone = getattr(base, "model", base)
    outputs = {}
    with torch.no_grad():
        if batch.get("pixel_values") is not None:
            extras = {"image_grid_thw": batch.get("image_grid_thw"), "image_sizes": batch.get("image_sizes")}
            outputs["image"] = _call_encoder(backbone.get_image_features, batch["pixel_values"], extras)
        if batch.get("pixel_values_videos") is not None:
            extras = {"video_grid_thw": batch.get("video_grid_thw")}
            outputs["video"] = _call_encoder(backbone.get_video_features, batch["pixel_values_videos"], extras)
    return outputs or None


class EncodingCounter:
    """Counts images and videos (one per grid row) encoded by the vision tower — for the benchmark and tests."""

    def __init__(self):
        self.images = 0
        self.calls = 0

    def _hook(self, module, args, kwargs):
        grid = kwargs.get("grid_thw")
        if grid is None and len(args) > 1:
            grid = args[1]
        pixels = args[0] if args else kwargs.get("pixel_values")
        self.calls += 1
        if grid is not None:
            self.images += int(grid.shape[0])
        elif pixels is not None:
            self.images += int(pixels.shape[0])

    @contextmanager
    def watch(self, model):
        tower = vision_modules(model)[0]
        handle = tower.register_forward_pre_hook(self._hook, with_kwargs=True)
        try:
            yield self
        finally:
            handle.remove()
