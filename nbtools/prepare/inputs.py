"""Prompt sources for step 0: a folder of images with prompts, or a JSONL in the data format.

Every source becomes a list of :class:`PromptRow` (prompt messages, media paths, an optional
reference answer). Bad input is refused as a whole with each problem's file, line, field and
fix; nothing valid is dropped silently: rows left out on purpose (those that share an image
with the validation file, or ignored ``rejected_response`` fields) are counted for the report.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from nbtools.data.records import IMAGE_TAG, VIDEO_TAG
from nbtools.errors import UserError
from nbtools.images import is_remote
from nbtools.problems import Problem

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".avi", ".mkv")


class PrepareInputError(UserError, ValueError):
    """The prompt source cannot be used; the message lists each problem with its fix."""


@dataclass
class PromptRow:
    """One prompt to sample answers for."""

    source: str  # "FILE:LINE" or the image path, for people and for the report
    messages: list[dict]  # {"role", "content": str} up to and including the last user turn; tags kept
    images: list[str] = field(default_factory=list)  # resolved paths or URLs, in tag order
    videos: list[str] = field(default_factory=list)
    reference: Optional[str] = None  # a known-good answer, when the source has one
    ignored_rejected: bool = False  # the source row had a rejected_response, which step 0 does not use


@dataclass
class Inputs:
    rows: list[PromptRow]
    skipped_validation: list[str] = field(default_factory=list)  # sources left out: they share an image with it

    @property
    def ignored_rejected(self) -> int:
        """Rows used whose rejected_response was ignored (a preference file used as prompts)."""
        return sum(row.ignored_rejected for row in self.rows)


def file_digest(path: str, _cache: dict = {}) -> str:
    """sha256 of a local file's bytes (remote paths: of the URL). Cached per path for one process."""
    if path in _cache:
        return _cache[path]
    if is_remote(path):
        digest = hashlib.sha256(("url:" + path).encode()).hexdigest()
    else:
        hasher = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                hasher.update(block)
        digest = hasher.hexdigest()
    _cache[path] = digest
    return digest


def _resolve(path: str, base_dir: str) -> str:
    from nbtools.data.rules import resolve_media_path

    return resolve_media_path(path, base_dir)


def _refuse(problems: list[Problem], what: str) -> None:
    if not problems:
        return
    shown = "\n".join(p.format() for p in problems[:10])
    more = f"\n... and {len(problems) - 10} more" if len(problems) > 10 else ""
    raise PrepareInputError(f"{what}: {len(problems)} problem(s); nothing was sampled:\n{shown}{more}")


def read_prompt_file(path: str) -> Inputs:
    """Rows of a JSONL in the data format: prompts only (last message from the user) or supervised
    (last message an assistant reference answer). ``rejected_response`` fields are ignored and counted."""
    file = os.fspath(path)
    if not os.path.isfile(file):
        raise PrepareInputError(f"input_file: {file}: no such file (fix: give the path of a JSONL file)")
    base_dir = os.path.dirname(os.path.abspath(file))
    rows, problems = [], []
    with open(file, encoding="utf-8", errors="replace") as handle:
        for line_no, text in enumerate(handle, start=1):
            if not text.strip():
                continue

            def problem(field_name, message, fix):
                problems.append(Problem(file, line_no, field_name, "error", message, fix))

            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                problem("line", f"not valid JSON: {exc.msg} at column {exc.colno}", "write one JSON object per line")
                continue
            row = _row_from_object(obj, file, line_no, base_dir, problem)
            if row is not None:
                row.ignored_rejected = "rejected_response" in obj
                rows.append(row)
    _refuse(problems, file)
    if not rows:
        raise PrepareInputError(f"input_file: {file}: holds no rows (fix: one JSON object per line)")
    return Inputs(rows)


