"""Read a preference data file into records plus the problems found on the way.

JSONL (one object per line) is the primary format; a ``.json`` file holding a list of the
same objects and TRL's conversational preference format are accepted too. Reading never
stops at a bad line: every line is either a record or at least one problem. JSON is read
strictly (no duplicate keys, no ``NaN``/``Infinity``, bounded nesting) and in one pass over
the file, streamed, so time and memory grow linearly with it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import math
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from typing import Optional, Union

from nbtools.data.records import PreferenceRecord
from nbtools.data.rules import parse_pair
from nbtools.errors import UserError
from nbtools.problems import Problem

MAX_DEPTH = 64  # a pair needs about 5 levels; deeper JSON is hostile or not a pair (and recursion-prone)
GROUP_LIMIT = 2000  # longest pretty-printed object (in lines) recognised as one
PROGRESS_MIN_BYTES = 32 * 2**20  # files at least this big report progress on stderr
CACHE_BYTES = 16 * 2**20  # identical lines (duplicates) are parsed once while the cache holds this much
COMPRESSED = {  # magic bytes of files that are not text at all -> (kind, command that writes OUT from FILE)
    b"\x1f\x8b": ("gzip", "zcat FILE > OUT"),
    b"PK\x03\x04": ("zip", "unzip -l FILE, then unzip the .jsonl inside"),
    b"BZh": ("bzip2", "bzcat FILE > OUT"),
    b"\xfd7zXZ\x00": ("xz", "xzcat FILE > OUT"),
    b"\x28\xb5\x2f\xfd": ("zstd", "zstdcat FILE > OUT"),
}
PARQUET_MAGIC = b"PAR1"  # read as a dataset (nbtools.data.sources), whatever the file is called
BLOCK_BYTES = 4 * 2**20  # validation parses JSONL in blocks of about this many bytes


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


@contextlib.contextmanager
def no_gc_pauses():
    """Suspend the cyclic garbage collector while millions of small, acyclic objects (records,
    problems) are built: its full passes over them made loading big files superlinear."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_records(path: Union[str, os.PathLike], progress: bool = False) -> LoadResult:
    """Load ``path`` (.jsonl, or .json holding a list) into memory. Raises :class:`UnreadableFile` only
    when the file itself cannot be opened; everything wrong inside it becomes a problem.
    ``progress`` reports reading progress on stderr for files over ``PROGRESS_MIN_BYTES``.
    (Validation streams the file in blocks instead; this is for small files and quick scripts.)"""
    file = os.fspath(path)
    handle, size, early = open_jsonl(file)
    if early is not None:
        return early
    base_dir = os.path.dirname(os.path.abspath(file))
    reporter = _Progress(file, size) if progress and size >= PROGRESS_MIN_BYTES else None
    with handle, no_gc_pauses():
        return _JsonlReader(file, base_dir).read(handle, reporter)


def _open(file: str):
    try:
        if not os.path.exists(file):
            raise UnreadableFile(f"{file}: no such file")
        if os.path.isdir(file):
            raise UnreadableFile(f"{file}: is a folder, not a data file (a folder of Parquet shards or a "
                                 "save_to_disk folder is read as a dataset; this one holds neither)")
        return open(file, "rb")
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name
        if isinstance(exc, UnreadableFile):
            raise
        raise UnreadableFile(f"{file}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None


def _not_text(file: str, head: bytes) -> Optional[LoadResult]:
    """A file that is compressed (not text at all): one problem saying how to decompress it."""
    for magic, (kind, fix) in COMPRESSED.items():
        if head.startswith(magic):
            out = os.path.splitext(file)[0] + "-decompressed.jsonl"  # never the file itself
            command = fix.replace("FILE", shlex.quote(file)).replace("OUT", shlex.quote(out))
            return LoadResult(file, 0, problems=[Problem(
                file, None, "file", "error", f"this is a {kind} file, not JSONL text",
                f"decompress it first: `{command}`")])
    return None


# --------------------------------------------------------------------------- strict JSON

class StrictJSONError(ValueError):
    """Valid for Python's json module but not JSON we accept (message and fix for the user)."""

    def __init__(self, message: str, fix: str):
        super().__init__(message)
        self.message, self.fix = message, fix


def _no_duplicate_keys(pairs: list) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise StrictJSONError(f"duplicate key {key!r} in one object (JSON readers disagree on which one wins)",
                              f"keep one {key!r} in that object")
    return obj


def _no_constant(name: str):
    raise StrictJSONError(f"{name} is not a JSON value", f"write {name} as a string or null, or drop the field")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise StrictJSONError(f"the number {text[:20]}{'…' if len(text) > 20 else ''} is too large for a float",
                              "write it as a string or a smaller number")
    return value


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant,
                            parse_float=_finite_float)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[\[\]{}]")


