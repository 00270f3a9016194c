"""The one error contract of every entry point (command line, ``python -m nbtools.demo``/``.sweep``, notebooks).

* ``UserError``: bad input or an unusable environment. Its message names the file, line or
  setting and the fix; the command line prints it as ``error: …`` and exits 2, a notebook
  shows the message without a traceback. Each module keeps its own specific class
  (``ConfigError``, ``DataError``, …) and inherits from this one.
* Anything else is a bug or an unexpected failure: one line on stderr, exit code 3, and the
  full traceback in a file (``<run folder>/error.log`` when a run folder exists, else
  ``$NBTOOLS_CACHE_DIR/errors/<UTC time>.log``), named on that line.
* Exit code 1 is reserved for "your data has errors" (``validate``), 130 for Ctrl-C.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Optional

from nbtools.paths import cache_dir

EXIT_OK = 0
EXIT_DATA_ERRORS = 1
EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 3
EXIT_INTERRUPTED = 130

ERROR_LOG = "error.log"
# Attribute set on an exception whose details were already written (e.g. to a run folder's error.log).
LOG_ATTRIBUTE = "nbtools_error_log"
# OS errors that are the machine's state, not a bug: reported as user errors with a fix.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC: "free disk space (or choose another output folder), then run again",
                       errno.EDQUOT: "free space within your disk quota, then run again",
                       errno.EROFS: "choose a folder on a writable disk",
                       errno.EACCES: "choose a folder you may write to, or fix its permissions",
                       errno.EPERM: "choose a folder you may write to, or fix its permissions",
                       errno.ENAMETOOLONG: "use a shorter file or folder name (at most 255 bytes per name)"}


class UserError(Exception):
    """Bad input or an unusable environment, explained in the message; not a bug in nbtools."""

    def _render_traceback_(self) -> list[str]:
        # IPython/Jupyter calls this instead of printing a traceback: the message is the whole story.
        return [f"{type(self).__name__}: {self}"]


class StorageError(UserError, OSError):
    """Writing failed because of the disk (full, read-only, no permission): the message says what to free or change."""


# What libraries that write through their own C/C++/Rust code say when the disk refuses a write:
# torch.save's zip writer ("PytorchStreamWriter failed writing file data/0: file write failed") and
# safetensors ("IoError(Os { code: 28, kind: StorageFull, ... })") raise RuntimeError-like errors, not OSError.
_WRITE_FAILED_TEXTS = ("file write failed", "No space left on device", "StorageFull", "Disk quota exceeded")


def environment_error(exc: BaseException) -> Optional[StorageError]:
    """A StorageError explaining ``exc`` when it is a full disk or similar, else None.

    Looks through the chain of causes (a library that re-raises an OSError keeps it as ``__cause__``
    or ``__context__``) and at the messages of writers that do not raise OSError (torch.save,
    safetensors): a full disk during a checkpoint is the machine's state, not a bug.
    """
    seen: set[int] = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StorageError):
            return current
        if isinstance(current, OSError) and not isinstance(current, UserError) \
                and current.errno in _ENVIRONMENT_ERRNOS:
            where = f"{current.filename}: " if getattr(current, "filename", None) else ""
            return StorageError(f"{where}{current.strerror or os.strerror(current.errno)} "
                                f"(fix: {_ENVIRONMENT_ERRNOS[current.errno]})")
        text = str(current)
        if not isinstance(current, UserError) and any(marker in text for marker in _WRITE_FAILED_TEXTS):
            quota = "quota" in text
            return StorageError(f"writing to disk failed ({one_line(text)[:200]}); the disk is probably "
                                f"{'over quota' if quota else 'full'} (fix: "
                                f"{_ENVIRONMENT_ERRNOS[errno.EDQUOT if quota else errno.ENOSPC]})")
        current = current.__cause__ or current.__context__
    return None


def errors_dir() -> Path:
    """Where details of an internal error go when there is no run folder."""
    return cache_dir() / "errors"


def write_error_log(exc: BaseException, run_dir: Optional[os.PathLike] = None) -> Path:
    """Write the traceback of ``exc`` to ``run_dir/error.log`` (appended) or a new file under errors_dir().

    Returns the path; raises OSError when it cannot be written (the caller says so in one line).
    """
    stamp = datetime.now(timezone.utc)
    text = (f"--- {stamp.isoformat(timespec='seconds')} {' '.join(sys.argv)}\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    if run_dir is not None:
        from nbtools import atomic

        path = Path(run_dir) / ERROR_LOG
        try:
            earlier = path.read_text(encoding="utf-8", errors="backslashreplace")  # keeps earlier failures
        except FileNotFoundError:
            earlier = ""
        # whole or not at all: a full disk leaves the earlier log, never an empty or cut one
        atomic.write_bytes(path, (earlier + text).encode("utf-8", "backslashreplace"))
    else:
        folder = errors_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{stamp.strftime('%Y%m%dT%H%M%S.%fZ')}-{os.getpid()}.log"
        with open(path, "x", encoding="utf-8", errors="backslashreplace") as handle:
            handle.write(text)
    return path


@contextlib.contextmanager
def details_in(folder: Optional[os.PathLike]) -> Iterator[None]:
    """Write the details of an internal error raised inside to ``folder/error.log`` (the run folder the command
    works on, as training does), so they sit next to the run they concern; :func:`run_entry` names that file.

    User errors, a full disk and errors already logged pass through untouched; without ``folder``, or when it
    cannot be written, the details go to errors_dir() as before.
    """
    try:
        yield
    except Exception as exc:
        if (folder is not None and Path(folder).is_dir() and not isinstance(exc, (UserError, BrokenPipeError))
                and environment_error(exc) is None and getattr(exc, LOG_ATTRIBUTE, None) is None):
            with contextlib.suppress(OSError):
                log = write_error_log(exc, folder)
                with contextlib.suppress(AttributeError, TypeError):
                    setattr(exc, LOG_ATTRIBUTE, log)
        raise


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def first_few(items, limit: int) -> str:
    """``a, b, c and 4 more``: the first ``limit`` of ``items`` for a one-line message, and how many were left out."""
    items = list(items)
    shown = ", ".join(map(str, items[:limit]))
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def report_internal_error(exc: BaseException, prog: str) -> str:
    """The one line an entry point prints for an unexpected error; writes the details first."""
    path = getattr(exc, LOG_ATTRIBUTE, None)
    if path is None:
        try:
            path = write_error_log(exc)
        except OSError as log_exc:
            return (f"{prog}: internal error: {type(exc).__name__}: {one_line(exc)[:300]} (details could not be "
                    f"written: {log_exc.strerror or log_exc}; please report this)")
    return (f"{prog}: internal error: {type(exc).__name__}: {one_line(exc)[:300]} (details: {path}; please report "
            "this with that file)")


def run_entry(main: Callable[[], int], prog: str) -> int:
    """Run an entry point's body under the contract: its exit code, 2, 3 or 130; never a traceback."""
    try:
        return int(main() or 0)
    except UserError as exc:  # its message already names the file/setting and the fix
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit:
        raise  # argparse's usage errors (exit 2) and --help (exit 0)
    except BrokenPipeError:  # the output was piped into e.g. `head`, which stopped reading: not an error
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python exits
        return EXIT_OK
    except Exception as exc:
        storage = environment_error(exc)
        if storage is not None:
            print(f"error: {storage}", file=sys.stderr)
            return EXIT_USER_ERROR
        print(report_internal_error(exc, prog), file=sys.stderr)
        return EXIT_INTERNAL_ERROR
