"""Convert preference data between our JSONL (+ a picture folder) and Parquet with embedded pictures.

Why both ways: Parquet with the pictures inside is what the Hub publishes and what uploads well (one file,
no broken paths); JSONL with picture files is what people read, edit and diff. Both directions stream:
a Parquet output is written in row groups of a few hundred rows, a JSONL output row by row, and the
pictures of one row group at most are in memory at a time. Every output is written under a temporary
name and renamed when complete, and an existing output is only replaced when asked (``force``).
Rows with errors are reported and left out, never half-written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Union

import pyarrow as pa
import pyarrow.parquet as pq

from nbtools.atomic import swap_in, temp_name
from nbtools.data.records import PreferenceRecord
from nbtools.errors import UserError
from nbtools.images import is_remote
from nbtools.media_ref import EmbeddedMedia, is_embedded
from nbtools.problems import Problem

ROW_GROUP_ROWS = 256  # rows per Parquet row group when pictures are embedded (the Hub's shards use similar)
ROW_GROUP_BYTES = 64 * 2**20  # ...or fewer, once the buffered pictures reach this size
MEDIA_KEYS = ("images", "videos", "rejected_images")
_PICTURE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # datasets.Image's storage type
_SIGNATURES = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG\r\n\x1a\n", ".png"), (b"GIF8", ".gif"), (b"BM", ".bmp"),
               (b"\x1aE\xdf\xa3", ".mkv"), (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"))

Item = tuple[Optional[PreferenceRecord], list[Problem]]


class ConvertError(UserError):
    """The conversion cannot start (output exists, wrong file kinds); the message says what to do."""


@dataclass
class ConvertResult:
    source: str
    out: str
    rows: int = 0  # rows read
    written: int = 0  # rows written
    left_out: int = 0  # rows with errors, not written
    images_dir: Optional[str] = None  # where pictures were written (JSONL output)
    problems: list[Problem] = field(default_factory=list)

    def summary(self) -> str:
        text = f"wrote {self.written:,} of {self.rows:,} rows to {self.out}"
        if self.images_dir:
            text += f" (pictures in {self.images_dir})"
        if self.left_out:
            text += f"; {self.left_out:,} row{'s' if self.left_out != 1 else ''} with errors left out"
        return text


# --------------------------------------------------------------------------- reading either kind

def read_items(source: Union[str, os.PathLike, object], columns: Optional[dict] = None) -> tuple[str, Iterator[Item],
                                                                                              list[Problem]]:
    """``(name, rows, container problems)`` of any input: a table source streams, a JSONL file is loaded."""
    from nbtools.data.sources import is_table_source, open_table_source

    if is_table_source(source):
        table = open_table_source(source, columns)
        return table.name, table.iter_records(), table.problems
    if columns:
        raise ConvertError(f"{os.fspath(source)}: --columns applies to Parquet/Arrow input only (fix: drop it)")
    from nbtools.data.load import load_records

    result = load_records(source)
    return result.file, _jsonl_items(result), []


def _jsonl_items(result) -> Iterator[Item]:
    """A loaded JSONL file as (record, problems) per line, in line order; file-level problems last."""
    by_line: dict = defaultdict(list)
    for problem in result.problems:
        by_line[problem.line].append(problem)
    file_level = by_line.pop(None, [])
    lines = sorted(set(by_line) | {r.line for r in result.records})
    records = {r.line: r for r in result.records}
    for line in lines:
        yield records.get(line), by_line.get(line, [])
    if file_level:
        yield None, file_level


def _good(record: Optional[PreferenceRecord], problems: list[Problem]) -> bool:
    return record is not None and not any(p.severity == "error" for p in problems)


# --------------------------------------------------------------------------- output safety

def _check_out(out: Path, force: bool, suffix: str) -> None:
    if out.suffix.lower() != suffix:
        raise ConvertError(f"{out}: the output must end with {suffix}")
    if (out.exists() or out.is_symlink()) and not force:
        raise ConvertError(f"{out}: already exists (fix: choose another name, or pass --force to replace it)")
    if out.is_dir():
        raise ConvertError(f"{out}: is a folder (fix: name a file)")
    if not out.parent.is_dir():
        raise ConvertError(f"{out.parent}: no such folder (fix: create it first)")


@contextlib.contextmanager
def _temporary(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path``, renamed over it when the block completes, removed if it fails."""
    tmp = temp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


