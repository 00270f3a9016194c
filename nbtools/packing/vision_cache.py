"""Encode each step's images once and reuse the features for the reference pass.

The vision tower is frozen and carries no adapter by default, so for a given batch its
output is identical under the policy and under the reference (adapter disabled). The policy
forward encodes the pixels (transformers returns the encoder outputs as ``image_outputs`` /
``video_outputs``); the reference forward takes them back through ``mm_encoder_outputs``
instead of the pixels. When any parameter of the image path is trainable (LoRA on the vision
tower or projector, or an unfrozen tower), the features differ between the two passes and we
fall back to encoding per pass.

A picture or clip that fills several places of a batch (a video after the first image of an
image-contrast row; the clip and rejected pictures an mDPO contrast row shares with its pair) is
encoded once here and its features repeated (the collator's ``image_copies`` / ``video_copies``);
encoding per pass encodes every place, as before.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager

import torch

from .layout import MEDIA_COPIES
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


def _per_item(output, order: list[int], count: int):
    """``output`` (features of ``count`` distinct items) with its per-item features laid out as ``order`` says, or
    None when this family's output is not a tuple of per-item features (Qwen-VL's ``pooler_output``, and Qwen3-VL's
    ``deepstack_features``: one such tuple per layer). Patch-level fields (``last_hidden_state``) keep the
    distinct items only: the language model reads the per-item features."""
    pooled = getattr(output, "pooler_output", None)
    deepstack = getattr(output, "deepstack_features", None)
    layers = list(deepstack) if deepstack is not None else []
    if not all(isinstance(part, (tuple, list)) and len(part) == count for part in [pooled, *layers]):
        return None
    output.pooler_output = tuple(pooled[index] for index in order)
    if deepstack is not None:
        output.deepstack_features = [tuple(layer[index] for index in order) for layer in layers]
    return output


def _encode(method, pixels, grid_key: str, extras: dict, copies):
    """``method``'s outputs for the batch's pictures (or videos); each one listed more than once in ``copies`` (per
    grid row, the first row of the same item) is encoded once and its features repeated."""
    grid = extras.get(grid_key)
    if copies is None or grid is None:
        return _call_encoder(method, pixels, extras)
    copies = [int(c) for c in copies.tolist()]
    distinct = [row for row, first in enumerate(copies) if first == row]
    chunks = torch.split(pixels, grid.prod(dim=-1).tolist())
    output = _call_encoder(method, torch.cat([chunks[row] for row in distinct]),
                           dict(extras, **{grid_key: grid[distinct]}))
    slot = {row: index for index, row in enumerate(distinct)}
    expanded = _per_item(output, [slot[first] for first in copies], len(distinct))
    return expanded if expanded is not None else _call_encoder(method, pixels, extras)


def encode_images(model, batch: dict) -> dict | None:
    """Encoder outputs for the batch's images/videos, computed once without autograd.

    Only valid when :func:`vision_features_reusable` holds: nothing on the image path trains,
    so no gradient has to flow back through it. Skipping the graph also spares the backward
    pass through the frozen tower that gradient checkpointing's input-grad hooks would cause.
    A picture or clip the batch holds more than once (``image_copies`` / ``video_copies``, from the
    collator: a video after the first image of an image-contrast row, media shared with an mDPO contrast row)
    is encoded once and its features go to each place it fills.
    """
    base = unwrap_model(model)
    backbone = getattr(base, "model", base)
    outputs = {}
    with torch.no_grad():
        if batch.get("pixel_values") is not None:
            extras = {"image_grid_thw": batch.get("image_grid_thw"), "image_sizes": batch.get("image_sizes")}
            outputs["image"] = _encode(backbone.get_image_features, batch["pixel_values"], "image_grid_thw", extras,
                                       batch.get(MEDIA_COPIES["image"]))
        if batch.get("pixel_values_videos") is not None:
            extras = {"video_grid_thw": batch.get("video_grid_thw")}
            outputs["video"] = _encode(backbone.get_video_features, batch["pixel_values_videos"], "video_grid_thw",
                                       extras, batch.get(MEDIA_COPIES["video"]))
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