def nesting_depth(text: str) -> int:
    """Deepest bracket nesting of JSON text, ignoring brackets inside strings (never recursive)."""
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _depth_change(text: str) -> int:
    """Net brackets opened on one line of a pretty-printed object (strings never span lines)."""
    found = _BRACKETS.findall(_STRING.sub("", text))
    return sum(1 if b in "[{" else -1 for b in found)


def strict_loads(text: str, max_depth: int = MAX_DEPTH):
    """``json.loads`` that refuses what JSON does not allow or a pair never needs.

    Raises ``json.JSONDecodeError`` for syntax errors and :class:`StrictJSONError` for
    duplicate keys, NaN/Infinity, nesting deeper than ``max_depth`` and numbers Python will
    not convert (over 4,300 digits)."""
    if text.count("[") + text.count("{") > max_depth:
        depth = nesting_depth(text)
        if depth > max_depth:
            raise StrictJSONError(f"JSON nested {depth} levels deep; a preference pair needs only a few",
                                  "this is not a preference pair: regenerate or remove it")
    try:
        return _DECODER.decode(text)
    except (json.JSONDecodeError, StrictJSONError):
        raise
    except RecursionError:
        raise StrictJSONError("JSON nested too deeply to read", "this is not a preference pair: remove it") from None
    except ValueError as exc:  # int() refuses literals over sys.get_int_max_str_digits() digits
        if "digits" in str(exc):
            raise StrictJSONError(f"a number has more than {sys.get_int_max_str_digits():,} digits",
                                  "write such a value as a string, or drop the field") from None
        raise StrictJSONError(f"not valid JSON ({exc})", "write one complete JSON object per line") from None


# --------------------------------------------------------------------------- JSONL

@dataclass
class _Group:
    """Lines that may be one pretty-printed object: its first line's error and the open depth."""

    start: int
    first_error: Problem
    lines: list  # [(line_no, text)]
    depth: int


