"""The in-memory form of one preference pair, whatever file format it came from.

Loading turns each valid line into a :class:`PreferenceRecord`; everything downstream
(validation rules, statistics, preview, conversion to the trainer's examples) reads these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

IMAGE_TAG = "<image>"
VIDEO_TAG = "<video>"


@dataclass(slots=True)  # slots: a big dataset holds one per line
class PreferenceRecord:
    file: str  # the data file, as the user named it
    line: int  # 1-based line in a JSONL file; 1-based item index in a .json list
    prompt: list[dict]  # messages before the final answer: {"role", "content": str}; tags kept in text
    chosen: str  # the last assistant message
    rejected: str  # ``rejected_response``
    # resolved paths or URLs, or nbtools.media_ref.EmbeddedMedia (bytes from Parquet/Arrow data), in tag order
    images: list[str] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)
    rejected_images: Optional[list[str]] = None  # images the rejected answer is about, if different
    source_format: str = "messages"  # "messages" (ours) or "trl" (prompt/chosen/rejected)
    row: Optional[int] = None  # Parquet/Arrow data: 0-based row within ``file`` (a shard); ``line`` = row + 1 overall
