"""The config form's quick check: do the training file's first chosen answers suit the model's kind
(Instruct: no ``<think>`` blocks; Thinking: reasoning kept)? Validation and training count every answer."""

from __future__ import annotations

from nbtools.data.source import open_data
from nbtools.errors import UserError
from nbtools.models.variant import ThinkCounts, mismatch_finding, variant_of_model


def answers_style_warning(model: str, data, columns: str = "", limit: int = 2000, build: bool = False) -> str | None:
    """The warning for ``data``'s first ``limit`` chosen answers against ``model``'s kind, or None: they suit it,
    or the model or the data cannot be read here (``build=False``: a tiny model not built yet is not built).

    For the config form, which checks as fields change: one chunk of a file read, the model's processor read once
    (:func:`variant_of_model` remembers it). Validation and training count every answer instead."""
    variant = variant_of_model(str(model), build=build) if model else None
    if variant is None or not data:
        return None
    counts, complete = ThinkCounts(), True
    try:
        chunks = open_data(data, columns or None).chunks()
        try:
            for records, _problems, _rows in chunks:
                counts = counts + ThinkCounts.of(r.chosen for r in records[:limit - counts.answers])
                if counts.answers >= limit:
                    complete = False
                    break
        finally:
            chunks.close()
    except (UserError, OSError):  # unreadable data: the form shows nothing here (validation says what is wrong)
        return None
    finding = mismatch_finding(variant, counts, "chosen answers" if complete else "first chosen answers")
    return None if finding is None else f"{finding[0]} (fix: {finding[1]})"