# --------------------------------------------------------------------------- -> Parquet

def parquet_schema() -> pa.Schema:
    """Our JSONL columns; pictures as ``datasets.Image`` structs (bytes, or a path with ``--reference``), so
    ``datasets`` shows them as images; videos as plain ``{bytes, path}`` structs."""
    import datasets

    message = {"role": datasets.Value("string"), "content": datasets.Value("string")}
    media = datasets.List(datasets.Image())
    features = datasets.Features({"messages": datasets.List(message), "rejected_response": datasets.Value("string"),
                                  "images": media, "videos": datasets.List({"bytes": datasets.Value("binary"),
                                                                            "path": datasets.Value("string")}),
                                  "rejected_images": media})
    return features.arrow_schema  # carries the features, so datasets.load_dataset sees Image columns


def to_parquet(source, out: Union[str, os.PathLike], embed: bool = True, force: bool = False,
               columns: Optional[dict] = None, row_group_rows: int = ROW_GROUP_ROWS) -> ConvertResult:
    """Write ``source`` (JSONL or any table source) as one Parquet file in our column layout.

    ``embed``: picture and video bytes go into the file (``{bytes, path}`` with the original file name);
    otherwise a path relative to ``out``'s folder (absolute when it lies elsewhere; URLs kept). Rows with
    errors (including a picture file that cannot be read) are left out and counted."""
    out = Path(out)
    _check_out(out, force, ".parquet")
    name, items, container = read_items(source, columns)
    result = ConvertResult(name, str(out), problems=container)
    schema = parquet_schema()
    with _temporary(out) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        buffer: list[dict] = []
        buffered = 0
        for record, problems in items:
            result.problems += problems
            if record is None and not problems:
                continue
            result.rows += record is not None or any(p.line is not None for p in problems)
            row = _parquet_row(record, out.parent, embed, result) if _good(record, problems) else None
            if row is None:
                result.left_out += record is not None or any(p.line is not None for p in problems)
                continue
            buffer.append(row)
            buffered += sum(len(m["bytes"] or b"") for k in MEDIA_KEYS for m in row[k] or [])
            if len(buffer) >= row_group_rows or buffered >= ROW_GROUP_BYTES:
                writer.write_table(pa.Table.from_pylist(buffer, schema), row_group_size=len(buffer))
                result.written += len(buffer)
                buffer, buffered = [], 0
        if buffer:
            writer.write_table(pa.Table.from_pylist(buffer, schema), row_group_size=len(buffer))
            result.written += len(buffer)
    return result


def _parquet_row(record: PreferenceRecord, out_dir: Path, embed: bool, result: ConvertResult) -> Optional[dict]:
    row = {"messages": [dict(m) for m in record.prompt] + [{"role": "assistant", "content": record.chosen}],
           "rejected_response": record.rejected}
    for key in MEDIA_KEYS:
        refs = getattr(record, key)
        if refs is None or (key == "videos" and not refs):
            row[key] = None
            continue
        cells = []
        for index, ref in enumerate(refs):
            cell = _media_cell(ref, out_dir, embed)
            if isinstance(cell, str):  # a message: the file cannot be read
                result.problems.append(Problem(record.file, record.line, f"{key}[{index}]", "error", cell,
                                               "restore the file or fix the path", row=record.row))
                return None
            cells.append(cell)
        row[key] = cells
    return row


def _media_cell(ref: str, out_dir: Path, embed: bool) -> Union[dict, str]:
    """``{bytes, path}`` for one picture or video; a message string when a local file cannot be read."""
    if is_embedded(ref):
        if embed:
            return {"bytes": ref.data, "path": None}
        return "a picture embedded in the input cannot be referenced by path: convert with --embed"
    if is_remote(ref):
        return {"bytes": None, "path": ref}
    if not embed:
        return {"bytes": None, "path": _relative(ref, out_dir)}
    try:
        with open(ref, "rb") as handle:
            return {"bytes": handle.read(), "path": os.path.basename(ref)}
    except OSError as exc:
        return f"cannot read {ref} ({exc.strerror or exc})"


def _relative(path: str, folder: Path) -> str:
    try:
        relative = os.path.relpath(path, folder)
    except ValueError:  # another drive (Windows)
        return path
    return path if relative.startswith(os.pardir + os.sep + os.pardir) else relative


