"""Tiny video files for tests, encoded with PyAV under a test's tmp_path (single-threaded, seeded content)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def frame_pattern(index: int, size: int = 64) -> np.ndarray:
    """Frame ``index``: vertical stripes whose phase moves with the index (so frames differ visibly)."""
    x = np.arange(size)
    stripes = ((x + 4 * index) // 8) % 2
    grey = np.where(stripes, 230, 25).astype(np.uint8)
    frame = np.broadcast_to(grey[None, :, None], (size, size, 3)).copy()
    frame[..., 0] = (frame[..., 0].astype(int) + 10 * index).clip(0, 255)  # a red drift marks the time
    return frame


def write_clip(path: Path, codec: str = "ffv1", frames: int = 8, size: int = 64, rate: int = 4) -> Path:
    """``frames`` frames of ``size``x``size`` at ``rate`` fps; ffv1 (lossless, .mkv), mpeg4 or libx264 (.mp4)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.thread_count = 1
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "threads": "1"}
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(frame_pattern(i, size), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_clip(path: str = "clip.mkv", frames: int = 8, fps: float = 4.0, step: int = 2, size: int = 64):
    """An ``nbtools.video.Clip`` built in memory (no decoding): every ``step``-th of ``frames`` frames."""
    from transformers.video_utils import VideoMetadata

    from nbtools.video import Clip, VideoSettings

    indices = list(range(0, frames, step))
    pixels = np.stack([frame_pattern(i, size) for i in indices])
    metadata = VideoMetadata(total_num_frames=frames, fps=fps, width=size, height=size, duration=frames / fps,
                             video_backend="pyav", frames_indices=indices)
    return Clip(str(path), pixels, metadata, VideoSettings(fps=fps / step, max_frames=len(indices)))
