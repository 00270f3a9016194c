"""Validated rows on disk, memory-mapped: what training, evaluation and the preview read.

Validation streams the data once and writes every row that parsed into one Arrow file (the
streaming IPC format ``datasets`` memory-maps), so a million pairs never sit in memory as Python
objects. A :class:`RecordTable` is a read-only sequence of :class:`PreferenceRecord` over that
file (or a selection of its rows); it is what ``ValidationReport.records`` is, and what the
trainer's dataset is built from with ``datasets.Dataset.from_file`` — no second copy.

Columns: ``line`` (1-based position in the dataset), ``row`` (0-based row in its shard, table data
only), ``file``, ``record`` (the pair as compact JSON, pictures named by path or label),
``media`` (the bytes of embedded pictures, by label), ``images`` (what TRL recognises a vision
dataset by; for display only), ``length`` (the longer of prompt+chosen and prompt+rejected, in tokens), the other
token counts, and ``error`` (the row has an error). The file is removed when the last table
using it is garbage-collected (and files of processes that died are removed at the next start).
"""

from __future__ import annotations

import json
import os
import uuid
import weakref
from dataclasses import replace
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np
import pyarrow as pa

from nbtools.atomic import pid_alive
from nbtools.data.records import PreferenceRecord
from nbtools.data.tokens import PairTokens
from nbtools.media_ref import EmbeddedMedia, is_embedded
from nbtools.problems import printable

READ_BATCH = 1024  # rows turned into Python objects at a time when iterating
TOKEN_COLUMNS = ("prompt_tokens", "chosen_tokens", "rejected_tokens", "image_tokens", "video_tokens",
                 "rejected_image_delta")
SCHEMA = pa.schema([
    ("line", pa.int64()), ("row", pa.int64()), ("file", pa.string()),  # file: as JSON text
    ("record", pa.string()),
    ("media", pa.list_(pa.struct([("label", pa.string()), ("data", pa.large_binary())]))),
    ("images", pa.list_(pa.string())), ("length", pa.int32()),
    *[(name, pa.int32()) for name in TOKEN_COLUMNS], ("error", pa.bool_()),
])


def tables_dir() -> Path:
    from nbtools.paths import cache_dir

    return cache_dir() / "tables"


# --------------------------------------------------------------------------- rows <-> records

def encode_record(record: PreferenceRecord) -> str:
    """The pair as compact JSON (ASCII-escaped, so lone surrogates and odd file names survive)."""
    return json.dumps([record.prompt, record.chosen, record.rejected, record.images, record.videos,
                       record.rejected_images, record.source_format], separators=(",", ":"))


def embedded_media(record: PreferenceRecord) -> list[dict]:
    refs = [*record.images, *(record.rejected_images or ()), *record.videos]
    return [{"label": printable(m), "data": m.data} for m in refs if is_embedded(m)]


def decode_record(row: Mapping) -> PreferenceRecord:
    """A row of the table (a dict, as ``datasets`` and Arrow give it) back into a record."""
    prompt, chosen, rejected, images, videos, rejected_images, source_format = json.loads(row["record"])
    media = {m["label"]: m["data"] for m in row.get("media") or ()}
    if media:
        def ref(item: str) -> str:
            key = printable(item)  # labels are stored as printable text (Arrow strings are UTF-8)
            return EmbeddedMedia(item, media[key]) if key in media else item
        images, videos = [ref(p) for p in images], [ref(p) for p in videos]
        rejected_images = None if rejected_images is None else [ref(p) for p in rejected_images]
    return PreferenceRecord(json.loads(row["file"]), row["line"], prompt, chosen, rejected, images, videos, rejected_images,
                            source_format, row.get("row"))


