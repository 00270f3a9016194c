"""The resumable sample store: one JSON line per answered prompt, appended as it comes.

A line holds the resume key and the K answers. The key covers the model's fingerprint, the
sampling settings, the prompt messages and the image/video bytes' digests, so a rerun skips
what is done and any change (another model, temperature, prompt or image) samples afresh.
An interrupted run can leave a half-written last line; it is ignored and answered again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional, Sequence

SAMPLES_FILE = "samples.jsonl"


def resume_key(model: str, settings: dict, messages: Sequence[dict], media_digests: Sequence[str]) -> str:
    """sha256 over everything that decides a prompt's samples."""
    payload = json.dumps({"model": model, "settings": settings, "messages": list(messages),
                          "media": list(media_digests)}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def prompt_seed(seed: int, key: str) -> int:
    """A per-prompt sampling seed: the same prompt gets the same answers however runs are split."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:4], "big")


class SampleStore:
    """``get(key)`` the stored answers or None; ``put(key, answers, **info)`` appends one line at once."""

    def __init__(self, folder):
        self.path = Path(folder) / SAMPLES_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._answers: dict[str, list[str]] = {}
        self.damaged_lines = 0
        if self.path.exists():
            self._read()

    def _read(self) -> None:
        data = self.path.read_bytes()
        for line in data.split(b"\n"):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                self._answers[entry["key"]] = list(entry["answers"])
            except (ValueError, KeyError, TypeError):
                self.damaged_lines += 1  # an interrupted write: that prompt is answered again
        if data and not data.endswith(b"\n"):
            # The last line lacks its newline: cut it if it is half-written, so the next append
            # starts on a line of its own; end it if it is complete.
            tail = data[data.rfind(b"\n") + 1:]
            with open(self.path, "r+b") as handle:
                try:
                    json.loads(tail)
                    handle.seek(0, os.SEEK_END)
                    handle.write(b"\n")
                except ValueError:
                    handle.truncate(len(data) - len(tail))

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: str) -> Optional[list[str]]:
        return self._answers.get(key)

    def put(self, key: str, answers: Sequence[str], **info) -> None:
        line = json.dumps({"key": key, "answers": list(answers), **info}, ensure_ascii=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        self._answers[key] = list(answers)
