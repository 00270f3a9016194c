"""The resumable stores: one JSON line per answered prompt (``samples.jsonl``) and per judged prompt
(``judgments.jsonl``), appended and flushed as each comes.

A sample line holds the resume key and the K answers. The key covers the model's fingerprint,
the sampling settings, the prompt messages and the image/video bytes' digests, so a rerun skips
what is done and any change (another model, temperature, prompt or image) samples afresh.
A judgment line holds the scores of one prompt's answers, keyed by the judge's fingerprint,
the prompt, the media digests, the answers and the reference: a rerun judges only what is new.
An interrupted run can leave a half-written last line; it is ignored and done again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional, Sequence

SAMPLES_FILE = "samples.jsonl"
JUDGMENTS_FILE = "judgments.jsonl"


def resume_key(model: str, settings: dict, messages: Sequence[dict], media_digests: Sequence[str]) -> str:
    """sha256 over everything that decides a prompt's samples."""
    payload = json.dumps({"model": model, "settings": settings, "messages": list(messages),
                          "media": list(media_digests)}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def prompt_seed(seed: int, key: str) -> int:
    """A per-prompt sampling seed: the same prompt gets the same answers however runs are split."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:4], "big")


def judgment_key(judge: str, prompt: str, media_digests: Sequence[str], answers: Sequence[str],
                 reference: Optional[str]) -> str:
    """sha256 over everything that decides a judge's scores for one prompt's answers."""
    payload = json.dumps({"judge": judge, "prompt": prompt, "media": list(media_digests), "answers": list(answers),
                          "reference": reference}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


class _LineStore:
    """A JSONL file of ``{"key": ..., ...}`` lines; what :meth:`_keep` takes of each is held in memory, and a
    later line of the same key wins."""

    FILE = ""

    def __init__(self, folder):
        self.path = Path(folder) / self.FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._entries: dict[str, dict] = {}
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
                self._check(entry)
                self._entries[entry["key"]] = self._keep(entry)
            except (ValueError, KeyError, TypeError):
                self.damaged_lines += 1  # an interrupted write: that prompt is done again
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

    def _check(self, entry) -> None:
        if not isinstance(entry, dict) or not isinstance(entry["key"], str):
            raise TypeError("not a store line")

    def _keep(self, entry: dict) -> dict:
        return entry

    def __len__(self) -> int:
        return len(self._entries)

    def _append(self, entry: dict) -> None:
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        self._entries[entry["key"]] = self._keep(entry)


class SampleStore(_LineStore):
    """``get(key)`` the stored answers or None; ``put(key, answers, **info)`` appends one line at once."""

    FILE = SAMPLES_FILE

    def _check(self, entry) -> None:
        super()._check(entry)
        if not isinstance(entry["answers"], list) or not all(isinstance(a, str) for a in entry["answers"]):
            raise TypeError("answers must be a list of strings")

    def _keep(self, entry: dict) -> dict:
        return {"answers": entry["answers"]}  # not the source and image names: memory stays small

    def get(self, key: str) -> Optional[list[str]]:
        entry = self._entries.get(key)
        return list(entry["answers"]) if entry is not None else None

    def put(self, key: str, answers: Sequence[str], **info) -> None:
        self._append({"key": key, "answers": list(answers), **info})


class JudgmentStore(_LineStore):
    """The judge cache: ``get(key)`` the stored entry (``{"scores": [...] or None, "failures": n}``) or None;
    ``put(key, scores, failures=0, **info)`` appends one line at once."""

    FILE = JUDGMENTS_FILE

    def _check(self, entry) -> None:
        super()._check(entry)
        scores = entry["scores"]
        if scores is not None and (not isinstance(scores, list) or not all(
                isinstance(s, (int, float)) and not isinstance(s, bool) and 0 <= s <= 1 for s in scores)):
            raise TypeError("scores must be None or numbers in [0, 1]")
        if not isinstance(entry.get("failures", 0), int):
            raise TypeError("failures must be a count")

    def _keep(self, entry: dict) -> dict:
        return {"scores": entry["scores"], "failures": entry.get("failures", 0)}

    def get(self, key: str) -> Optional[dict]:
        entry = self._entries.get(key)
        if entry is None:
            return None
        scores = entry["scores"]
        return {"scores": None if scores is None else [float(s) for s in scores],
                "failures": int(entry.get("failures", 0))}

    def put(self, key: str, scores: Optional[Sequence[float]], failures: int = 0, **info) -> None:
        self._append({"key": key, "scores": None if scores is None else [float(s) for s in scores],
                      "failures": int(failures), **info})
