"""Short clips for the sample sets: a flat grey control clip, and lossless FFV1-in-AVI encoding that gives
equal bytes for equal frames."""

from __future__ import annotations

import io

CLIP_SIZE = (64, 64)  # width, height: 2x2 merged tokens per frame group on the tiny models
CLIP_FRAMES = 8
CLIP_FPS = 2  # the default RunConfig.fps: every frame is sampled


def plain_clip(size: tuple[int, int] = CLIP_SIZE, frames: int = CLIP_FRAMES, grey: int = 128):
    """A clip of one flat grey: the control that carries no cue at all."""
    import numpy as np

    return np.full((frames, size[1], size[0], 3), grey, dtype=np.uint8)


def encode_lossless_video(frames, fps: int = CLIP_FPS) -> bytes:
    """``frames`` (T, H, W, 3) uint8 as an FFV1 AVI: lossless, so decoding gives the pixels back.

    Encoded on one thread with the muxer's bit-exact flag (no encoder version string, no random
    ids): equal frames give equal bytes on every run. AVI rather than Matroska because AVI stores
    the frame count, which PyAV (and so transformers' video loader) reads.
    """
    import av

    buffer = io.BytesIO()
    # A small reserved index (the default reserves 1 KiB per stream for files of any length) keeps
    # tiny clips tiny; a longer clip still gets its full index at the end of the file.
    options = {"fflags": "+bitexact", "reserve_index_space": "64"}
    with av.open(buffer, "w", format="avi", options=options) as container:
        stream = container.add_stream("ffv1", rate=fps, options={"threads": "1"})
        stream.codec_context.thread_count = 1
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "bgr0"  # FFV1's lossless RGB layout
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()
