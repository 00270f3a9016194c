"""One module per command of ``python -m nbtools``; shared argument types live here."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """argparse type: a whole number above zero, with a message argparse prints as a usage error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value
