"""Checks on the image and video files a dataset points at.

Each distinct path is inspected once (datasets reuse images heavily) and the inspections
run in a thread pool: opening a header is I/O bound and PIL releases the GIL while reading.
A cheap check reads the header plus the last bytes of the file, which catches the common
truncated download; ``deep`` decodes every pixel.
"""

from __future__ import annotations

import io
import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Callable, Iterable, Optional

from PIL import Image, UnidentifiedImageError

from nbtools.images import (
    MAX_ASPECT_RATIO,
    ImageGeometry,
    RemoteBackendMissing,
    UnsupportedURL,
    is_remote,
    remote_filesystem,
    resized_size,
)
from nbtools.data.fingerprint import stat_digest
from nbtools.media_ref import is_embedded

TAIL_BYTES = 4096
REMOTE_TIMEOUT_S = 10.0  # opening one remote file; a server that never answers must not hang validation
IMAGE_MAGIC = {  # what an image file starts with: listed as a video, it would "open" as a one-frame stream
    b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF", b"BM": "BMP", b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}


@dataclass(frozen=True)
class MediaInfo:
    """What one inspection found: a size, or why the file is unusable (``error``)."""

    path: str
    width: int = 0
    height: int = 0
    format: str = ""
    error: str = ""  # empty when the file is usable
    fix: str = ""
    fps: float = 0.0  # videos: the stream's frame rate (what transformers' PyAV reader samples by)
    frames: int = 0  # videos: total frames
    # local files: the one stat taken before reading, kept so the media fingerprint
    # (nbtools.data.fingerprint) needs no second stat, also for files a worker's cache already knows
    size: int = 0
    mtime_ns: int = 0

    @property
    def duration(self) -> float:
        """Seconds of video (0 for images)."""
        return self.frames / self.fps if self.fps else 0.0

    @cached_property  # once per inspected file, however many chunks name it (MediaInfo is what the caches keep)
    def stat_digest(self) -> int:
        """This file's part of the media fingerprint (see ``nbtools.data.fingerprint``)."""
        return stat_digest(self.path, self.size, self.mtime_ns)


def _remote(path: str, kind: str, inspect: Callable[[], MediaInfo]) -> MediaInfo:
    """Run a remote inspection with a time limit; any failure of the backend becomes a finding.

    The call runs in a daemon thread: a server that never answers cannot be interrupted, but
    it no longer holds up the report (or the interpreter's exit)."""
    outcome: list = []

    def work():
        try:
            outcome.append(inspect())
        except UnsupportedURL as exc:
            outcome.append(MediaInfo(path, error=str(exc), fix="copy the file somewhere local and use its path"))
        except RemoteBackendMissing as exc:
            text = str(exc)
            outcome.append(MediaInfo(path, error=text.split("; install")[0], fix="install" + text.split("; install")[1]))
        except Exception as exc:  # every backend raises its own types (network, auth, offline mode, ...)
            detail = " ".join(str(exc).split())[:160]
            outcome.append(MediaInfo(path, error=f"cannot read the remote {kind} ({type(exc).__name__}: {detail})",
                                     fix="check the URL, the network and your credentials"))

    thread = threading.Thread(target=work, name=f"inspect {path[:40]}", daemon=True)
    thread.start()
    thread.join(REMOTE_TIMEOUT_S)
    if outcome:
        return outcome[0]
    return MediaInfo(path, error=f"opening the remote {kind} timed out after {REMOTE_TIMEOUT_S:g} s",
                     fix="check that the server answers, or copy the file somewhere local")


def inspect_image(path: str, deep: bool = False) -> MediaInfo:
    """Open one image cheaply (header + end-of-file marker) or fully (``deep``)."""
    if is_embedded(path):
        if not path.data:
            return MediaInfo(path, error="the embedded picture is empty (0 bytes)",
                             fix="re-export the dataset with the picture's bytes")
        return _inspect_stream(path, io.BytesIO(path.data), len(path.data), deep)
    try:
        if is_remote(path):
            return _remote(path, "image", lambda: _inspect_remote_image(path, deep))
        found = _stat(path)
        if found is None:
            return MediaInfo(path, error="image file not found", fix="check the path (relative paths are "
                                                                      "relative to the data file's folder)")
        if stat.S_ISDIR(found.st_mode):
            return MediaInfo(path, error="the path is a folder, not an image file", fix="point at an image file")
        if found.st_size == 0:
            return MediaInfo(path, error="the image file is empty (0 bytes)", fix="re-download or regenerate it")
        with open(path, "rb") as handle:
            info = _inspect_stream(path, handle, found.st_size, deep)
        return replace(info, size=found.st_size, mtime_ns=found.st_mtime_ns)
    except (OSError, ValueError) as exc:  # ValueError: a name the OS refuses
        return MediaInfo(path, error=f"cannot read the image ({getattr(exc, 'strerror', None) or exc})",
                         fix="check the path and the file permissions")


def _stat(path: str) -> Optional[os.stat_result]:
    """One stat instead of exists + isdir + getsize; None where ``os.path.exists`` would say False."""
    try:
        return os.stat(path)
    except (OSError, ValueError):
        return None


def _inspect_remote_image(path: str, deep: bool) -> MediaInfo:
    fs = remote_filesystem(path)
    if not fs.exists(path):
        return MediaInfo(path, error="remote image not found", fix="check the URL")
    with fs.open(path, "rb") as handle:
        data = handle.read()
    if not data:
        return MediaInfo(path, error="the image file is empty (0 bytes)", fix="re-upload it")
    return _inspect_stream(path, io.BytesIO(data), len(data), deep)


def _inspect_stream(path: str, handle, size: int, deep: bool) -> MediaInfo:
    try:
        img = Image.open(handle)
        width, height, fmt = img.width, img.height, img.format or ""
    except UnidentifiedImageError:
        return MediaInfo(path, error="not an image PIL can read", fix="convert it to JPEG or PNG, or fix the path")
    except Exception as exc:  # PIL raises many types on damaged headers
        return MediaInfo(path, error=f"corrupt image header ({exc})", fix="re-export or re-download the image")
    if deep:
        try:
            img.load()
        except Exception as exc:
            return MediaInfo(path, width, height, fmt, error=f"corrupt or truncated image data ({exc})",
                             fix="re-export or re-download the image")
    else:
        handle.seek(max(0, size - TAIL_BYTES))
        tail = handle.read()
        reason = _truncation(fmt, tail, size, img)
        if reason:
            return MediaInfo(path, width, height, fmt, error=f"truncated image: {reason}",
                             fix="re-download or re-export the image (use --deep to decode every image fully)")
    return MediaInfo(path, width, height, fmt)


def _truncation(fmt: str, tail: bytes, size: int, img) -> str:
    """Why the file end looks cut off, or '' — a per-format end marker check."""
    if fmt == "JPEG" and b"\xff\xd9" not in tail:
        return "the JPEG end-of-image marker is missing"
    if fmt == "PNG" and b"IEND" not in tail:
        return "the PNG IEND chunk is missing"
    if fmt == "GIF" and not tail.rstrip(b"\x00").endswith(b"\x3b"):
        return "the GIF trailer is missing"
    if fmt == "WEBP":
        header_size = _riff_size(img)
        if header_size is not None and size < header_size + 8:
            return f"the file has {size} bytes but its header declares {header_size + 8}"
    return ""


def _riff_size(img) -> Optional[int]:
    try:
        fp = img.fp
        fp.seek(4)
        return int.from_bytes(fp.read(4), "little")
    except Exception:
        return None


def inspect_video(path: str, deep: bool = False) -> MediaInfo:
    """A video must open as a container holding a video stream with a frame rate and frames
    (PyAV), and must not be an image file (which PyAV opens as a one-frame "video"). Reports
    the frame size, fps and frame count (what sampling and token counting need); ``deep``
    decodes every frame."""
    if is_remote(path):
        return _remote(path, "video", lambda: _inspect_remote_video(path, deep))
    if is_embedded(path):
        if not path.data:
            return MediaInfo(path, error="the embedded video is empty (0 bytes)", fix="re-export it with its bytes")
        return _inspect_video_source(path, path.data[:16], io.BytesIO(path.data), deep)
    try:
        found = _stat(path)
        if found is None:
            return MediaInfo(path, error="video file not found", fix="check the path")
        if stat.S_ISDIR(found.st_mode):
            return MediaInfo(path, error="the path is a folder, not a video file", fix="point at a video file")
        if found.st_size == 0:
            return MediaInfo(path, error="the video file is empty (0 bytes)", fix="re-download or regenerate it")
        with open(path, "rb") as handle:
            head = handle.read(16)
    except (OSError, ValueError) as exc:
        return MediaInfo(path, error=f"cannot read the video ({getattr(exc, 'strerror', None) or exc})",
                         fix="check the path and the file permissions")
    return replace(_inspect_video_source(path, head, path, deep), size=found.st_size, mtime_ns=found.st_mtime_ns)


def _inspect_remote_video(path: str, deep: bool) -> MediaInfo:
    fs = remote_filesystem(path)
    if not fs.exists(path):
        return MediaInfo(path, error="remote video not found", fix="check the URL")
    with fs.open(path, "rb") as handle:
        head = handle.read(16)
        if not head:
            return MediaInfo(path, error="the video file is empty (0 bytes)", fix="re-upload it")
        handle.seek(0)
        return _inspect_video_source(path, head, handle, deep)


def _inspect_video_source(path: str, head: bytes, source, deep: bool) -> MediaInfo:
    image_kind = next((kind for magic, kind in IMAGE_MAGIC.items() if head.startswith(magic)), None)
    if image_kind is None and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        image_kind = "WEBP"
    if image_kind:
        return MediaInfo(path, error=f"this is a {image_kind} image, not a video",
                         fix="list it under images (with an <image> tag), or point at a video file")
    try:
        import av  # noqa: F401
    except ImportError:
        return MediaInfo(path, error="cannot check videos: PyAV is not installed", fix="pip install av")
    from nbtools.video import VideoError, probe_video

    try:
        info = probe_video(source, name=path, deep=deep)
    except VideoError as exc:  # "PATH: reason (fix: ...)"
        text = str(exc)[len(path) + 2:] if str(exc).startswith(path + ": ") else str(exc)
        reason, _, fix = text.rpartition(" (fix: ")
        return MediaInfo(path, error=reason or text, fix=fix[:-1] if reason else "re-encode the video")
    return MediaInfo(path, info.width, info.height, info.format, fps=info.fps, frames=info.frames)


def inspect_all(paths: Iterable[str], *, deep: bool = False, videos: Iterable[str] = (), workers: Optional[int] = None,
                progress: bool = False) -> dict[str, MediaInfo]:
    """Inspect every distinct image and video once; returns {path: MediaInfo}."""
    unique_images = list(dict.fromkeys(paths))
    unique_videos = list(dict.fromkeys(videos))
    results: dict[str, MediaInfo] = {}
    workers = workers or min(16, (os.cpu_count() or 2) * 4)
    bar = None
    if progress and len(unique_images) > 500:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(unique_images), desc="checking images", unit="img", leave=False)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for info in pool.map(lambda p: inspect_image(p, deep), unique_images, chunksize=64):
            results[info.path] = info
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    for path in unique_videos:
        results[path] = inspect_video(path, deep)
    return results


