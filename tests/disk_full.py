"""A full disk, simulated: files opened for writing under a folder fail with ENOSPC part-way.

``with disk_full(folder, after_bytes=10): ...`` makes every file opened for writing below
``folder`` (through ``open``/``io.open``/``Path.open``/``Path.write_text``) accept
``after_bytes`` bytes, then raise ``OSError(ENOSPC)`` — the same half-written state a real full
disk leaves behind, so a writer that truncates the old file in place loses it.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import os
from pathlib import Path


class _FillingFile:
    def __init__(self, handle, budget: list[int]):
        self._handle = handle
        self._budget = budget

    def write(self, data):
        room = self._budget[0]
        if len(data) > room:
            self._handle.write(data[:room])
            self._handle.flush()
            self._budget[0] = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._budget[0] -= len(data)
        return self._handle.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()

    def __iter__(self):
        return iter(self._handle)

    def __getattr__(self, name):
        return getattr(self._handle, name)


@contextlib.contextmanager
def disk_full(folder, after_bytes: int = 0, names: tuple[str, ...] = ()):
    """Writes below ``folder`` fail with ENOSPC after ``after_bytes`` bytes in total; with ``names``,
    only writes to files whose name contains one of them (e.g. the temporary name of that file)."""
    folder = os.path.realpath(folder)
    real_open = builtins.open
    budget = [after_bytes]
    failures: list[str] = []

    def filling_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        if isinstance(file, (str, bytes, os.PathLike)) and any(m in mode for m in "wax+"):
            path = os.path.realpath(os.fsdecode(file))
            inside = path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)
            if inside and (not names or any(n in os.path.basename(path) for n in names)):
                failures.append(path)
                return _FillingFile(handle, budget)
        return handle

    saved = (builtins.open, io.open)
    builtins.open = io.open = filling_open
    try:
        yield failures
    finally:
        builtins.open, io.open = saved


def snapshot(folder) -> dict[str, bytes]:
    """Every file below ``folder`` (relative path -> bytes), to compare before and after a fault."""
    root = Path(folder)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
