"""Preference data as the Hub publishes it: Parquet shards, ``datasets`` folders and objects, Hub ids.

Public VLM preference sets (RLAIF-V, TRL's ``rlaif-v``, ...) ship as Parquet shards with the pictures
embedded in the rows. This module reads them *as they are*, without a conversion step, and turns every
row into the JSON object shape our JSONL rules already know, so :func:`nbtools.data.rules.parse_pair`
judges a Parquet row exactly as it judges a JSONL line. Pictures embedded in a row become
:class:`nbtools.media_ref.EmbeddedMedia` (their bytes, a label naming shard, row and column).

Only ``pyarrow`` and ``datasets`` read the containers, and always in record batches: a million rows with
a JPEG each stream through in a bounded amount of memory, because only one batch is ever turned into
Python objects at a time.

Numbering: ``file`` is the shard (for ``datasets`` folders and objects: the folder or name), ``row`` the
0-based row within it as ``datasets`` numbers rows, ``line`` the row's 1-based position in the whole
source (a unique key; see :meth:`TableSource.iter_records`).
"""

from __future__ import annotations

import glob
import os
import sys
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Union

import pyarrow as pa
import pyarrow.parquet as pq

from nbtools.data.load import UnreadableFile
from nbtools.data.records import IMAGE_TAG, PreferenceRecord
from nbtools.data.rules import parse_pair
from nbtools.media_ref import EmbeddedMedia
from nbtools.problems import Problem

BATCH_ROWS = 256  # rows turned into Python objects at a time: bounds memory whatever the source's size
TABLE_SUFFIXES = (".parquet", ".arrow")
DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")  # what save_to_disk writes
MAPPING_KEYS = {
    "prompt": "the user's question: a text column, or a column of message lists (TRL conversational)",
    "chosen": "the preferred answer: text, or a list holding one assistant message",
    "rejected": "the worse answer: text, or a list holding one assistant message",
    "image": "one picture per row: a {bytes, path} struct (or datasets.Image), raw bytes or a path string",
    "images": "several pictures per row: a list of such pictures",
    "system": "optional system message text",
}
SEED_COLUMNS = ("messages", "rejected_response", "images", "videos", "rejected_images")
RLAIF_V_IGNORED = ("ds_name", "origin_dataset", "origin_split", "idx", "image_path")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(?::[\w.-]+)?$")
_GLOB_CHARS = re.compile(r"[*?\[]")
_HUB_SHARD = re.compile(r"^(?P<split>[A-Za-z][\w.]*?)-\d{5}-of-\d{5}\.parquet$")

Source = Union[str, "os.PathLike[str]", Any]  # a path, glob, Hub id, or a datasets.Dataset/DatasetDict


class TableSourceError(UnreadableFile):
    """The table source as a whole cannot be used (nothing to read, unknown columns, offline Hub id...)."""


# --------------------------------------------------------------------------- shards

@dataclass
class _Shard:
    """One unit of rows with its own row numbering: a Parquet file, or a whole ``datasets.Dataset``."""

    file: str  # named in problems, records and picture labels
    rows: int  # from metadata, without reading data
    schema: pa.Schema
    base_dir: str  # relative picture paths are relative to this folder
    batches: Callable[..., Iterator[Any]]  # columns (, row groups) -> pyarrow RecordBatches/Tables
    groups: Optional[list[tuple[int, int]]] = None  # Parquet: (rows, bytes) of each row group


