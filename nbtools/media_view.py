"""HTML for a pair's media as people look at it: image thumbnails, a video's frames, rejected images.

Shared by the preview gallery, the flipped-pairs page, the side by side and the model lab, so a
video shows the same way everywhere: a strip of a handful of the frames the model sees (sampled
with the run's ``fps`` / ``max_frames`` / ``video_max_pixels``), each captioned with its time in
the video. Frames are the safe default: lossless codecs such as ffv1 in .mkv play in no browser.
Where a browser can play the file (H.264/VP8/VP9/AV1 in .mp4/.webm) and it is small, a
``<video>`` element can be shown too (:func:`video_element_html`).

An image or video that cannot be read is a labelled placeholder, never a traceback: a preview
is where a user goes to find such files.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Callable, Optional, Sequence

STRIP_FRAMES = 6  # frames shown per video: enough to see motion, small enough for a table cell
FRAME_PX = 72  # longest side of a frame thumbnail
ERROR_COLOUR = "#c62828"
# What browsers play natively (HTML5 <video>), by container extension and codec.
PLAYABLE = {".mp4": ("video/mp4", {"h264", "av1"}), ".m4v": ("video/mp4", {"h264", "av1"}),
            ".webm": ("video/webm", {"vp8", "vp9", "av1"})}
MAX_EMBED_BYTES = 4 * 1024 * 1024  # a <video> is embedded as a data: URI only up to this size

Src = Callable[[object], str]  # PIL image -> an <img> src (a data: URI, or a file written next to a page)


def jpeg_src(size: int = FRAME_PX) -> Src:
    """Thumbnails as inline JPEG data URIs (they survive in a saved notebook)."""
    from nbtools.images import image_data_uri

    return lambda image: image_data_uri(image, size, "JPEG", quality=80)


def clip_timestamps(clip) -> list[Optional[float]]:
    """Seconds into the video of each sampled frame (None where the video's fps is unknown); the copy of
    the last frame that pads an odd count is not a sampled frame (people should not see it twice)."""
    fps = getattr(clip.metadata, "fps", None)
    return [float(i) / fps if fps else None for i in clip.sampled_indices]


def strip_frames(clip, count: int = STRIP_FRAMES) -> list[tuple[object, Optional[float]]]:
    """Up to ``count`` of the clip's sampled frames, evenly spread, first and last included:
    ``[(PIL image, seconds), ...]``."""
    from PIL import Image

    total = len(clip.sampled_indices)
    if total == 0:
        return []
    if total <= count:
        picks = list(range(total))
    else:
        picks = sorted({round(k * (total - 1) / (count - 1)) for k in range(count)})
    times = clip_timestamps(clip)
    return [(Image.fromarray(clip.frames[i]), times[i] if i < len(times) else None) for i in picks]


def _seconds(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.1f} s"


def frame_strip_html(clip, src: Optional[Src] = None, count: int = STRIP_FRAMES, frame_px: int = FRAME_PX) -> str:
    """The clip as a row of frame thumbnails captioned with their time, and a line on what was sampled."""
    src = src or jpeg_src(frame_px)
    frames = strip_frames(clip, count)
    cells = "".join(
        f'<figure style="margin:0 3px 0 0;display:inline-block;text-align:center">'
        f'<img src="{html.escape(src(image), quote=True)}" alt="frame at {_seconds(t) or "?"}" '
        f'style="width:{frame_px}px;height:auto;display:block;border:1px solid #d1d5db">'
        f'<figcaption style="font-size:11px;color:#555">{_seconds(t)}</figcaption></figure>'
        for image, t in frames)
    name = Path(str(clip.path)).name
    fps = getattr(clip.metadata, "fps", None)
    source = f" of a {fps:g} fps video" if fps else ""
    sampled = len(clip.sampled_indices)
    caption = (f"video {html.escape(name)}: {sampled} frame{'s' if sampled != 1 else ''} sampled{source}"
               + (f", {len(frames)} shown" if len(frames) < sampled else ""))
    return (f'<div class="nbt-frames" title="{html.escape(str(clip.path), quote=True)}" '
            f'style="white-space:nowrap;overflow-x:auto;margin:2px 0">{cells}'
            f'<div style="font-size:11px;color:#555">{caption}</div></div>')


def placeholder_html(path: str, reason: str, kind: str = "video") -> str:
    """What a preview shows for media it cannot read: the file, and why."""
    return (f'<div class="nbt-unreadable" title="{html.escape(str(path), quote=True)}" '
            f'style="color:{ERROR_COLOUR};border:1px dashed {ERROR_COLOUR};padding:4px;margin:2px 0;font-size:12px">'
            f"cannot read {kind} {html.escape(Path(str(path)).name)}: {html.escape(reason)}</div>")


def read_clip(path: str, settings=None, family: str = "qwen3_vl"):
    """``(Clip, None)``, or ``(None, reason)`` when the video cannot be decoded (missing, corrupt, not a video)."""
    from nbtools.images import RemoteBackendMissing
    from nbtools.video import VideoError, VideoSettings, load_clip

    try:
        return load_clip(path, settings or VideoSettings(), family), None
    except (VideoError, RemoteBackendMissing, OSError) as exc:  # undecodable or unreachable; a bug propagates
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if reason.startswith(f"{path}: "):  # the placeholder names the file already
            reason = reason[len(str(path)) + 2:]
        return None, reason[:400]


def video_html(path: str, settings=None, family: str = "qwen3_vl", src: Optional[Src] = None) -> str:
    """A video file as a frame strip, or a placeholder naming the file when it cannot be read."""
    clip, reason = read_clip(path, settings, family)
    return frame_strip_html(clip, src) if clip is not None else placeholder_html(path, reason)


def browser_mime(path) -> Optional[str]:
    """The MIME type when browsers can play ``path`` natively (container and codec checked), else None."""
    suffix = Path(str(path)).suffix.lower()
    if suffix not in PLAYABLE:
        return None
    mime, codecs = PLAYABLE[suffix]
    try:
        import av

        with av.open(str(path)) as container:
            streams = container.streams.video
            codec = streams[0].codec_context.name if streams else None
    except (av.error.FFmpegError, OSError):  # not a container PyAV reads: the frame strip shows it instead
        return None
    return mime if codec in codecs else None


def video_element_html(path, max_bytes: int = MAX_EMBED_BYTES, width: int = 320) -> str:
    """An HTML5 ``<video>`` holding the file (a data: URI, so a saved notebook keeps it), or "" when
    browsers cannot play it or it is larger than ``max_bytes``; the frame strip stays the default."""
    mime = browser_mime(path)
    try:
        size = Path(str(path)).stat().st_size
    except OSError:
        return ""
    if mime is None or size > max_bytes:
        return ""
    data = base64.b64encode(Path(str(path)).read_bytes()).decode("ascii")
    return (f'<video controls muted preload="metadata" style="max-width:{width}px" '
            f'src="data:{mime};base64,{data}"></video>')


def labelled(label: str, body: str) -> str:
    """A small caption above a group of media (e.g. the rejected answer's images)."""
    return (f'<div class="nbt-media-group" style="margin:2px 0"><div style="font-size:11px;color:#555">'
            f"{html.escape(label)}</div>{body}</div>")


def images_html(images: Sequence, src: Src, px: int, titles: Sequence[str] = ()) -> str:
    """Thumbnails of PIL images (``src`` makes each one's address)."""
    out = []
    for i, image in enumerate(images):
        title = f' title="{html.escape(titles[i], quote=True)}"' if i < len(titles) else ""
        out.append(f'<img src="{html.escape(src(image), quote=True)}"{title} '
                   f'style="width:{px}px;height:auto;margin:2px">')
    return "".join(out)


CHOSEN_IMAGES_LABEL = "images (chosen answer)"
REJECTED_IMAGES_LABEL = "rejected_images (rejected answer)"


def image_sets_html(chosen: str, rejected: Optional[str], chosen_label: str = CHOSEN_IMAGES_LABEL,
                    rejected_label: str = REJECTED_IMAGES_LABEL) -> str:
    """A pair's rendered images; for an image-contrast pair (``rejected`` given) both sets, labelled."""
    if rejected is None:
        return chosen
    return labelled(chosen_label, chosen) + labelled(rejected_label, rejected)


def pair_media_html(images: Sequence, rejected_images: Optional[Sequence], clips: Sequence, src: Src,
                    image_px: int = 128, frame_px: int = FRAME_PX) -> str:
    """A pair's loaded media: its images (labelled as the chosen answer's when the rejected answer
    has its own), the rejected answer's images, and each video's frame strip."""
    chosen = images_html(images, src, image_px)  # first: ``src`` may number the pictures in page order
    rejected = images_html(rejected_images, src, image_px) if rejected_images else None
    parts = [image_sets_html(chosen, rejected)]
    parts += [frame_strip_html(clip, src, frame_px=frame_px) for clip in clips]
    return "".join(parts)
