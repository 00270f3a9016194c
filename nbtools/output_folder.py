"""Checking an output folder path before anything is written. Apart from :mod:`nbtools.paths` because it raises
:class:`~nbtools.errors.UserError`, and errors.py itself asks paths.py where error logs go."""

from __future__ import annotations

import os
from pathlib import Path

from nbtools.errors import UserError


def check_output_folder(path, what: str, allow_symlink: bool = True) -> Path:
    """Refuse, before anything is written, an output path that cannot be a folder of ours.

    A file, a symbolic link (when not allowed: replacing an export through a link would write
    into, or delete, whatever it points at), a name over 255 bytes or one with control characters.
    Raises nbtools.errors.UserError with the fix; returns the path.
    """
    path = Path(path).expanduser()
    for part in path.parts:
        size = len(os.fsencode(part))
        if size > 255:
            raise UserError(f"{what}: the name {part[:40]!r}... is {size} bytes long; filesystems allow 255 "
                            "(fix: choose a shorter name)")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in part):
            raise UserError(f"{what}: the name {part!r} holds a control character (fix: choose a name without "
                            "tabs, newlines or other control characters)")
    if path.is_symlink() and not allow_symlink:
        raise UserError(f"{what}: {path} is a symbolic link (to {os.readlink(path)}); nbtools does not write or "
                        "replace folders through a link (fix: pass the real folder path, or a new folder)")
    if path.exists() and not path.is_dir():
        raise UserError(f"{what}: {path} is a file, not a folder (fix: choose a folder path, e.g. exports/my-model)")
    return path