def _parquet_shard(path: str) -> tuple[Optional[_Shard], Optional[Problem]]:
    """Metadata of one Parquet file (its footer only); a problem instead when it cannot be read."""
    try:
        handle = pq.ParquetFile(path)
        rows, schema = handle.metadata.num_rows, handle.schema_arrow
        meta = handle.metadata
        groups = [(meta.row_group(i).num_rows, meta.row_group(i).total_byte_size) for i in range(meta.num_row_groups)]
        handle.close()
    except (pa.ArrowException, OSError, ValueError) as exc:
        return None, Problem(path, None, "file", "error",
                             f"not a readable Parquet file ({_short(exc)}); its rows are left out",
                             "download or copy this shard again (it may be cut short), or remove it")

    def batches(columns: list[str], only: Optional[range] = None) -> Iterator[Union[pa.RecordBatch, LostRows]]:
        """Row group by row group (``only``: these groups), so a damaged row group costs only its own rows."""
        with pq.ParquetFile(path) as parquet:
            first = 0
            for group in range(parquet.num_row_groups):
                size = parquet.metadata.row_group(group).num_rows
                if only is not None and group not in only:
                    first += size
                    continue
                done = 0
                try:
                    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, row_groups=[group], columns=columns):
                        done += batch.num_rows
                        yield batch
                except (pa.ArrowException, OSError, ValueError) as exc:
                    yield LostRows(first + done, size - done, _short(exc))
                first += size

    return _Shard(path, rows, schema, os.path.dirname(os.path.abspath(path)), batches, groups), None


@dataclass(frozen=True)
class LostRows:
    """Rows of a shard that could not be read (a damaged row group): reported, then skipped."""

    first: int
    rows: int
    reason: str


def _dataset_shard(dataset, name: str, base_dir: str) -> _Shard:
    """A ``datasets.Dataset`` as one shard, read in Arrow batches (memory-mapped when it has cache files)."""

    def batches(columns: list[str]) -> Iterator[pa.Table]:
        yield from dataset.select_columns(columns).with_format("arrow").iter(batch_size=BATCH_ROWS)

    return _Shard(name, dataset.num_rows, dataset.data.schema, base_dir, batches)


def _a(value) -> str:
    """``"an int"``, ``"a dict"``: a value's Python type with its article, for messages."""
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _short(exc: BaseException) -> str:
    """An exception's message on one line of printable text (Arrow's may hold control bytes)."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in " ".join(str(exc).split()))
    return text[:200] or type(exc).__name__


# --------------------------------------------------------------------------- layouts (schemas)

@dataclass(frozen=True)
class _Layout:
    """Which columns play which part; ``kind`` is "seed" (our own columns) or "flat" (``columns`` roles)."""

    kind: str
    columns: dict  # role (a MAPPING_KEYS key, or a seed column) -> column name
    sentence: str

    @property
    def wanted(self) -> list[str]:
        return list(dict.fromkeys(self.columns.values()))


def _describe_columns(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name} ({f.type})" for f in schema)


def _is_list(kind: pa.DataType) -> bool:
    return pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)


def _picture_words(schema: pa.Schema, column: str) -> str:
    kind = schema.field(column).type
    if _is_list(kind):
        kind = kind.value_type
    if pa.types.is_struct(kind) or pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return "embedded"
    return "as paths"


def _detect_layout(schema: pa.Schema, name: str) -> _Layout:
    """Recognise the published schemas from the column names and types of the first shard."""
    names = set(schema.names)
    if "messages" in names:
        pictures = f", pictures {_picture_words(schema, 'images')}" if "images" in names else ""
        return _Layout("seed", {c: c for c in SEED_COLUMNS if c in names},
                       f"nbtools pairs (messages, rejected_response, images as in our JSONL{pictures})")
    if {"question", "chosen", "rejected", "image"} <= names:
        ignored = [c for c in RLAIF_V_IGNORED if c in names]
        return _Layout("flat", {"prompt": "question", "chosen": "chosen", "rejected": "rejected", "image": "image"},
                       "RLAIF-V (question → user turn, image → images[0], placed before the question"
                       + (f"; {', '.join(ignored)} ignored)" if ignored else ")"))
    if {"prompt", "chosen", "rejected"} <= names:
        columns = {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}
        for key in ("images", "image"):
            if key in names:
                columns[key] = key
                break
        pictures = f"{columns.get('images', columns.get('image'))} → images" if len(columns) > 3 else "no pictures"
        if _is_list(schema.field("prompt").type):
            return _Layout("flat", columns, "TRL conversational (prompt/chosen/rejected message lists with "
                                            f"{{\"type\": \"image\"}} content blocks, {pictures})")
        return _Layout("flat", columns, "TRL standard (prompt text → user turn, chosen/rejected text, "
                                        f"{pictures}, placed before the prompt as TRL does)")
    example = ", ".join(f'"{k}": "..."' for k in ("prompt", "chosen", "rejected", "image"))
    raise TableSourceError(
        f"{name}: cannot tell which columns hold the prompt, the answers and the pictures; columns found: "
        f"{_describe_columns(schema)} (fix: pass a column mapping, e.g. columns={{{example}}} in Python or "
        "--columns prompt=COL,chosen=COL,rejected=COL,image=COL on the command line; keys: "
        f"{', '.join(MAPPING_KEYS)})")


def _mapping_layout(columns: dict, schema: pa.Schema, name: str) -> _Layout:
    """An explicit ``columns`` mapping, checked against the first shard's columns."""
    unknown = [k for k in columns if k not in MAPPING_KEYS]
    if unknown:
        raise TableSourceError(f"{name}: columns mapping: unknown key(s) {', '.join(map(repr, unknown))} "
                               f"(fix: use only {', '.join(MAPPING_KEYS)})")
    missing_keys = [k for k in ("prompt", "chosen", "rejected") if not columns.get(k)]
    if missing_keys:
        raise TableSourceError(f"{name}: columns mapping: {', '.join(missing_keys)} missing "
                               "(fix: name the columns holding the prompt, chosen and rejected answers)")
    if columns.get("image") and columns.get("images"):
        raise TableSourceError(f"{name}: columns mapping names both image and images (fix: keep one)")
    absent = [c for c in columns.values() if c and c not in schema.names]
    if absent:
        raise TableSourceError(f"{name}: columns mapping names {', '.join(map(repr, absent))}, which "
                               f"{'is' if len(absent) == 1 else 'are'} not a column here; columns found: "
                               f"{_describe_columns(schema)} (fix: use one of those names)")
    used = {k: v for k, v in columns.items() if v}
    parts = [f"{used['prompt']} → user turn"]
    if "system" in used:
        parts.append(f"{used['system']} → system message")
    if "image" in used or "images" in used:
        parts.append(f"{used.get('image') or used['images']} → images, placed before the prompt")
    parts.append(f"{used['chosen']} → chosen, {used['rejected']} → rejected")
    return _Layout("flat", used, f"column mapping ({', '.join(parts)})")