# --------------------------------------------------------------------------- -> JSONL

def default_images_dir(out: Union[str, os.PathLike]) -> Path:
    """``train.jsonl`` -> ``train_images/`` beside it."""
    out = Path(out)
    return out.with_name(f"{out.stem}_images")


def to_jsonl(source, out: Union[str, os.PathLike], images_dir: Union[str, os.PathLike, None] = None,
             force: bool = False, columns: Optional[dict] = None) -> ConvertResult:
    """Write ``source`` as JSONL in our format; embedded pictures become files in ``images_dir``.

    Files are named by their content's SHA-256 (so the same picture is stored once and names do not
    depend on row order), with the extension their bytes announce. Path pictures stay paths, written
    relative to ``out``'s folder. The picture folder is filled under a temporary name and swapped in
    with the JSONL, so a failed conversion leaves neither half-written."""
    out = Path(out)
    _check_out(out, force, ".jsonl")
    pictures = Path(images_dir) if images_dir is not None else default_images_dir(out)
    if pictures.exists() and not force:
        raise ConvertError(f"{pictures}: already exists (fix: choose another --images-dir, or pass --force)")
    name, items, container = read_items(source, columns)
    result = ConvertResult(name, str(out), problems=container)
    staging = temp_name(pictures)
    staging.mkdir(parents=True)
    written_pictures = False
    try:
        with _temporary(out) as tmp, open(tmp, "w", encoding="utf-8") as handle:
            for record, problems in items:
                result.problems += problems
                counted = record is not None or any(p.line is not None for p in problems)
                result.rows += counted
                if not _good(record, problems):
                    result.left_out += counted
                    continue
                obj, wrote = _jsonl_object(record, out.parent, pictures, staging)
                written_pictures |= wrote
                handle.write(json.dumps(obj, ensure_ascii=False) + "\n")
                result.written += 1
            handle.flush()
            os.fsync(handle.fileno())
            if written_pictures:
                swap_in(staging, pictures)
                result.images_dir = str(pictures)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def _jsonl_object(record: PreferenceRecord, out_dir: Path, pictures: Path, staging: Path) -> tuple[dict, bool]:
    obj: dict = {"messages": [dict(m) for m in record.prompt] + [{"role": "assistant", "content": record.chosen}]}
    wrote = False
    for key in MEDIA_KEYS:
        refs = getattr(record, key)
        if refs is None or (key != "images" and not refs):
            continue
        paths = []
        for ref in refs:
            if is_embedded(ref):
                paths.append(_relative(str(pictures / _store(ref, staging)), out_dir))
                wrote = True
            else:
                paths.append(ref if is_remote(ref) else _relative(ref, out_dir))
        obj[key] = paths
    obj["rejected_response"] = record.rejected
    return obj, wrote


def _store(media: EmbeddedMedia, folder: Path) -> str:
    """Write embedded bytes once under their hash; returns the file name."""
    name = hashlib.sha256(media.data).hexdigest()[:32] + _extension(media.data)
    path = folder / name
    if not path.exists():
        path.write_bytes(media.data)
    return name


def _extension(data: bytes) -> str:
    for signature, suffix in _SIGNATURES:
        if data.startswith(signature):
            return suffix
    if data[:4] == b"RIFF":
        return {b"WEBP": ".webp", b"AVI ": ".avi"}.get(data[8:12], ".bin")
    if data[4:8] == b"ftyp":
        return ".mp4"
    return ".bin"


def convert(source, out: Union[str, os.PathLike], embed: bool = True, images_dir=None, force: bool = False,
            columns: Optional[dict] = None) -> ConvertResult:
    """Convert by the output's kind: ``.parquet`` (pictures embedded unless ``embed=False``) or ``.jsonl``."""
    suffix = Path(out).suffix.lower()
    if suffix == ".parquet":
        if images_dir is not None:
            raise ConvertError("--images-dir applies to JSONL output only (fix: drop it)")
        return to_parquet(source, out, embed=embed, force=force, columns=columns)
    if suffix == ".jsonl":
        return to_jsonl(source, out, images_dir=images_dir, force=force, columns=columns)
    raise ConvertError(f"{out}: the output must end with .parquet or .jsonl")