def record_batch(records: Sequence[PreferenceRecord], tokens: Sequence[PairTokens],
                 errors: Sequence[bool]) -> pa.RecordBatch:
    """One chunk of validated rows as an Arrow batch, built from flat buffers (``pa.array`` on Python
    lists imports pandas, ~50 MB in every process, and nested lists per row convert slowly)."""
    media = [embedded_media(r) for r in records]
    flat_media = [m for ms in media for m in ms]
    media_values = pa.StructArray.from_arrays(
        [_strings([m["label"] for m in flat_media]), _strings([m["data"] for m in flat_media], pa.large_binary())],
        names=["label", "data"])
    columns = [
        _ints([r.line for r in records], pa.int64()),
        _optional_ints([r.row for r in records]),
        _strings(_file_names(records)),
        _strings([encode_record(r) for r in records]),
        _lists(media_values, [len(ms) for ms in media]),
        _lists(_strings([printable(p) for r in records for p in r.images]), [len(r.images) for r in records]),
        _ints([t.longest for t in tokens], pa.int32()),
        *[_ints([getattr(t, name) for t in tokens], pa.int32()) for name in
          ("prompt", "chosen", "rejected", "image_tokens", "video_tokens", "rejected_image_delta")],
        _bools(errors),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=SCHEMA)


def _ints(values: Sequence[int], kind: pa.DataType) -> pa.Array:
    array = np.asarray(values, dtype=np.int64 if kind == pa.int64() else np.int32)
    return pa.Array.from_buffers(kind, len(array), [None, pa.py_buffer(array)])


def _optional_ints(values: Sequence[Optional[int]]) -> pa.Array:
    present = np.fromiter((v is not None for v in values), dtype=bool, count=len(values))
    if not present.any():
        return pa.nulls(len(values), pa.int64())
    array = np.asarray([v if v is not None else 0 for v in values], dtype=np.int64)
    validity = None if present.all() else pa.py_buffer(np.packbits(present, bitorder="little"))
    return pa.Array.from_buffers(pa.int64(), len(array), [validity, pa.py_buffer(array)])


def _bools(values: Sequence[bool]) -> pa.Array:
    bits = np.packbits(np.asarray(values, dtype=bool), bitorder="little")
    return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(bits)])


def _strings(values: Sequence, kind: pa.DataType = pa.string()) -> pa.Array:
    """Text (valid UTF-8: callers escape what is not) or bytes, as one data buffer and its offsets."""
    data = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in values]
    offsets = np.zeros(len(data) + 1, dtype=np.int64 if kind == pa.large_binary() else np.int32)
    np.cumsum([len(d) for d in data], out=offsets[1:])
    return pa.Array.from_buffers(kind, len(data), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(data))])