# --------------------------------------------------------------------------- rows -> objects

def picture_reference(value, file: str, row: int, column: str,
                      index: Optional[int] = None) -> tuple[Optional[str], Optional[tuple[str, str]]]:
    """A picture cell -> (EmbeddedMedia of its bytes, or the path it names; None) or (None, (message, fix))."""
    if isinstance(value, str):
        return value, None  # a path (the reader resolves it against the shard's folder and checks it)
    if isinstance(value, (bytes, bytearray)):
        if value:
            return EmbeddedMedia(EmbeddedMedia.label(file, row, column, index), value), None
        return None, (f"the picture in column {column} is empty (0 bytes)", "store the image bytes")
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if isinstance(data, (bytes, bytearray)) and data:
            return EmbeddedMedia(EmbeddedMedia.label(file, row, column, index), data), None
        if data in (None, b"") and isinstance(path, str) and path:
            return path, None
        return None, (f"the picture struct in column {column} has neither bytes nor a path",
                      'store {"bytes": <the encoded image>, "path": <its file name>} or a path to the file')
    what = "missing (null)" if value is None else _a(value)
    return None, (f"the picture in column {column} is {what}, not a {{bytes, path}} struct or a path",
                  "store the image as a {bytes, path} struct (datasets.Image) or a path string")


