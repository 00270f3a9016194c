"""Write files and folders so that a reader sees the old version or the new one, never half of either.

Every artifact goes to a temporary name in the same folder (same filesystem, so the rename is
atomic), is flushed to disk, then renamed over the target. When anything fails in between
(a full disk, a kill), the temporary is removed and the target keeps its previous content.
All file writes go through ``_write_to``, the one place a test injects faults (e.g. ENOSPC).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

TEMP_MARK = ".nbtmp-"  # every temporary name holds this, so leftovers are easy to recognise


def temp_name(path: Union[str, Path]) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _write_to(handle, data: bytes) -> None:
    handle.write(data)


def write_bytes(path: Union[str, Path], data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically; on failure the old file is untouched and no temporary remains."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        with open(tmp, "xb") as handle:
            _write_to(handle, data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def write_text(path: Union[str, Path], text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: Union[str, Path], data: Any, **dump_options) -> Path:
    """JSON (UTF-8, Paths and numpy/torch scalars as plain values) written atomically."""
    dump_options.setdefault("default", json_default)
    return write_text(path, json.dumps(data, **dump_options))


def json_default(value):
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    return str(value)


@contextlib.contextmanager
def replacing_dir(path: Union[str, Path]) -> Iterator[Path]:
    """``with replacing_dir(run/"adapter") as staging: save into staging`` — swapped in only when complete.

    The old folder stays until the new one is whole; then old is moved aside, new renamed in,
    old deleted. On failure the staging folder is removed and the old folder is untouched.
    """
    path = Path(path)
    staging = temp_name(path)
    staging.mkdir(parents=True)
    try:
        yield staging
        swap_in(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def swap_in(staging: Path, path: Path) -> None:
    """Rename a complete ``staging`` folder to ``path``, replacing what was there (kept until the rename)."""
    old = None
    if path.exists() or path.is_symlink():
        old = temp_name(path.with_name(path.name + ".old"))
        os.replace(path, old)
    try:
        os.replace(staging, path)
    except BaseException:
        if old is not None:
            os.replace(old, path)  # put the previous version back
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


def leftovers(folder: Union[str, Path]) -> list[Path]:
    """Temporary files or folders under ``folder`` (tests assert there are none)."""
    return sorted(p for p in Path(folder).rglob(f"*{TEMP_MARK}*"))


def temp_owner(path: Union[str, Path]) -> Optional[int]:
    """The pid that made the temporary ``path`` (``.<name>.nbtmp-<pid>-<random>``), or None if not one."""
    name = Path(path).name
    if TEMP_MARK not in name:
        return None
    pid = name.rsplit(TEMP_MARK, 1)[1].split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def remove_dead_leftovers(folder: Union[str, Path], name: Optional[str] = None) -> list[str]:
    """Clean what killed processes left in ``folder`` (not below it), or only the temporaries of ``name`` in it;
    returns what was done, for the user.

    A temporary whose process still runs (this one included) is left alone: it is being written. A folder
    moved aside by :func:`swap_in` (``.<name>.old.nbtmp-…``) whose replacement never arrived is put
    back under its name; every other leftover of a dead process is deleted.
    """
    done = []
    folder = Path(folder)
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return done
    for leftover in entries:
        pid = temp_owner(leftover)
        if pid is None or pid_alive(pid):  # this process's own temporaries are being written right now
            continue
        base = leftover.name[1:].rsplit(TEMP_MARK, 1)[0]  # ".adapter.old.nbtmp-1-ab" -> "adapter.old"
        original = folder / base[: -len(".old")] if base.endswith(".old") else None
        if name is not None and base not in (name, f"{name}.old"):
            continue
        try:
            if original is not None and not original.exists() and not original.is_symlink():
                os.replace(leftover, original)
                done.append(f"restored {original.name} (a replacement was interrupted before it arrived)")
                continue
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
            done.append(f"removed {leftover.name}, left by a stopped process (pid {pid})")
        except OSError:
            continue
    return done


def save_with(path: Union[str, Path], save: Callable[[Path], Any]) -> Path:
    """Run ``save(staging_folder)`` (e.g. ``model.save_pretrained``) and swap the folder in when it returns."""
    with replacing_dir(path) as staging:
        save(staging)
    return Path(path)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a leftover of a dead one may be removed)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed child not yet reaped by its parent) still answers kill(0): look closer.
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
