"""Video clips as training sees them: sampled frames plus the metadata the processor needs.

A clip is decoded once per use with PyAV through transformers' video utilities, sampled at
``fps`` (capped at ``max_frames``), and each frame is resized under ``video_max_pixels`` to the
size the model's video processor will keep. The metadata (source fps, sampled frame indices)
travels with the frames: Qwen3-VL writes each frame group's timestamp into the prompt from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional


@dataclass(frozen=True)
class VideoSettings:
    """How frames are taken from a video (the run config's fps / max_frames / video_max_pixels)."""

    fps: float = 2.0
    max_frames: int = 16
    video_max_pixels: Optional[int] = 128 * 128

    @classmethod
    def from_config(cls, config) -> "VideoSettings":
        return cls(float(config.fps), int(config.max_frames), config.video_max_pixels)


@dataclass
class Clip:
    """One decoded video: ``frames`` (T, H, W, 3) uint8 and transformers' ``VideoMetadata``."""

    path: str
    frames: Any  # numpy.ndarray
    metadata: Any  # transformers.video_utils.VideoMetadata (fps, frames_indices, total_num_frames, ...)
    settings: VideoSettings


def load_clip(path: str, settings: VideoSettings, family: str = "qwen3_vl") -> Clip:
    """Decode, sample and resize one video (see the module docstring)."""
    raise NotImplementedError("video loading lands with issue 12 (helper: video core)")
