"""Video clips as training sees them: sampled frames plus the metadata the processor needs.

A clip is decoded once per use with PyAV through transformers' video utilities, sampled at
``fps`` (capped at ``max_frames``), and each frame is resized under ``video_max_pixels`` to the
size the model's video processor will keep. The metadata (source fps, sampled frame indices)
travels with the frames: Qwen3-VL writes each frame group's timestamp into the prompt from it.

The arithmetic here (which frames, what size, how many tokens) mirrors the Qwen-VL video
processors of transformers 5.24 with the settings :func:`video_processor_settings` puts on
them, so that the validator's token counts are what training will see. Three rules hold:

* frames are taken at ``fps`` per second of the video's own time (frame ``k`` at ``k / fps``
  seconds); a clip that would give more than ``max_frames`` gets ``max_frames`` spread evenly
  over its whole length instead;
* each frame is at most ``video_max_pixels`` (both sides multiples of one token's side, the
  aspect ratio kept as closely as that allows) and is never enlarged beyond one token per side;
* the vision encoder takes frames in pairs (temporal patch 2): an odd count is padded by
  repeating the last frame, exactly as the processor pads it, so ``T`` frames cost
  ``ceil(T / 2)`` frame groups of tokens.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from nbtools.errors import UserError


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
    """One decoded video: ``frames`` (T, H, W, 3) uint8 and transformers' ``VideoMetadata``.

    ``frames`` are already at the size the processor keeps, and ``T`` is a multiple of the
    temporal patch (an odd sample is padded with a copy of its last frame, as the processor
    would pad it). ``metadata.frames_indices[i]`` is the source index of ``frames[i]`` (the
    padding copy repeats the last index); ``metadata.fps`` is the video's own frame rate.
    """

    path: str
    frames: Any  # numpy.ndarray
    metadata: Any  # transformers.video_utils.VideoMetadata (fps, frames_indices, total_num_frames, ...)
    settings: VideoSettings

    @property
    def sampled_indices(self) -> list[int]:
        """The source frame indices actually sampled (without the padding copy)."""
        return _without_padding(list(self.metadata.frames_indices))


class VideoError(UserError, ValueError):
    """A video that cannot be decoded; the message names the file and the fix."""


# --- which frames -------------------------------------------------------------------------

def sample_indices(total_frames: int, video_fps: float, settings: VideoSettings) -> list[int]:
    """Source frame indices to take: one every ``1 / fps`` seconds of the video's own time,
    or ``max_frames`` spread evenly over the whole clip when that would give more.

    ``total_frames`` and ``video_fps`` are what PyAV reports (``stream.frames``,
    ``stream.average_rate``); at least one frame is always taken.
    """
    if total_frames <= 0:
        return []
    video_fps = float(video_fps) if video_fps and video_fps > 0 else float(settings.fps)
    duration = total_frames / video_fps
    # frames at 0, 1/fps, 2/fps, ... while inside the clip (a small tolerance absorbs float noise)
    count = max(1, math.ceil(duration * settings.fps - 1e-9))
    if count > settings.max_frames:
        count = max(1, int(settings.max_frames))
        if count == 1:
            return [0]
        # evenly over the clip, first and last frame included
        return sorted({round(i * (total_frames - 1) / (count - 1)) for i in range(count)})
    indices = [min(total_frames - 1, int(k * video_fps / settings.fps + 1e-9)) for k in range(count)]
    return sorted(set(indices))  # fps above the video's own rate would repeat frames: keep each once


def padded_count(num_frames: int, temporal_patch_size: int = 2) -> int:
    """Frames the vision encoder sees: ``num_frames`` rounded up to the temporal patch (at least one patch)."""
    num_frames = max(int(num_frames), 1)
    return num_frames + (-num_frames % temporal_patch_size)


def _without_padding(indices: list[int]) -> list[int]:
    while len(indices) > 1 and indices[-1] == indices[-2]:  # sampled indices are distinct: repeats are padding
        indices.pop()
    return indices


def frame_group_timestamps(indices: Sequence[int], video_fps: float, temporal_patch_size: int = 2) -> list[float]:
    """Seconds Qwen3-VL's processor writes before each frame group (``<1.5 seconds>``):
    the mean time of the first and last frame of the group, the last index repeated to pad."""
    indices = list(indices)
    if len(indices) % temporal_patch_size:
        indices += [indices[-1]] * (temporal_patch_size - len(indices) % temporal_patch_size)
    times = [i / video_fps for i in indices]
    return [(times[i] + times[i + temporal_patch_size - 1]) / 2 for i in range(0, len(times), temporal_patch_size)]


def timestamp_texts(indices: Sequence[int], video_fps: float, temporal_patch_size: int = 2) -> list[str]:
    """The timestamp strings Qwen3-VL puts in the prompt, one per frame group."""
    return [f"<{t:.1f} seconds>" for t in frame_group_timestamps(indices, video_fps, temporal_patch_size)]


# --- what size --------------------------------------------------------------------------------

@dataclass(frozen=True)
class VideoGeometry:
    """How a family's video processor cuts frames into tokens, with the settings applied.

    ``budget_over_frames``: Qwen3-VL compares ``min_pixels``/``max_pixels`` with
    frames x height x width (and caps each frame at ``max_video_tokens`` tokens when
    ``cap_pixels_per_frame``); Qwen2/2.5-VL compare them with one frame's height x width.
    """

    family: str
    patch_size: int
    merge_size: int
    temporal_patch_size: int
    min_pixels: int  # size["shortest_edge"]
    max_pixels: int  # size["longest_edge"]
    budget_over_frames: bool
    cap_pixels_per_frame: bool = False
    max_video_tokens: int = 0
    timestamps: bool = False  # Qwen3-VL writes "<t seconds>" before each frame group

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size


VIDEO_MIN_PIXELS = 56 * 56  # the smallest video_max_pixels the run config accepts
VIDEO_FAMILIES = ("qwen3_vl", "qwen2_5_vl", "qwen2_vl")  # the families whose processors take videos
# The shipped processors' sizes (transformers 5.24 class defaults): (patch, merge, temporal, min, max).
_DEFAULTS = {
    "qwen3_vl": (16, 2, 2, 128 * 32 * 32, 32 * 32 * 768),
    "qwen2_5_vl": (14, 2, 2, 128 * 28 * 28, 28 * 28 * 768),
    "qwen2_vl": (14, 2, 2, 128 * 28 * 28, 28 * 28 * 768),
}


def supports_video(family: Optional[str]) -> bool:
    return _family_key(family) in VIDEO_FAMILIES


def _family_key(family: Optional[str]) -> str:
    from nbtools.images import _ALIASES

    key = (family or "qwen3_vl").lower()
    return _ALIASES.get(key, key)


def video_processor_settings(family: str, settings: VideoSettings, patch_size: Optional[int] = None,
                             merge_size: Optional[int] = None, temporal_patch_size: Optional[int] = None) -> dict:
    """The attributes nbtools sets on a family's video processor for ``settings``.

    ``size["longest_edge"]`` and ``size["shortest_edge"]`` mean different things per family:
    Qwen3-VL reads them as a budget over frames x height x width, so there the per-frame cap
    is ``max_video_tokens`` (``video_max_pixels`` in tokens, with ``cap_pixels_per_frame``)
    and the total is set so that it never binds for up to ``max_frames`` frames; Qwen2/2.5-VL
    read them per frame. The lower bound is one token per frame side, so frames are never
    enlarged (a small video costs few tokens).
    """
    key = _family_key(family)
    if key not in _DEFAULTS:
        raise ValueError(f"{family!r} has no video processor; video families: {', '.join(VIDEO_FAMILIES)}")
    patch, merge, temporal, _, _ = _DEFAULTS[key]
    patch, merge, temporal = patch_size or patch, merge_size or merge, temporal_patch_size or temporal
    factor = patch * merge
    per_frame = int(settings.video_max_pixels or _DEFAULTS[key][4])
    frames = padded_count(int(settings.max_frames), temporal)
    out: dict[str, Any] = {"fps": float(settings.fps), "max_frames": int(settings.max_frames)}
    if key == "qwen3_vl":
        tokens = max(1, per_frame // (factor * factor))
        out.update(size={"shortest_edge": temporal * factor * factor,
                         "longest_edge": tokens * factor * factor * frames},
                   cap_pixels_per_frame=True, max_video_tokens=tokens)
    else:
        out.update(size={"shortest_edge": factor * factor, "longest_edge": max(per_frame, factor * factor)},
                   cap_pixels_per_frame=False)
    return out


def video_geometry(family: Optional[str] = None, settings: Optional[VideoSettings] = None) -> VideoGeometry:
    """The geometry a family's processor has once :func:`video_processor_settings` is applied."""
    key = _family_key(family)
    applied = video_processor_settings(key, settings or VideoSettings())  # refuses a family without videos
    patch, merge, temporal, _, _ = _DEFAULTS[key]
    return VideoGeometry(key, patch, merge, temporal, applied["size"]["shortest_edge"],
                         applied["size"]["longest_edge"], key == "qwen3_vl", applied["cap_pixels_per_frame"],
                         applied.get("max_video_tokens", 0), key == "qwen3_vl")


