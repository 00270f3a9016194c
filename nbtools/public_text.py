"""What a shared file (an export's model card, meant for the Hub) may say about the machine it was made on.

Full paths name the user's home folder, user name and project layout; a reader of the card needs the
file's name (and its hash, when there is one), not where it sat. The local run folder's run.json keeps
the full paths; only what leaves the machine goes through here.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

# An absolute path (or ~/...) standing alone in text: not the "/v1" of a URL, not "a/b" inside a word, not "</tag>".
# Applied to raw values, before Markdown escaping (whose backslashes are not paths).
_ABSOLUTE = re.compile(r"(?<![\w.:/~<-])~?/(?=[^\s/])[^\s'\"`<>|()\[\]{},;]+")


def file_name(path: Any) -> Any:
    """The last part of a local path ("/home/me/data/train.jsonl" -> "train.jsonl"); other values as they are."""
    if not isinstance(path, str) or not is_local_path(path):
        return path
    pure = PureWindowsPath(path) if re.match(r"^[A-Za-z]:[/\\]", path) else PurePosixPath(path.replace("\\", "/"))
    return pure.name or path


def is_local_path(text: str) -> bool:
    """Absolute, home-relative or climbing out of its folder: a path that says where on this machine."""
    return bool(re.match(r"^(~|/|\\|[A-Za-z]:[/\\])", text)) or text.startswith("../") or "/../" in text


def public_text(text: str) -> str:
    """``text`` with every absolute path in it cut to its file name."""
    def cut(match: re.Match) -> str:
        found = match.group(0)
        path = found.rstrip(".")  # a full stop after the path is the sentence's
        name = file_name(path.rstrip("/\\"))
        return (name if name and name != path.rstrip("/\\") else found[:len(path)]) + found[len(path):]

    return _ABSOLUTE.sub(cut, text)


def public_value(value: Any) -> Any:
    """A JSON-like value with every string made public (:func:`public_text`), keys included."""
    if isinstance(value, str):
        return public_text(file_name(value))
    if isinstance(value, dict):
        return {public_value(k): public_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [public_value(v) for v in value]
    return value