class _Row:
    """One row being turned into a JSON-like object: knows where it is and collects its own problems."""

    def __init__(self, shard: _Shard, row: int, line: int):
        self.shard, self.row, self.line = shard, row, line
        self.problems: list[Problem] = []

    def problem(self, field_name: str, message: str, fix: str) -> None:
        self.problems.append(Problem(self.shard.file, self.line, field_name, "error", message, fix, row=self.row))

    def picture(self, value, column: str, index: Optional[int], field_name: str):
        """A picture cell -> EmbeddedMedia (bytes), a path string, or None with a problem."""
        reference, problem = picture_reference(value, self.shard.file, self.row, column, index)
        if problem is not None:
            self.problem(field_name, *problem)
        return reference

    def pictures(self, value, column: str, field_name: str) -> Optional[list]:
        """A list-of-pictures cell -> list of references (None with a problem when it is not a list)."""
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(field_name, f"column {column} holds {_a(value)}, not a list of pictures",
                         "store a list of {bytes, path} structs or paths")
            return None
        return [self.picture(v, column, i, f"{field_name}[{i}]") for i, v in enumerate(value)]

    def text_or_messages(self, value, column: str, role: str):
        """A prompt/answer cell must be text or a list (of messages); else a problem naming the column."""
        if isinstance(value, (str, list)):
            return value
        column_type = self.shard.schema.field(column).type if column in self.shard.schema.names else None
        if value is None:
            what = "missing (null)" if column_type is not None else "missing (this shard has no such column)"
        else:
            what = _a(value) + (f" (the column's type is {column_type})" if column_type else "")
        self.problem(column, f"the {role} in column {column} is {what}, not text",
                     f"store the {role} as a string (or a list of chat messages)")
        return None


def _seed_object(row: _Row, values: dict) -> dict:
    """Our own columns: drop nulls (absent and null mean the same), turn picture cells into references."""
    obj = {k: v for k, v in values.items() if v is not None}
    for key in ("images", "videos", "rejected_images"):
        if isinstance(obj.get(key), list):
            obj[key] = row.pictures(obj[key], key, key)
    return obj


def _flat_object(row: _Row, values: dict, columns: dict) -> tuple[Optional[dict], dict]:
    """Role columns -> our JSONL shape (text cells) or TRL's (message lists); also the field-name map back."""
    parts = {role: row.text_or_messages(values.get(columns[role]), columns[role], role)
             for role in ("prompt", "chosen", "rejected")}
    if "image" in columns:
        images = [row.picture(values.get(columns["image"]), columns["image"], None, columns["image"])]
    elif "images" in columns:
        images = row.pictures(values.get(columns["images"]), columns["images"], columns["images"])
    else:
        images = []
    system = values.get(columns["system"]) if "system" in columns else None
    if system is not None and not isinstance(system, str):
        row.problem(columns["system"], f"the system message in column {columns['system']} is "
                                       f"{_a(system)}, not text", "store the system message as a string")
    if row.problems or any(v is None for v in parts.values()):
        return None, {}
    images = [i for i in images if i is not None]
    if all(isinstance(v, str) for v in parts.values()):
        return _as_messages(parts, images, system, columns)
    return _as_trl(parts, images, system, columns)


def _as_messages(parts: dict, images: list, system: Optional[str], columns: dict) -> tuple[dict, dict]:
    """Text cells -> ``messages`` + ``rejected_response``; pictures go before the question, as TRL puts them."""
    prompt = parts["prompt"]
    if IMAGE_TAG not in prompt:
        prompt = IMAGE_TAG * len(images) + prompt
    head = [{"role": "system", "content": system}] if system else []
    messages = head + [{"role": "user", "content": prompt}, {"role": "assistant", "content": parts["chosen"]}]
    obj = {"messages": messages, "rejected_response": parts["rejected"], "images": images}
    names = {f"messages[{len(head)}]": columns["prompt"], f"messages[{len(head) + 1}]": columns["chosen"],
             "messages": columns["prompt"], "rejected_response": columns["rejected"]}
    if head:
        names["messages[0]"] = columns["system"]
    picture_column = columns.get("image") or columns.get("images")
    if picture_column:
        names["images"] = picture_column
    return obj, names


def _as_trl(parts: dict, images: list, system: Optional[str], columns: dict) -> tuple[dict, dict]:
    """Message-list cells -> TRL's conversational object (parse_pair's TRL rules judge it)."""
    prompt = parts["prompt"]
    if system:
        prompt = [{"role": "system", "content": system}] + (prompt if isinstance(prompt, list)
                                                            else [{"role": "user", "content": prompt}])
    obj = {"prompt": prompt, "chosen": parts["chosen"], "rejected": parts["rejected"], "images": images}
    names = {"prompt": columns["prompt"], "chosen": columns["chosen"], "rejected": columns["rejected"]}
    picture_column = columns.get("image") or columns.get("images")
    if picture_column:
        names["images"] = picture_column
    return obj, names