def _row_from_object(obj, file: str, line: int, base_dir: str, problem) -> Optional[PromptRow]:
    if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list) or not obj["messages"]:
        problem("messages", "the row has no messages list", 'write {"messages": [{"role": "user", "content": "..."}]}')
        return None
    messages = obj["messages"]
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant") \
                or not isinstance(message.get("content"), str):
            problem(f"messages[{i}]", "each message needs a role (system/user/assistant) and string content",
                    'write {"role": "user", "content": "<image>What is this?"}')
            return None
    reference = None
    if messages[-1]["role"] == "assistant":
        reference = messages[-1]["content"]
        messages = messages[:-1]
        if not reference.strip():
            problem(f"messages[{len(messages)}].content", "the reference answer is empty",
                    "write the reference answer, or end the row with the user's message")
            return None
    if not messages or messages[-1]["role"] != "user":
        problem("messages", "the prompt must end with a user message",
                "end with the user's question (optionally followed by one assistant reference answer)")
        return None
    media = {}
    for key, tag in (("images", IMAGE_TAG), ("videos", VIDEO_TAG)):
        value = obj.get(key) or []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            problem(key, f"{key} must be a list of paths", f'write "{key}": ["path/one.png"]')
            return None
        tags = sum(m["content"].count(tag) for m in messages if m["role"] == "user")
        if tags != len(value):
            problem(key, f"{len(value)} {key} but {tags} {tag} tag(s) in the user messages",
                    f"put one {tag} tag in the prompt per entry of {key}")
            return None
        resolved = [_resolve(v, base_dir) for v in value]
        for original, path in zip(value, resolved):
            if not is_remote(path) and not os.path.isfile(path):
                problem(key, f"{original}: no such file (looked for {path})",
                        "fix the path (relative paths are relative to the JSONL file's folder)")
                return None
        media[key] = resolved
    return PromptRow(f"{file}:{line}", [dict(role=m["role"], content=m["content"]) for m in messages],
                     media["images"], media["videos"], reference)


def read_image_folder(folder: str, prompts: list[str]) -> Inputs:
    """Every image (and video) of ``folder`` (sorted, not recursive) asked every prompt."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise PrepareInputError(f"images_dir: {folder}: no such folder (fix: give a folder of images)")
    prompts = [p.strip() for p in prompts if p.strip()]
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES)
    if not files:
        raise PrepareInputError(f"images_dir: {folder}: holds no images or videos "
                                f"(fix: add {', '.join(IMAGE_SUFFIXES)} or {', '.join(VIDEO_SUFFIXES)} files)")
    rows = []
    for path in files:
        is_video = path.suffix.lower() in VIDEO_SUFFIXES
        tag = VIDEO_TAG if is_video else IMAGE_TAG
        for prompt in prompts:
            rows.append(PromptRow(str(path), [{"role": "user", "content": tag + prompt}],
                                  [] if is_video else [str(path.resolve())], [str(path.resolve())] if is_video else []))
    return Inputs(rows)


def validation_images(validation_file: str) -> set[str]:
    """Digests of every image and video the validation pairs use (unreadable ones are skipped)."""
    from nbtools.data import load_records

    digests = set()
    for record in load_records(validation_file).records:
        for path in record.images + record.videos + (record.rejected_images or []):
            try:
                digests.add(file_digest(path))
            except OSError:
                continue
    return digests


def read_inputs(input_file: Optional[str] = None, images_dir: Optional[str] = None, prompts=(),
                validation_file: Optional[str] = None, max_prompts: Optional[int] = None) -> Inputs:
    """The prompt rows of one source, minus any that share an image with ``validation_file``."""
    if validation_file and input_file and os.path.realpath(validation_file) == os.path.realpath(input_file):
        raise PrepareInputError(f"input_file: {input_file} is the validation file; held-out pairs are never "
                                "used as prompts (fix: point input_file at the training prompts)")
    inputs = read_prompt_file(input_file) if input_file else read_image_folder(images_dir, list(prompts))
    if validation_file:
        if not os.path.isfile(validation_file):
            raise PrepareInputError(f"validation_file: {validation_file}: no such file")
        held_out = validation_images(validation_file)
        keep = []
        for row in inputs.rows:
            if any(file_digest(p) in held_out for p in row.images + row.videos):
                inputs.skipped_validation.append(row.source)
            else:
                keep.append(row)
        inputs.rows = keep
    if max_prompts:
        inputs.rows = inputs.rows[:max_prompts]
    return inputs