def size_findings(info: MediaInfo, geo: ImageGeometry, max_pixels: Optional[int]) -> list[tuple[str, str, str]]:
    """(severity, message, fix) for an image's size against the model's vision patches."""
    w, h = info.width, info.height
    out = []
    if min(w, h) < geo.patch_size:
        out.append(("error", f"image is {w}x{h} px, smaller than one {geo.patch_size}x{geo.patch_size} vision patch",
                    f"use images at least {geo.factor}x{geo.factor} px"))
        return out
    if max(w, h) / min(w, h) > MAX_ASPECT_RATIO:
        out.append(("error", f"image is {w}x{h} px: aspect ratio above {MAX_ASPECT_RATIO}, which the processor refuses",
                    "crop or pad the image to a less extreme shape"))
        return out
    if min(w, h) < geo.factor:  # under one image token per side: the processor upsamples it heavily
        out.append(("warning", f"image is very small ({w}x{h} px, under one {geo.factor}x{geo.factor} px image "
                               "token per side); the model sees it upscaled and blurry",
                    f"use images of at least {geo.factor} px per side (ideally several times that)"))
    if max_pixels and w * h > max_pixels:
        new_h, new_w = resized_size(h, w, geo, max_pixels)
        out.append(("info", f"image is {w}x{h} px ({w * h} pixels) > max_pixels={max_pixels}: "
                            f"it will be resized to {new_w}x{new_h}", "nothing to do; raise max_pixels to keep detail"))
    return out


def is_inside(path: str, root: str) -> bool:
    """True when ``path`` (after resolving symlinks and ``..``) lies under ``root``."""
    if is_remote(path):
        return False
    try:
        real, base = os.path.realpath(path), os.path.realpath(root)
    except (ValueError, OSError):  # a NUL byte or an unencodable name: no file there can be inside
        return False
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)