_FIELD_HEAD = re.compile(r"^([A-Za-z_]+)(\[\d+\])?(.*)$")


def _user_field(field_name: str, names: dict, single_picture: bool) -> str:
    """``messages[1].content`` -> ``chosen``: a problem's field in the user's column names."""
    match = _FIELD_HEAD.match(field_name)
    if not names or not match:
        return field_name
    head, index, rest = match.groups()
    if head == "messages" and f"messages{index or ''}" in names:
        return names[f"messages{index or ''}"]
    if head in ("messages", "rejected_response"):
        return names.get(head, field_name)
    if head == "images" and "images" in names:
        return names["images"] if single_picture else f"{names['images']}{index or ''}{rest}"
    if head in names:
        return f"{names[head]}{index or ''}{rest}"
    return field_name


# --------------------------------------------------------------------------- the source

@dataclass(frozen=True)
class TablePart:
    """Whole row groups ``groups[0]`` to ``groups[1]`` (exclusive) of one Parquet shard: rows ``first_row`` on,
    the first of them at ``first_line`` of the dataset (picklable: worker processes read parts)."""

    file: str
    groups: tuple[int, int]
    first_row: int
    first_line: int
    rows: int


@dataclass
class TableSource:
    """Rows of Parquet shards or a ``datasets.Dataset``, read batch by batch into records.

    ``problems`` holds container-level findings (an empty or unreadable shard); it grows while
    :meth:`iter_records` runs when a shard fails part-way through.
    """

    name: str  # what the user gave, as text
    schema: str  # a sentence saying which schema was recognised and how its columns are used
    rows: int  # total rows, from metadata (unreadable shards count 0)
    problems: list[Problem]
    disk_note: str  # "read in place", or what disk a copy made by load_dataset costs
    _shards: list[_Shard] = field(repr=False, default_factory=list)
    _layout: Optional[_Layout] = field(repr=False, default=None)

    def iter_records(self, start_line: int = 1) -> Iterator[tuple[Optional[PreferenceRecord], list[Problem]]]:
        """Every row in order: its record (None when its shape is unusable) and its problems.

        Lines count rows across all shards, the first row being ``start_line`` (so several sources
        can be numbered one after the other); ``row`` restarts at 0 in each shard. A shard whose
        data fails part-way adds a container problem and its remaining rows are skipped (their
        lines stay reserved, so later shards keep the same numbers)."""
        line = start_line
        for shard in self._shards:
            yield from self._shard_records(shard, line)
            line += shard.rows

    def _shard_records(self, shard: _Shard, first_line: int, part: Optional["TablePart"] = None) -> Iterator[tuple]:
        present = [c for c in self._layout.wanted if c in shard.schema.names] or shard.schema.names[:1]
        row = 0 if part is None else part.first_row
        first_line -= row  # lines follow rows within the shard
        batches = shard.batches(present) if part is None else shard.batches(present, range(*part.groups))
        while True:
            try:  # only reading is guarded: a failure while judging a row is a bug and must surface
                batch = next(batches)
                if isinstance(batch, LostRows):
                    self.problems.append(_lost_problem(shard, batch))
                    row = batch.first + batch.rows
                    continue
                values = batch.to_pylist()
            except StopIteration:
                return
            except (pa.ArrowException, OSError, ValueError) as exc:
                self.problems.append(Problem(shard.file, None, "file", "error",
                                             f"reading stopped at row {row} of {shard.rows} ({_short(exc)}); "
                                             "the remaining rows of this shard are left out",
                                             "download or copy this shard again, or remove it"))
                return
            for row_values in values:
                yield self._row_record(shard, row, first_line + row, row_values)
                row += 1

    def parts(self, max_rows: int = 10_000, max_bytes: int = 16 * 2**20) -> list["TablePart"]:
        """The rows cut into runs of whole Parquet row groups (at most ``max_rows`` rows and ``max_bytes``
        each, unless one group is bigger), which worker processes can read and check on their own;
        [] when the data is not all Parquet shards (a ``datasets`` object is read in this process)."""
        if not self._shards or any(shard.groups is None for shard in self._shards):
            return []
        parts, line = [], 1
        for shard in self._shards:
            start = row = rows = size = 0
            for index, (count, nbytes) in enumerate(shard.groups):
                if index > start and (rows + count > max_rows or size + nbytes > max_bytes):
                    parts.append(TablePart(shard.file, (start, index), row - rows, line + row - rows, rows))
                    start, rows, size = index, 0, 0
                rows, size, row = rows + count, size + nbytes, row + count
            if len(shard.groups) > start:
                parts.append(TablePart(shard.file, (start, len(shard.groups)), row - rows, line + row - rows, rows))
            line += shard.rows
        return parts

    def iter_part(self, part: "TablePart") -> Iterator[tuple[Optional[PreferenceRecord], list[Problem]]]:
        """The rows of one part (see :meth:`parts`), numbered as :meth:`iter_records` numbers them."""
        shard = next(s for s in self._shards if s.file == part.file)
        yield from self._shard_records(shard, part.first_line, part)

    def _row_record(self, shard: _Shard, row_no: int, line: int, values: dict) -> tuple:
        row = _Row(shard, row_no, line)
        layout = self._layout
        if layout.kind == "seed":
            obj, names = _seed_object(row, {k: values.get(k) for k in layout.wanted}), {}
        else:
            obj, names = _flat_object(row, values, layout.columns)
        if obj is None:
            return None, row.problems
        record, problems = parse_pair(obj, shard.file, line, shard.base_dir)
        single = "image" in layout.columns
        problems = [Problem(p.file, p.line, _user_field(p.field, names, single), p.severity, p.message, p.fix,
                            row=row_no) for p in problems]
        if row.problems:  # a picture could not be used: the row has no record, but all its problems show
            return None, row.problems + problems
        if record is not None:
            record.row = row_no
        return record, problems