def video_processor_family(video_processor, family: Optional[str] = None) -> str:
    """Which video-size rules a loaded video processor follows: "qwen3_vl" (a budget over frames x
    height x width) or a Qwen2 family (per frame). The class decides; ``family`` tells Qwen2.5-VL
    from Qwen2-VL (they share a class) and names the rules of a class we do not know."""
    name = type(video_processor).__name__
    if name.startswith("Qwen3VL") or _family_key(family) == "qwen3_vl" and not name.startswith("Qwen2"):
        return "qwen3_vl"
    return _family_key(family) if _family_key(family) in ("qwen2_vl", "qwen2_5_vl") else "qwen2_vl"


def processor_video_geometry(processor, family: Optional[str] = None) -> Optional[VideoGeometry]:
    """The geometry of a loaded processor's video processor (None when it has none)."""
    vp = getattr(processor, "video_processor", None)
    if vp is None:
        return None
    key = video_processor_family(vp, family)
    qwen3 = key == "qwen3_vl"
    size = getattr(vp, "size", None)
    cap = getattr(vp, "cap_pixels_per_frame", False)

    def get(key):
        return size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return VideoGeometry(key, int(vp.patch_size), int(vp.merge_size), int(vp.temporal_patch_size),
                         int(get("shortest_edge")), int(get("longest_edge")), qwen3,
                         bool(cap), int(getattr(vp, "max_video_tokens", 0) or 0) if cap else 0, qwen3)