def _lists(values: pa.Array, counts: list[int]) -> pa.Array:
    offsets = np.zeros(len(counts) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    return pa.ListArray.from_arrays(_ints(offsets, pa.int32()), values)


def _file_names(records: Sequence[PreferenceRecord]) -> list[str]:
    """Each record's file name as JSON text: exact for names that are not UTF-8 (Arrow strings must be)."""
    encoded: dict[str, str] = {}
    return [encoded.get(r.file) or encoded.setdefault(r.file, json.dumps(r.file)) for r in records]


# --------------------------------------------------------------------------- the file

class TableFile:
    """One Arrow file of validated rows; deleted when no table uses it any more."""

    def __init__(self, path: Path, owned: bool = True):
        self.path = path
        self._table: Optional[pa.Table] = None
        if owned:
            weakref.finalize(self, _remove, str(path))

    @property
    def table(self) -> pa.Table:
        if self._table is None:  # memory-mapped: reading a column touches only its pages
            with pa.memory_map(str(self.path)) as source:
                self._table = pa.ipc.open_stream(source).read_all()
        return self._table

    def __reduce__(self):  # a data-loader worker reopens the file; only the creating process deletes it
        return (TableFile, (self.path, False))


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _sweep_dead(folder: Path) -> None:
    """Remove tables left by processes that no longer run (a killed kernel, a crash)."""
    for file in folder.glob("*.arrow"):
        pid = file.name.split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            _remove(str(file))


class TableWriter:
    """Appends record batches to a new table file; ``finish()`` gives the :class:`RecordTable`."""

    def __init__(self, folder: Optional[Path] = None):
        folder = Path(folder) if folder is not None else tables_dir()
        folder.mkdir(parents=True, exist_ok=True)
        _sweep_dead(folder)
        self.file = TableFile(folder / f"{os.getpid()}-{uuid.uuid4().hex[:12]}.arrow")
        self._sink = pa.OSFile(str(self.file.path), "wb")
        self._writer = pa.ipc.new_stream(self._sink, SCHEMA)
        self.rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            self._writer.write_batch(batch)
            self.rows += batch.num_rows

    def finish(self) -> "RecordTable":
        self._writer.close()
        self._sink.close()
        return RecordTable(self.file)

    def abort(self) -> None:
        try:
            self._writer.close()
            self._sink.close()
        finally:
            _remove(str(self.file.path))


# --------------------------------------------------------------------------- the table

class RecordTable(Sequence):
    """A read-only, memory-mapped sequence of records (all rows of a table file, or a selection)."""

    def __init__(self, file: TableFile, positions: Optional[np.ndarray] = None):
        self._file = file
        self._positions = positions  # None: every row, in order

    @property
    def path(self) -> Path:
        return self._file.path

    @property
    def arrow(self) -> pa.Table:
        """The selected rows as an Arrow table (zero-copy for the whole file)."""
        table = self._file.table
        return table if self._positions is None else table.take(pa.array(self._positions))

    def __len__(self) -> int:
        return self._file.table.num_rows if self._positions is None else len(self._positions)

    def _position(self, index: int) -> int:
        size = len(self)
        if index < 0:
            index += size
        if not 0 <= index < size:
            raise IndexError(f"record {index} of {size}")
        return index if self._positions is None else int(self._positions[index])

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.select(np.arange(len(self))[index])
        position = self._position(index)
        return decode_record(self._file.table.slice(position, 1).to_pylist()[0])

    def __iter__(self) -> Iterator[PreferenceRecord]:
        for start in range(0, len(self), READ_BATCH):
            chunk = self._file.table
            if self._positions is None:
                rows = chunk.slice(start, READ_BATCH).to_pylist()
            else:
                rows = chunk.take(pa.array(self._positions[start:start + READ_BATCH])).to_pylist()
            for row in rows:
                yield decode_record(row)

    def read_back(self, positions: np.ndarray) -> Iterator[tuple[int, PreferenceRecord]]:
        """(position, record) for ``positions`` (ascending, of a whole table), for the dataset rules'
        confirmations: see :func:`read_rows`."""
        if self._positions is not None:
            raise ValueError("read_back reads positions of a whole table, not of a selection")
        return read_rows(self.path, positions)

    def __repr__(self) -> str:
        return f"<RecordTable of {len(self)} records>"

    def column(self, name: str) -> np.ndarray:
        values = self._file.table.column(name).to_numpy(zero_copy_only=False)
        return values if self._positions is None else values[self._positions]

    @property
    def lines(self) -> np.ndarray:
        return self.column("line")

    def select(self, indices) -> "RecordTable":
        """The records at ``indices`` (positions in this table), in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        base = np.arange(self._file.table.num_rows) if self._positions is None else self._positions
        return RecordTable(self._file, base[indices])

    def where(self, keep: np.ndarray) -> "RecordTable":
        """The records for which the boolean array ``keep`` is true."""
        return self.select(np.flatnonzero(keep))

    def without_lines(self, lines: Iterable[int]) -> "RecordTable":
        drop = np.fromiter(lines, dtype=np.int64)
        return self if not len(drop) else self.where(~np.isin(self.lines, drop))

    def without_errors(self) -> "RecordTable":
        return self.where(~self.column("error").astype(bool))

    @property
    def tokens(self) -> "TokenView":
        return TokenView(self)

    def dataset(self):
        """A ``datasets.Dataset`` over the same file (memory-mapped), restricted to these rows."""
        from datasets import Dataset

        dataset = Dataset.from_file(str(self.path))
        if self._positions is not None:
            dataset = dataset.select(self._positions)
        dataset._nbtools_table_file = self._file  # keeps the file alive as long as the dataset
        return dataset


class TokenView(Mapping):
    """``line -> PairTokens`` read from the table's token columns (nothing held per row in Python)."""

    def __init__(self, table: RecordTable, estimated: bool = False):
        self._table = table
        self._built = False  # the index and columns are read on first use (validation itself never needs them)
        self.estimated = estimated

    def _build(self) -> None:
        if not self._built:
            self._lines = self._table.lines
            self._order = np.argsort(self._lines, kind="stable")
            self._sorted = self._lines[self._order]
            self._columns = {name: self._table.column(name) for name in TOKEN_COLUMNS}
            self._built = True

    def _index(self, line) -> Optional[int]:
        self._build()
        at = int(np.searchsorted(self._sorted, line))
        if at < len(self._sorted) and self._sorted[at] == line:
            return int(self._order[at])
        return None

    def __getitem__(self, line) -> PairTokens:
        index = self._index(line)
        if index is None:
            raise KeyError(line)
        c = self._columns
        return PairTokens(int(c["prompt_tokens"][index]), int(c["chosen_tokens"][index]),
                          int(c["rejected_tokens"][index]), int(c["image_tokens"][index]), self.estimated,
                          int(c["video_tokens"][index]), int(c["rejected_image_delta"][index]))

    def __iter__(self):
        return (int(line) for line in self._table.lines)

    def __len__(self) -> int:
        return len(self._table)


READ_BACK_COLUMNS = ["line", "row", "file", "record", "media"]  # what decode_record reads


def read_rows(path: Path, positions: np.ndarray) -> Iterator[tuple[int, PreferenceRecord]]:
    """(position, record) for the rows at ``positions`` (ascending) of the table file ``path``.

    The file is read one stored batch at a time through a plain file handle, not the memory map: a
    mapped page stays resident once touched, so reading back every row of a big table would grow
    memory with the rows; a read batch is freed again. Rows stored with the same text (and no
    embedded media) are decoded once per batch and share their parts, so a file of one line
    repeated a million times costs one decoded pair per batch (and callers may key on the parts)."""
    positions = np.asarray(positions, dtype=np.int64)
    if not len(positions):
        return
    start = 0
    with pa.OSFile(str(path)) as source:
        for batch in pa.ipc.open_stream(source):
            end = start + batch.num_rows
            lo, hi = np.searchsorted(positions, [start, end])
            if lo < hi:
                wanted = _ints(positions[lo:hi] - start, pa.int64())  # pa.array would import pandas (~50 MB)
                rows = batch.select(READ_BACK_COLUMNS).take(wanted).to_pylist()
                yield from zip(positions[lo:hi].tolist(), _decode_alike(rows))
            if end > positions[-1]:
                return
            start = end


def _decode_alike(rows: list[dict]) -> Iterator[PreferenceRecord]:
    """The rows' records; rows with the text of an earlier one (and no embedded media) share its parts."""
    decoded: dict[str, PreferenceRecord] = {}
    files: dict[str, str] = {}
    for row in rows:
        first = None if row["media"] else decoded.get(row["record"])
        if first is None:
            first = decode_record(row)
            files.setdefault(row["file"], first.file)
            if not row["media"]:
                decoded[row["record"]] = first
            yield first
            continue
        file = files.get(row["file"]) or files.setdefault(row["file"], json.loads(row["file"]))
        yield replace(first, file=file, line=row["line"], row=row["row"])