def _lost_problem(shard: _Shard, lost: LostRows) -> Problem:
    last = lost.first + lost.rows - 1
    return Problem(shard.file, None, "file", "error",
                   f"rows {lost.first}-{last} of this shard cannot be read ({lost.reason}); they are left out",
                   "download or copy this shard again, or remove it")


# --------------------------------------------------------------------------- opening

def is_table_source(spec: Source) -> bool:
    """True for what :func:`open_table_source` reads (Parquet, Arrow, ``datasets`` folders, objects, Hub ids);
    False for JSONL/.json files, which the JSONL reader handles."""
    if _is_dataset_object(spec):
        return True
    if not isinstance(spec, (str, os.PathLike)):
        return False
    path = os.fspath(spec)
    if os.path.isfile(path):
        if path.lower().endswith(TABLE_SUFFIXES):
            return True
        try:
            with open(path, "rb") as handle:
                return handle.read(4) == b"PAR1"
        except OSError:
            return False
    if os.path.isdir(path):
        return _is_dataset_folder(path) or any(True for _ in _parquet_files(path))
    if _GLOB_CHARS.search(path):
        return True
    return _looks_like_hub_id(path)


def open_table_source(spec: Source, columns: Optional[dict] = None) -> TableSource:
    """Open ``spec`` for reading records, without reading any rows yet.

    ``spec``: a ``.parquet`` (or ``.arrow``) file; a glob of Parquet shards; a folder of Parquet shards
    (searched recursively, in sorted order); a ``Dataset.save_to_disk`` folder (memory-mapped in place);
    a ``datasets.Dataset`` (a ``DatasetDict``: its "train" split); or a Hub dataset id ``owner/name``
    or ``owner/name:split`` (default split "train"), loaded with ``datasets.load_dataset``.

    ``columns`` maps roles to column names for schemas not recognised on their own (RLAIF-V, TRL
    conversational and standard, and our own ``messages`` columns are); its keys:

    * ``prompt`` — the user's question: text, or a column of message lists (TRL conversational);
    * ``chosen`` / ``rejected`` — the answers: text, or lists holding one assistant message;
    * ``image`` — one picture per row (``{bytes, path}`` struct / ``datasets.Image``, bytes, or a path);
    * ``images`` — a list of pictures per row (give ``image`` or ``images``, not both);
    * ``system`` — optional system message text.

    Pictures go before the prompt text unless the prompt already holds ``<image>`` tags, as TRL does.
    Raises :class:`TableSourceError` (a :class:`~nbtools.errors.UserError`) when nothing can be read
    or the columns cannot be understood; problems inside shards or rows are reported, never raised.
    """
    if _is_dataset_object(spec):
        source = _from_dataset(spec, _dataset_name(spec), None, "")
    else:
        if not isinstance(spec, (str, os.PathLike)):
            raise TableSourceError(f"cannot read a {type(spec).__name__} as a table source (fix: pass a path, "
                                   "a glob, a Hub dataset id or a datasets.Dataset)")
        source = _from_path(os.fspath(spec))
    readable, problems, name, note = source
    if not readable:
        details = "; ".join(p.format() for p in problems) or "no shards"
        raise TableSourceError(f"{name}: nothing could be read ({details})")
    first = readable[0].schema
    layout = _mapping_layout(columns, first, name) if columns else _detect_layout(first, name)
    for shard in readable:
        if shard.rows == 0:
            problems.append(Problem(shard.file, None, "file", "warning", "this shard holds no rows",
                                    "nothing to do if that is expected; otherwise download the shard again"))
    return TableSource(name, layout.sentence, sum(s.rows for s in readable), problems, note, readable, layout)