class _JsonlReader:
    """One pass over a JSONL file. A line that opens an object and does not parse starts a
    group of following lines that may close it (a pretty-printed object); a group ends at
    depth 0, at a line that is a pair of its own, or after ``GROUP_LIMIT`` lines, and lines of
    a group that did not form an object are read again one by one, never grouped twice, so
    every line is read at most twice whatever the file holds."""

    def __init__(self, file: str, base_dir: str):
        self.file, self.base_dir = file, base_dir
        self.result = LoadResult(file, 0)
        self.group: Optional[_Group] = None
        self.cache: dict[bytes, tuple] = {}
        self.cached_bytes = 0

    def read(self, handle, reporter: Optional["_Progress"] = None) -> LoadResult:
        line_no = 0
        for line_no, raw in enumerate(handle, start=1):
            self.feed(line_no, raw)
            if reporter is not None and line_no % 20000 == 0:
                reporter.update(handle.tell(), line_no)
        self._end_group()
        if reporter is not None:
            reporter.done(line_no)
        return self.result

    def feed(self, line_no: int, raw: bytes, may_group: bool = True) -> None:
        raw = raw.rstrip(b"\n")
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        cached = self.cache.get(raw)
        if cached is not None and self.group is None:
            self._add_cached(line_no, cached)
            return
        text, problem = _decode(raw, self.file, line_no)
        if self.group is not None:
            if problem is None and self._group_takes(line_no, text):
                return
            self._end_group()  # (when still open: an undecodable line ends it)
        if problem:
            self.result.rows += 1
            self.result.problems.append(problem)
            return
        if not text.strip():
            return
        self.result.rows += 1
        try:
            obj = strict_loads(text)
        except StrictJSONError as exc:
            self._remember(raw, (None, [Problem(self.file, 0, "line", "error", exc.message, exc.fix)]), line_no)
            return
        except json.JSONDecodeError as exc:
            error = _json_error(exc, text, self.file, line_no)
            stripped = text.strip()
            if may_group and stripped.startswith("{") and not stripped.endswith("}"):
                self.group = _Group(line_no, error, [(line_no, text)], _depth_change(text))
            else:
                self.result.problems.append(error)
            return
        record, problems = parse_pair(obj, self.file, line_no, self.base_dir)
        self._remember(raw, (record, problems), line_no)

    def _remember(self, raw: bytes, outcome: tuple, line_no: int) -> None:
        """Add a parsed line's outcome; keep it for identical lines (duplicates) while small."""
        if len(raw) < 65536:
            if self.cached_bytes + len(raw) > CACHE_BYTES:
                self.cache.clear()
                self.cached_bytes = 0
            self.cache[raw] = outcome
            self.cached_bytes += len(raw)
        self._add_cached(line_no, outcome, counted=True)

    def _add_cached(self, line_no: int, outcome: tuple, counted: bool = False) -> None:
        record, problems = outcome
        if not counted:
            self.result.rows += 1
        if record is not None:
            # records of identical lines share their (never mutated) contents: memory stays linear in
            # distinct lines, not in the file
            self.result.records.append(record if record.line == line_no else dataclasses.replace(record, line=line_no))
        for p in problems:
            self.result.problems.append(p if p.line == line_no else dataclasses.replace(p, line=line_no))

    def _group_takes(self, line_no: int, text: str) -> bool:
        """Offer a line to the open group; False when the group ended before this line."""
        group = self.group
        stripped = text.strip()
        if stripped.startswith("{") and stripped.endswith("}") and _is_pair_line(stripped):
            self._end_group()  # a complete pair of its own: the group was a cut line
            return False
        group.lines.append((line_no, text))
        group.depth += _depth_change(text)
        if group.depth <= 0:
            try:
                strict_loads("\n".join(t for _, t in group.lines))
            except ValueError:
                self._end_group()
                return True
            self.result.problems.append(Problem(
                self.file, group.start, "line", "error",
                f"lines {group.start}-{line_no} hold one JSON object spread over several lines "
                "(pretty-printed); JSONL needs each object on a single line",
                "re-save with one json.dumps(obj) per line (for example `jq -c . in.json > out.jsonl`)"))
            self.group = None
        elif len(group.lines) >= GROUP_LIMIT:
            self._end_group()
        return True

    def _end_group(self) -> None:
        """The group did not form one object: its first line keeps its own error and the
        other lines are read one by one (and may not start a group again)."""
        group, self.group = self.group, None
        if group is None:
            return
        self.result.problems.append(group.first_error)
        for line_no, text in group.lines[1:]:
            self.feed(line_no, text.encode("utf-8", "surrogatepass"), may_group=False)


def _is_pair_line(text: str) -> bool:
    try:
        obj = strict_loads(text)
    except ValueError:
        return False
    return isinstance(obj, dict) and any(k in obj for k in ("messages", "prompt", "chosen", "rejected_response"))


class _Progress:
    """Progress of reading a big file, as plain lines on stderr (readable in logs and notebooks)."""

    def __init__(self, file: str, size: int):
        self.file, self.size = file, size
        self.start = self.last = time.monotonic()
        self.shown = 0

    def update(self, position: int, lines: int) -> None:
        now = time.monotonic()
        percent = int(100 * position / max(1, self.size))
        if now - self.last >= 5 or percent >= self.shown + 25:
            self.last, self.shown = now, percent
            _say(f"reading {self.file}: {percent}% ({lines:,} lines, {now - self.start:.0f} s)")

    def done(self, lines: int) -> None:
        _say(f"reading {self.file}: 100% ({lines:,} lines, {time.monotonic() - self.start:.1f} s)")


