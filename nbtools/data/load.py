"""Read a preference data file into records plus the problems found on the way.

JSONL (one object per line) is the primary format; a ``.json`` file holding a list of the
same objects and TRL's conversational preference format are accepted too. Reading never
stops at a bad line: every line is either a record or at least one problem.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Iterator, Optional, Union

from nbtools.data.records import PreferenceRecord
from nbtools.data.rules import parse_pair
from nbtools.errors import UserError
from nbtools.problems import Problem


class UnreadableFile(UserError, OSError):
    """The data file itself cannot be read (missing, a folder, no permission)."""


@dataclass
class LoadResult:
    file: str  # the data file, as the user named it
    rows: int  # non-blank lines (JSONL) or list items (.json)
    records: list[PreferenceRecord] = field(default_factory=list)  # rows whose structure parsed, in file order
    problems: list[Problem] = field(default_factory=list)

    @property
    def valid_records(self) -> list[PreferenceRecord]:
        """Records with no error on their line (media files are not checked by loading)."""
        bad = {p.line for p in self.problems if p.severity == "error"}
        return [r for r in self.records if r.line not in bad]


def load_records(path: Union[str, os.PathLike]) -> LoadResult:
    """Load ``path`` (.jsonl, or .json holding a list). Raises :class:`UnreadableFile` only
    when the file itself cannot be opened; everything wrong inside it becomes a problem."""
    file = os.fspath(path)
    if not os.path.exists(file):
        raise UnreadableFile(f"{file}: no such file")
    if os.path.isdir(file):
        raise UnreadableFile(f"{file}: is a folder, not a data file")
    try:
        with open(file, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise UnreadableFile(f"{file}: cannot be read ({exc.strerror or exc})") from None
    base_dir = os.path.dirname(os.path.abspath(file))
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # a UTF-8 byte-order mark, as some editors write
    if file.lower().endswith(".json") and data.lstrip()[:1] == b"[":
        return _load_json_list(file, data, base_dir)
    return _load_jsonl(file, data, base_dir)


def _load_jsonl(file: str, data: bytes, base_dir: str) -> LoadResult:
    result = LoadResult(file, 0)
    lines = data.split(b"\n")
    number = 0
    while number < len(lines):
        raw = lines[number]
        number += 1
        line_no = number
        text, problem = _decode(raw, file, line_no)
        if problem:
            result.rows += 1
            result.problems.append(problem)
            continue
        if not text.strip():
            continue
        result.rows += 1
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            spread = _pretty_printed_object(lines, line_no - 1)
            if spread is not None:
                end_line = spread
                result.problems.append(Problem(
                    file, line_no, "line", "error",
                    f"lines {line_no}-{end_line} hold one JSON object spread over several lines "
                    "(pretty-printed); JSONL needs each object on a single line",
                    "re-save with one json.dumps(obj) per line (for example `jq -c . in.json > out.jsonl`)"))
                number = end_line
                continue
            result.problems.append(_json_error(exc, text, file, line_no))
            continue
        record, problems = parse_pair(obj, file, line_no, base_dir)
        result.problems += problems
        if record is not None:
            result.records.append(record)
    return result


def _decode(raw: bytes, file: str, line_no: int) -> tuple[str, Optional[Problem]]:
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return "", Problem(file, line_no, "line", "error",
                           f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})",
                           "save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)")


def _json_error(exc: json.JSONDecodeError, text: str, file: str, line_no: int) -> Problem:
    column = exc.colno if exc.lineno == 1 else exc.pos + 1
    message = f"not valid JSON: {exc.msg} at column {column}"
    fix = "write one complete JSON object per line"
    before = text[: exc.pos].rstrip()
    if before.endswith(",") and text[exc.pos:].lstrip()[:1] in ("}", "]"):
        message += " (a trailing comma before the closing bracket)"
        fix = f"remove the comma at column {len(before)}"
    elif exc.msg == "Extra data" and text[exc.pos:].strip() == ",":
        # Typical of objects copied out of a JSON array: JSONL lines are not comma-separated.
        message += " (a trailing comma after the object)"
        fix = f"remove the comma at column {column}: JSONL lines are not separated by commas"
    elif text.strip() in ("{", "[", "}", "]", "},", "],") or text.lstrip().startswith('"') and ":" in text:
        message += " (this looks like part of a pretty-printed multi-line object)"
        fix = "put each object on a single line (for example `jq -c . in.json > out.jsonl`)"
    elif "'" in text and '"' not in text:
        message += " (JSON needs double quotes)"
        fix = "use double quotes for keys and strings"
    return Problem(file, line_no, "line", "error", message, fix)


def _pretty_printed_object(lines: list[bytes], start: int, limit: int = 2000) -> Optional[int]:
    """If an object opens at ``lines[start]`` and parses when joined with the next lines,
    return the 1-based last line of it; else None."""
    first = lines[start].strip()
    if not first.startswith(b"{") or first.endswith(b"}"):
        return None
    depth_text = []
    for end in range(start, min(len(lines), start + limit)):
        depth_text.append(lines[end])
        if lines[end].strip().startswith(b"}") or lines[end].strip().endswith(b"}"):
            try:
                json.loads(b"\n".join(depth_text).decode("utf-8"))
                return end + 1
            except (ValueError, UnicodeDecodeError):
                continue
    return None


def _load_json_list(file: str, data: bytes, base_dir: str) -> LoadResult:
    result = LoadResult(file, 0)
    try:
        items = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        result.problems.append(Problem(file, line, "file", "error", f"not valid UTF-8 (byte at offset {exc.start})",
                                       "save the file as UTF-8"))
        return result
    except json.JSONDecodeError as exc:
        problem = _json_error(exc, data.decode("utf-8").splitlines()[exc.lineno - 1], file, exc.lineno)
        result.problems.append(Problem(file, exc.lineno, "file", "error",
                                       f"not valid JSON: {exc.msg} at column {exc.colno}", problem.fix))
        return result
    if not isinstance(items, list):
        result.problems.append(Problem(file, None, "file", "error", "a .json data file must hold a list of pairs",
                                       "wrap the objects in [...] or save them as JSONL"))
        return result
    for index, obj in enumerate(items, start=1):
        result.rows += 1
        record, problems = parse_pair(obj, file, index, base_dir)
        result.problems += problems
        if record is not None:
            result.records.append(record)
    return result


def iter_json_objects(path: Union[str, os.PathLike]) -> Iterator[dict]:
    """Raw objects of a JSONL file, skipping lines that do not parse (for quick scripts)."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        for text in handle:
            if text.strip():
                try:
                    yield json.loads(text)
                except json.JSONDecodeError:
                    continue
