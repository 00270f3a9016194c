"""Where things live: the project folder relative paths start from, and nbtools' cache (built tiny models,
cached log-probs, error logs)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "NBTOOLS_CACHE_DIR"
PROJECT_ROOT_ENV = "NBTOOLS_PROJECT_ROOT"


def cache_dir() -> Path:
    """Root of nbtools' cache: ``$NBTOOLS_CACHE_DIR`` or ``~/.cache/nbtools``."""
    root = os.environ.get(CACHE_ENV) or os.path.join("~", ".cache", "nbtools")
    return Path(root).expanduser()


def model_cache_dir() -> Path:
    """Folder holding the built-in tiny models, one sub-folder per id."""
    return cache_dir() / "models"


def project_root() -> Path:
    """The folder relative parameter paths start from.

    $NBTOOLS_PROJECT_ROOT if set; else the nearest folder at or above the working folder that
    holds both ``notebooks/`` and ``data_samples/``; else the clone nbtools was installed from
    (editable install); else the working folder.
    """
    env = os.environ.get(PROJECT_ROOT_ENV)
    if env:
        return Path(env).expanduser().resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "notebooks").is_dir() and (folder / "data_samples").is_dir():
            return folder
    clone = Path(__file__).resolve().parent.parent  # nbtools/paths.py -> the clone
    if (clone / "data_samples").is_dir():
        return clone
    return here
