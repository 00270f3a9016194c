"""A problem found in user input: a value to show, never an exception to catch.

The validator returns these; the notebook, the command line and the trainer each decide
how to present them. Dataset-level findings have ``line=None``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Iterable, Literal, Optional

Severity = Literal["error", "warning", "info"]
SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


@dataclass(frozen=True, slots=True)  # slots: a big file can have a finding on every line
class Problem:
    file: str
    line: Optional[int]  # 1-based line in the file; None for dataset-level findings
    field: str  # e.g. "messages[2].content", "images[0]", "rejected_response", "dataset"
    severity: Severity
    message: str  # what is wrong, in the user's terms
    fix: str  # what to do about it
    # rows of Parquet/Arrow data: the 0-based row within ``file`` (a shard), as ``datasets`` numbers them;
    # ``line`` then is the row's 1-based position in the whole dataset (a key, not shown)
    row: Optional[int] = None

    def format(self) -> str:
        """``FILE:LINE: SEVERITY: FIELD: MESSAGE (fix: FIX)`` — one line, grep-friendly
        (``FILE: row N: ...`` for a row of Parquet/Arrow data)."""
        if self.row is not None:
            where = f"{self.file}: row {self.row}"
        else:
            where = f"{self.file}:{self.line}" if self.line is not None else f"{self.file}:-"
        text = f"{where}: {self.severity}: {self.field}: {self.message}"
        return printable(f"{text} (fix: {self.fix})" if self.fix else text)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("file")
        if self.row is None:
            data.pop("row")
        return data


def has_errors(problems, strict: bool = False) -> bool:
    """True when any problem is an error (or a warning, with ``strict``)."""
    bad = {"error", "warning"} if strict else {"error"}
    return any(p.severity in bad for p in problems)


def printable(text: str) -> str:
    """``text`` as valid UTF-8 whatever it holds: undecodable bytes of a file name become
    ``\\xff``, lone surrogates from JSON escapes ``\\ud800`` (shown, never dropped)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


REPEAT_SHOWN = 5  # a finding repeated on many lines shows this many, then one summary
_NUMBER = re.compile(r"\d+")


@dataclass(frozen=True)
class Repeat:
    """The lines of a repeated finding that were not listed one by one."""

    severity: Severity
    field: str
    message: str  # the first occurrence's message
    fix: str
    count: int  # lines with this finding, shown ones included
    shown: int  # how many were listed one by one
    first_line: int
    last_line: int
    first_omitted: int  # the first line not listed

    def format(self, file: str) -> str:
        omitted = self.count - self.shown
        return printable(f"{file}:-: {self.severity}: {self.field}: ... and {omitted:,} more line"
                         f"{'s' if omitted != 1 else ''} like this (lines {self.first_omitted}-{self.last_line}, "
                         f"{self.count:,} in all: {self.message}); --all (or report.problems) lists each one")

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("severity", "field", "message", "fix", "count", "shown", "first_line",
                                              "last_line")}


def summarise_repeats(problems: Iterable[Problem], shown: int = REPEAT_SHOWN) -> tuple[list[Problem], list[Repeat]]:
    """Keep the first ``shown`` line findings of each kind (same severity, field and message
    up to its numbers) and summarise the rest; dataset-level findings are always kept."""
    kept: list[Problem] = []
    groups: dict[tuple, list] = {}  # key -> [first problem, count, last line, first omitted line]
    for problem in problems:
        if problem.line is None:
            kept.append(problem)
            continue
        key = (problem.severity, problem.field, _NUMBER.sub("#", problem.message))
        group = groups.get(key)
        if group is None:
            groups[key] = group = [problem, 0, problem.line, None]
        group[1] += 1
        group[2] = problem.line
        if group[1] <= shown:
            kept.append(problem)
        elif group[3] is None:
            group[3] = problem.line
    repeats = [Repeat(first.severity, first.field, first.message, first.fix, count, shown, first.line, last, omitted)
               for first, count, last, omitted in groups.values() if count > shown]
    return kept, repeats