def _say(message: str) -> None:
    print(message.encode("utf-8", "backslashreplace").decode("utf-8"), file=sys.stderr, flush=True)


def _decode(raw: bytes, file: str, line_no: int) -> tuple[str, Optional[Problem]]:
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


# --------------------------------------------------------------------------- .json list

def _load_json_list(file: str, data: bytes, base_dir: str) -> LoadResult:
    result = LoadResult(file, 0)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        result.problems.append(Problem(file, line, "file", "error", f"not valid UTF-8 (byte at offset {exc.start})",
                                       "save the file as UTF-8"))
        return result
    try:
        items = strict_loads(text, max_depth=MAX_DEPTH + 1)  # the list itself is one level
    except json.JSONDecodeError as exc:
        lines = text.splitlines()
        line_text = lines[exc.lineno - 1] if 0 < exc.lineno <= len(lines) else ""
        problem = _json_error(exc, line_text, file, exc.lineno)
        fix = problem.fix if exc.msg != "Expecting value" or line_text.strip() else \
            "the file ends before the list is closed: complete it or save the pairs as JSONL"
        result.problems.append(Problem(file, exc.lineno, "file", "error",
                                       f"not valid JSON: {exc.msg} at column {exc.colno}", fix))
        return result
    except StrictJSONError as exc:
        result.problems.append(Problem(file, None, "file", "error", exc.message, exc.fix))
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


def read_block(file: str, base_dir: str, first_line: int, block: bytes) -> LoadResult:
    """Parse one block of whole JSONL lines (from :func:`iter_blocks`), numbering them from ``first_line``."""
    reader = _JsonlReader(file, base_dir)
    lines = block.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    with no_gc_pauses():
        for offset, raw in enumerate(lines):
            reader.feed(first_line + offset, raw)
        reader._end_group()
    return reader.result


def is_whole_pair_line(raw: bytes) -> bool:
    """A line that opens and closes an object at column 0: a whole JSONL row, never the inside of a
    pretty-printed object (whose inner lines are indented, or never both open and close a brace)."""
    return raw[:1] == b"{" and raw.rstrip(b"\r\n").endswith(b"}") and len(raw) > 2


def iter_blocks(handle, block_bytes: int = BLOCK_BYTES, reporter: Optional["_Progress"] = None):
    """(first line number, bytes) blocks of whole lines of a JSONL file, each about ``block_bytes``.

    A block only ends before a line that is a whole object, so a pretty-printed object (which the
    reader recognises across lines) is never split between two blocks."""
    first, pending, size, line_no = 1, [], 0, 0
    for line_no, raw in enumerate(handle, start=1):
        if size >= block_bytes and is_whole_pair_line(raw):
            yield first, b"".join(pending)
            if reporter is not None:
                reporter.update(handle.tell(), line_no - 1)
            first, pending, size = line_no, [], 0
        pending.append(raw)
        size += len(raw)
    if pending:
        yield first, b"".join(pending)
    if reporter is not None:
        reporter.done(line_no)


def open_jsonl(path: Union[str, os.PathLike]):
    """``(handle, size, early)``: the opened file (positioned after a UTF-8 byte-order mark), its size, and a
    :class:`LoadResult` when the file is not JSONL text at all (compressed, or a .json list, read whole)."""
    file = os.fspath(path)
    handle = _open(file)
    base_dir = os.path.dirname(os.path.abspath(file))
    head = handle.read(8)
    size = os.fstat(handle.fileno()).st_size
    early = _not_text(file, head)
    if early is None:
        bom = 3 if head.startswith(b"\xef\xbb\xbf") else 0
        handle.seek(bom)
        if file.lower().endswith(".json") and head[bom:].lstrip()[:1] == b"[":
            early = _load_json_list(file, handle.read(), base_dir)
    if early is not None:
        handle.close()
        return None, size, early
    return handle, size, None