def open_shards(spec: Source) -> tuple[list[_Shard], list[Problem], str]:
    """The shards of ``spec`` (as :func:`open_table_source` finds them) without reading any rows or judging the
    columns: for tables of another kind than preference pairs (a benchmark's questions)."""
    if _is_dataset_object(spec):
        shards, problems, name, _note = _from_dataset(spec, _dataset_name(spec), None, "")
    else:
        shards, problems, name, _note = _from_path(os.fspath(spec))
    return shards, problems, name


def _is_dataset_object(spec) -> bool:
    """A ``datasets`` object; answered without importing ``datasets`` (a second of start-up, ~60 MB) for
    strings and paths: whoever holds a Dataset has imported it already."""
    datasets = sys.modules.get("datasets")
    return datasets is not None and isinstance(spec, (datasets.Dataset, datasets.DatasetDict))


def _dataset_name(dataset) -> str:
    files = getattr(dataset, "cache_files", None)
    if isinstance(files, list) and len(files) == 1:
        return files[0]["filename"]
    return f"<datasets.Dataset, {getattr(dataset, 'num_rows', '?')} rows>" if not isinstance(files, dict) \
        else "<datasets.DatasetDict>"


def _from_dataset(dataset, name: str, note: Optional[str], base_dir: str) -> tuple:
    """A Dataset -> one shard; a DatasetDict -> its "train" split or one error listing the splits."""
    import datasets

    if isinstance(dataset, datasets.DatasetDict):
        if "train" not in dataset:
            splits = ", ".join(dataset.keys())
            raise TableSourceError(f"{name}: holds the splits {splits} and no 'train' split (fix: pass one "
                                   f"split, e.g. dataset['{next(iter(dataset.keys()), 'test')}'], or the split's "
                                   "sub-folder of a save_to_disk folder)")
        dataset = dataset["train"]
    if note is None:
        note = "memory-mapped in place from its Arrow files" if dataset.cache_files else "held in memory"
    base = base_dir or (os.path.dirname(dataset.cache_files[0]["filename"]) if dataset.cache_files else os.getcwd())
    return [_dataset_shard(dataset, name, base)], [], name, note


def _from_path(path: str) -> tuple:
    if os.path.isdir(path):
        if _is_dataset_folder(path):
            import datasets

            return _from_dataset(datasets.load_from_disk(path), path, "read in place (memory-mapped)",
                                 os.path.abspath(path))
        files = _split_files(path, list(_parquet_files(path)))
        if not files:
            raise TableSourceError(f"{path}: a folder without .parquet files or a save_to_disk dataset "
                                   "(fix: name a Parquet file, a folder of shards, or a JSONL file)")
        return _from_parquet_files(path, files)
    if os.path.isfile(path):
        if path.lower().endswith(".arrow"):
            import datasets

            return _from_dataset(datasets.Dataset.from_file(path), path, "read in place (memory-mapped)",
                                 os.path.dirname(os.path.abspath(path)))
        return _from_parquet_files(path, [path])
    if os.path.exists(path):
        raise TableSourceError(f"{path}: not a file or folder that can be read")
    if _GLOB_CHARS.search(path):
        files = sorted(f for f in glob.glob(path, recursive=True) if os.path.isfile(f))
        if not files:
            raise TableSourceError(f"{path}: no file matches this pattern (fix: check the folder and the pattern)")
        return _from_parquet_files(path, files)
    if _looks_like_hub_id(path):
        return _from_hub(path)
    raise TableSourceError(f"{path}: no such file or folder")