def frame_size(num_frames: int, height: int, width: int, geo: VideoGeometry) -> tuple[int, int]:
    """(height, width) nbtools resizes ``num_frames`` frames of ``height`` x ``width`` to: the
    processor's own target, taken again until the processor keeps it unchanged.

    One pass of the processor's rule is not always stable: for a very elongated frame the short
    side is held at one token while the long side is cut for the budget, and a second pass cuts
    it again. Frames at the fixed point go through the processor untouched, so what the
    validator counts is what the model sees.
    """
    size = (height, width)
    for _ in range(16):  # each pass keeps the size or shrinks it: a few passes reach the fixed point
        nxt = processor_frame_size(num_frames, *size, geo)
        if nxt == size:
            break
        size = nxt
    return size


def processor_frame_size(num_frames: int, height: int, width: int, geo: VideoGeometry) -> tuple[int, int]:
    """(height, width) one pass of the video processor's resize gives ``num_frames`` frames of
    ``height`` x ``width``: ``smart_resize`` of the Qwen2-VL and Qwen3-VL video processors
    (transformers 5.24), including Qwen3-VL's per-frame cap; ``num_frames`` is the count the
    processor receives."""
    if min(height, width) <= 0:
        raise ValueError(f"video frame size must be positive, got {width}x{height}")
    factor = geo.factor
    if not geo.budget_over_frames:
        from nbtools.images import smart_resize

        max_pixels = geo.max_pixels
        if geo.cap_pixels_per_frame:
            total = int(geo.max_video_tokens * factor * factor * 0.9)
            max_pixels = max(min(max_pixels, total * geo.temporal_patch_size // num_frames), int(geo.min_pixels * 1.05))
        return smart_resize(height, width, factor, geo.min_pixels, max_pixels)
    temporal = geo.temporal_patch_size
    if num_frames < temporal:
        raise ValueError(f"{num_frames} frame(s): the processor needs at least {temporal}")
    max_pixels = geo.max_pixels
    if geo.cap_pixels_per_frame:
        per_frame = max(min(geo.max_video_tokens * factor * factor, geo.max_pixels // num_frames),
                        int(geo.min_pixels * 1.05))
        max_pixels = per_frame * num_frames
    if height < factor or width < factor:  # Qwen3-VL first scales a side under one token up to one token
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    from nbtools.images import MAX_ASPECT_RATIO

    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(f"absolute aspect ratio must be smaller than {MAX_ASPECT_RATIO}, "
                         f"got {max(height, width) / min(height, width)}")
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    t_bar = round(num_frames / temporal) * temporal
    if t_bar * h_bar * w_bar > max_pixels:
        beta = math.sqrt(num_frames * height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif t_bar * h_bar * w_bar < geo.min_pixels:
        beta = math.sqrt(geo.min_pixels / (num_frames * height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def video_tokens(num_frames: int, height: int, width: int, geo: VideoGeometry) -> int:
    """Video placeholder tokens (``<|video_pad|>``) for ``num_frames`` sampled frames of the source size."""
    frames = padded_count(num_frames, geo.temporal_patch_size)
    h, w = frame_size(frames, height, width, geo)
    groups = frames // geo.temporal_patch_size
    return groups * (h // geo.factor) * (w // geo.factor)


# --- reading ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class VideoInfo:
    """What a video's container says, as transformers' PyAV reader will see it."""

    frames: int  # total frames (counted from the packets when the container does not say)
    fps: float  # the stream's average frame rate
    width: int
    height: int
    format: str = ""

    @property
    def duration(self) -> float:
        return self.frames / self.fps if self.fps else 0.0


def probe_video(source, name: Optional[str] = None, deep: bool = False) -> VideoInfo:
    """Read a video's header (a path or an open binary file; no frame is decoded unless ``deep``).

    Raises :class:`VideoError` naming ``name`` (default: the path) and the fix when the file
    cannot be used: not a container, no video stream, no frame rate, no frames, or (``deep``)
    fewer decodable frames than the header declares.
    """
    import av

    name = name or os.fspath(source)
    try:
        with av.open(source) as container:
            if not container.streams.video:
                raise VideoError(f"{name}: the file has no video stream (fix: point at a video file)")
            stream = container.streams.video[0]
            rate = stream.average_rate
            frames = int(stream.frames or 0)
            if not frames:  # e.g. Matroska keeps no frame count: count the stream's packets (no decoding)
                frames = sum(1 for packet in container.demux(stream) if packet.size)
            info = VideoInfo(frames, float(rate) if rate else 0.0, stream.codec_context.width or 0,
                             stream.codec_context.height or 0, container.format.name)
            if deep and info.frames:
                container.seek(0)
                decoded = 0
                try:
                    for _ in container.decode(video=0):
                        decoded += 1
                except Exception as exc:
                    raise VideoError(f"{name}: frame {decoded} does not decode ({type(exc).__name__}: {_short(exc)}); "
                                     "the file looks damaged or truncated (fix: re-encode or re-download it)") from None
                if decoded < info.frames:
                    raise VideoError(f"{name}: only {decoded} of the {info.frames} frames the header declares decode; "
                                     "the file looks truncated (fix: re-encode or re-download it)")
    except VideoError:
        raise
    except Exception as exc:  # av.error.* for anything that is not a readable container
        raise VideoError(f"{name}: not a readable video ({type(exc).__name__}: {_short(exc)}) "
                         "(fix: re-encode it, e.g. to MP4/H.264, or fix the path)") from None
    if not info.fps:
        raise VideoError(f"{name}: the video stream declares no frame rate, so frames cannot be sampled at an fps "
                         "(fix: re-encode it with a constant frame rate, e.g. ffmpeg -i IN -r 25 OUT.mp4)")
    if not info.frames:
        raise VideoError(f"{name}: the video stream holds no frames (fix: re-encode or re-download it)")
    return info


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:160]


def load_clip(path: str, settings: VideoSettings, family: str = "qwen3_vl",
              geometry: Optional[VideoGeometry] = None) -> Clip:
    """Decode, sample and resize one video (see the module docstring).

    ``geometry`` overrides the family's (e.g. :func:`processor_video_geometry` of a loaded
    processor with different patch sizes). Raises :class:`VideoError` naming the file and the
    fix when the video cannot be read.
    """
    import numpy as np

    path = os.fspath(path)
    geo = geometry or video_geometry(family, settings)
    from nbtools.images import is_remote
    from nbtools.media_ref import is_embedded

    if is_remote(path):
        return _load_remote(path, settings, geo)
    if is_embedded(path):
        return _load_embedded(path, settings, geo)
    local = os.path.expanduser(path)
    if not os.path.isfile(local):
        raise VideoError(f"{path}: video file not found (fix: check the path; relative paths are relative to the "
                         "data file's folder)")
    info = probe_video(local)
    taken: list[int] = []

    def choose(metadata, **_):
        if not metadata.total_num_frames:  # the reader takes the container's count; we counted packets
            metadata.total_num_frames = info.frames
            metadata.duration = info.frames / metadata.fps if metadata.fps else None
        taken[:] = sample_indices(metadata.total_num_frames, metadata.fps, settings)
        return np.asarray(taken)

    from transformers.video_utils import load_video

    try:
        frames, metadata = load_video(local, backend="pyav", sample_indices_fn=choose)
    except Exception as exc:  # PyAV raises its own errors for damaged streams
        raise VideoError(f"{path}: cannot decode the video ({type(exc).__name__}: {_short(exc)}) "
                         "(fix: re-encode it, e.g. to MP4/H.264, or re-download it)") from None
    if len(frames) != len(taken):
        raise VideoError(f"{path}: decoded {len(frames)} of the {len(taken)} frames sampled from the "
                         f"{metadata.total_num_frames} the header declares; the file looks truncated "
                         "(fix: re-encode or re-download it)")
    return _finish(path, frames, metadata, taken, settings, geo)


def _finish(path: str, frames, metadata, taken: list[int], settings: VideoSettings, geo: VideoGeometry) -> Clip:
    import numpy as np
    from PIL import Image

    count = padded_count(len(frames), geo.temporal_patch_size)
    height, width = frames.shape[1:3]
    try:
        new_h, new_w = frame_size(count, height, width, geo)
    except ValueError as exc:
        raise VideoError(f"{path}: {exc} (fix: crop or pad the video to a less extreme shape)") from None
    if (new_h, new_w) != (height, width):
        frames = np.stack([np.asarray(Image.fromarray(f).resize((new_w, new_h), Image.Resampling.BICUBIC))
                           for f in frames])
    indices = list(taken)
    if count > len(frames):  # the processor would pad the temporal patch with the last frame: do it here
        pad = count - len(frames)
        frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)])
        indices += [indices[-1]] * pad
    metadata.frames_indices = indices
    return Clip(path, np.ascontiguousarray(frames), metadata, settings)


def _load_embedded(path, settings: VideoSettings, geo: VideoGeometry) -> Clip:
    """A video stored in the data's bytes: PyAV's reader takes a file, so it is written to a temporary one."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="nbtools-video-") as folder:
        local = os.path.join(folder, "clip")
        with open(local, "wb") as handle:
            handle.write(path.data)
        try:
            clip = load_clip(local, settings, geo.family, geo)
        except VideoError as exc:
            raise VideoError(str(exc).replace(local, str(path))) from None
    clip.path = path
    return clip


def _load_remote(path: str, settings: VideoSettings, geo: VideoGeometry) -> Clip:
    import tempfile

    from nbtools.images import remote_filesystem

    suffix = os.path.splitext(path.split("?")[0])[1][:10]
    with tempfile.TemporaryDirectory(prefix="nbtools-video-") as folder:
        local = os.path.join(folder, "clip" + suffix)
        try:
            with remote_filesystem(path).open(path, "rb") as src, open(local, "wb") as dst:
                dst.write(src.read())
        except UserError:
            raise
        except Exception as exc:
            raise VideoError(f"{path}: cannot read the remote video ({type(exc).__name__}: {_short(exc)}) "
                             "(fix: check the URL, the network and your credentials)") from None
        try:
            clip = load_clip(local, settings, geo.family, geo)
        except VideoError as exc:
            raise VideoError(str(exc).replace(local, path)) from None
    clip.path = path
    return clip


# --- handing clips to a processor -------------------------------------------------------------

def processor_video_kwargs(clips: Sequence[Clip]) -> dict:
    """Keyword arguments that hand ``clips`` to a Qwen-VL processor call, in prompt order.

    Returns ``{}`` for no clips, else exactly::

        {"videos": [clip.frames, ...],            # numpy (T, H, W, 3) uint8, one per clip
         "video_metadata": [VideoMetadata, ...],  # a copy per clip: fps, total_num_frames, frames_indices
         "do_sample_frames": False}               # the frames are already sampled: never resample

    so ``processor(text=..., images=..., **processor_video_kwargs(clips), return_tensors="pt")``
    gives ``pixel_values_videos`` / ``video_grid_thw`` and, for Qwen3-VL, the right
    ``<t seconds>`` timestamps (from the video's own fps; without the metadata transformers
    assumes 24 fps). The metadata lists the sampled indices without the padding copy, so the
    processor pads the timestamps itself and Qwen2.5-VL's ``second_per_grid_ts`` uses the real
    sampling rate. The copies keep the clips unchanged by the processor.
    """
    if not clips:
        return {}
    metadata = []
    for clip in clips:
        meta = copy.copy(clip.metadata)
        meta.frames_indices = clip.sampled_indices
        metadata.append(meta)
    return {"videos": [clip.frames for clip in clips], "video_metadata": metadata, "do_sample_frames": False}
