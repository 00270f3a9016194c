"""Where nbtools keeps things that outlive one run (built tiny models, cached log-probs)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "NBTOOLS_CACHE_DIR"


def cache_dir() -> Path:
    """Root of nbtools' cache: ``$NBTOOLS_CACHE_DIR`` or ``~/.cache/nbtools``."""
    root = os.environ.get(CACHE_ENV) or os.path.join("~", ".cache", "nbtools")
    return Path(root).expanduser()


def model_cache_dir() -> Path:
    """Folder holding the built-in tiny models, one sub-folder per id."""
    return cache_dir() / "models"
