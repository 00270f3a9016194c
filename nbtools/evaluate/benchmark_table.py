"""Benchmarks published as tables: Parquet shards with the pictures embedded (``lmms-lab/POPE`` and its kind).

Each table row becomes the JSON object a benchmark file holds, so :mod:`nbtools.evaluate.benchmark` checks it
as it checks a line: ``question`` is the question's ``text``, ``id`` stands in for a missing ``question_id``
(else the row's position), ``category`` names the question's subset, and a picture stored in the row becomes an
:class:`~nbtools.media_ref.EmbeddedMedia` named after its shard and row. A table whose ``answer`` column
holds only "yes" and "no" (POPE as lmms-lab publishes it) is read as POPE's yes/no layout.
"""

from __future__ import annotations

import os
from typing import Iterator, Optional

from nbtools.data.sources import LostRows, TableSourceError, open_shards, picture_reference
from nbtools.errors import UserError

QUESTION_COLUMNS = ("question_id", "id", "text", "question", "image", "label", "answer", "terms", "category")


def _yes_no_answers(shards, columns: set) -> bool:
    """Whether every ``answer`` is yes or no (and the table has no ``label`` of its own)."""
    if "answer" not in columns or "label" in columns:
        return False
    for shard in shards:
        for batch in shard.batches(["answer"]):
            if isinstance(batch, LostRows):  # a damaged row group: its rows are reported when read
                continue
            if any(not isinstance(a, str) or a.strip().lower() not in ("yes", "no")
                   for a in batch.column("answer").to_pylist()):
                return False
    return True


def _as_question(values: dict, shard: str, row: int, position: int,
                 as_label: bool) -> tuple[dict, Optional[tuple[str, str]]]:
    """(the row as a benchmark file's JSON object, the picture cell's problem or None)."""
    image, problem = picture_reference(values.get("image"), shard, row, "image")
    question = {"question_id": values.get("question_id", values.get("id", position)),
                "text": values.get("text", values.get("question")), "image": image}
    if "label" in values or as_label:
        question["label"] = values.get("label", values.get("answer"))
    elif "answer" in values:
        question["answer"] = values["answer"]
    for optional in ("terms", "category"):
        if values.get(optional) is not None:
            question[optional] = values[optional]
    return question, problem


class TableUnusable(UserError):
    """The table as a whole cannot be a benchmark (nothing readable, or the columns are not a benchmark's)."""


def table_rows(spec) -> tuple[str, Iterator[tuple[str, object, str]]]:
    """(the table's name, ``(where, row, problem)`` per row): what ``_json_rows`` gives for a JSON file.
    Raises :class:`TableUnusable` when the table cannot be read or lacks a benchmark's columns."""
    try:
        shards, problems, name = open_shards(spec)
    except TableSourceError as exc:
        raise TableUnusable(str(exc)) from None
    if not shards:
        details = "; ".join(p.format() for p in problems) or "no shards"
        raise TableUnusable(f"{name}: nothing could be read ({details})")
    columns = set(shards[0].schema.names)
    missing = [need for need in (("image",), ("text", "question"), ("label", "answer"))
               if not columns & set(need)]
    if missing:
        wanted = ", ".join(" or ".join(need) for need in missing)
        raise TableUnusable(f"{name}: no {wanted} column (its columns: {', '.join(sorted(columns))}) (fix: a "
                            "benchmark table has image, question (or text) and answer (or label) columns, as "
                            "lmms-lab/POPE does)")
    as_label = _yes_no_answers(shards, columns)
    wanted = [c for c in QUESTION_COLUMNS if c in columns]

    def rows() -> Iterator[tuple[str, object, str]]:
        position = 0
        for shard in shards:
            label = shard.file  # messages name the shard's path and the row, as they name a JSON file's line
            row = 0
            for batch in shard.batches(wanted):
                if isinstance(batch, LostRows):
                    where = f"{label}: rows {batch.first}-{batch.first + batch.rows - 1}"
                    yield where, None, f"{where} cannot be read ({batch.reason}) (fix: download the shard again)"
                    row = batch.first + batch.rows
                    continue
                for values in batch.to_pylist():
                    position += 1
                    where = f"{label}: row {row}"
                    question, problem = _as_question(values, shard.file, row, position, as_label)
                    yield where, question, f"{where}: image: {problem[0]} (fix: {problem[1]})" if problem else ""
                    row += 1

    return name, rows()


def image_root(spec, images: Optional[os.PathLike]) -> str:
    """The folder path pictures are relative to: the one given, else the table's folder (else the working one)."""
    if images:
        return os.path.abspath(os.path.expanduser(os.fspath(images)))
    path = os.fspath(spec) if isinstance(spec, (str, os.PathLike)) else ""
    if os.path.isdir(path):
        return os.path.abspath(path)
    return os.path.dirname(os.path.abspath(path)) if os.path.isfile(path) else os.getcwd()
