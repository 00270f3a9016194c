"""The JSONL side of the sample sets: chat messages, a pair row, and a file of rows written as UTF-8."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def system(text: str) -> dict:
    return {"role": "system", "content": text}


def pair_row(prompt: str, chosen: str, rejected: str, **media) -> dict:
    return {"messages": [user(prompt), assistant(chosen)], **media, "rejected_response": rejected}


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    path.write_bytes(text.encode("utf-8"))