def _from_parquet_files(name: str, files: list[str]) -> tuple:
    shards, problems = [], []
    for path in files:
        shard, problem = _parquet_shard(path)
        if shard is not None:
            shards.append(shard)
        else:
            problems.append(problem)
    size = sum(os.path.getsize(f) for f in files)
    note = f"read in place ({len(files)} file{'s' if len(files) != 1 else ''}, {readable_size(size)}; no copy)"
    return shards, problems, name, note


def _parquet_files(folder: str) -> Iterator[str]:
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.lower().endswith(".parquet") and not name.startswith("."):
                yield os.path.join(root, name)


def _split_files(folder: str, files: list[str]) -> list[str]:
    """A Hub folder may hold several splits (``train-00000-of-00002.parquet``, ``test-...``): read "train"."""
    splits: dict[str, list[str]] = {}
    for path in files:
        match = _HUB_SHARD.match(os.path.basename(path))
        splits.setdefault(match.group("split") if match else "", []).append(path)
    if len(splits) <= 1:
        return files
    if "train" in splits:
        return splits["train"]
    names = ", ".join(s or "(other files)" for s in splits)
    raise TableSourceError(f"{folder}: holds shards of several splits ({names}) and no train split (fix: name "
                           f"one split's shards with a glob, e.g. '{os.path.join(folder, '**', 'test-*.parquet')}')")


def _is_dataset_folder(path: str) -> bool:
    return any(os.path.isfile(os.path.join(path, m)) for m in DATASET_MARKERS)


def _looks_like_hub_id(text: str) -> bool:
    return bool(_HUB_ID.match(text)) and not text.lower().endswith((".jsonl", ".json") + TABLE_SUFFIXES)


def _from_hub(spec: str) -> tuple:
    """``owner/name[:split]`` through ``datasets.load_dataset`` (which caches an Arrow copy on disk)."""
    import datasets

    repo, _, split = spec.partition(":")
    split = split or "train"
    try:
        dataset = datasets.load_dataset(repo, split=split)
    except Exception as exc:  # datasets raises many types (ConnectionError, FileNotFoundError, ValueError...)
        raise _hub_error(spec, repo, split, exc) from None
    size = sum(os.path.getsize(f["filename"]) for f in dataset.cache_files if os.path.exists(f["filename"]))
    where = os.path.dirname(dataset.cache_files[0]["filename"]) if dataset.cache_files else "memory"
    note = f"load_dataset keeps an Arrow copy in the Hugging Face cache: {readable_size(size)} at {where}"
    return _from_dataset(dataset, spec, note, "")


def _hub_error(spec: str, repo: str, split: str, exc: Exception) -> TableSourceError:
    import datasets

    if datasets.config.HF_HUB_OFFLINE and not isinstance(exc, ValueError):
        return TableSourceError(
            f"{spec}: HF_HUB_OFFLINE is set and the dataset {repo} (split {split}) is not in the local cache "
            f"({datasets.config.HF_DATASETS_CACHE}); no local file or folder has that name either (fix: download "
            f"it on a machine with network access (`python -c \"import datasets; datasets.load_dataset('{repo}', "
            f"split='{split}')\"`) and copy the cache folder here, or unset HF_HUB_OFFLINE)")
    return TableSourceError(f"{spec}: cannot load this Hub dataset ({_short(exc)}) (fix: check the id and the "
                            "split (owner/name:split), your network and your Hugging Face login)")


def readable_size(size: int) -> str:
    """Bytes as people read them (1000-based, one decimal): "13.1 KB", "1.0 GB"."""
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"  # pragma: no cover
