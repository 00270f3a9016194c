"""A problem found in user input: a value to show, never an exception to catch.

The validator returns these; the notebook, the command line and the trainer each decide
how to present them. Dataset-level findings have ``line=None``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, Optional

Severity = Literal["error", "warning", "info"]
SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class Problem:
    file: str
    line: Optional[int]  # 1-based line in the file; None for dataset-level findings
    field: str  # e.g. "messages[2].content", "images[0]", "rejected_response", "dataset"
    severity: Severity
    message: str  # what is wrong, in the user's terms
    fix: str  # what to do about it

    def format(self) -> str:
        """``FILE:LINE: SEVERITY: FIELD: MESSAGE (fix: FIX)`` — one line, grep-friendly."""
        where = f"{self.file}:{self.line}" if self.line is not None else f"{self.file}:-"
        text = f"{where}: {self.severity}: {self.field}: {self.message}"
        return f"{text} (fix: {self.fix})" if self.fix else text

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("file")
        return data


def has_errors(problems, strict: bool = False) -> bool:
    """True when any problem is an error (or a warning, with ``strict``)."""
    bad = {"error", "warning"} if strict else {"error"}
    return any(p.severity in bad for p in problems)
