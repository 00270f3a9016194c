"""run.json: the record of one run that the run list, evaluation and export read.

Written atomically (temp file + rename) so a reader never sees half a file. While a run
trains, a heartbeat thread refreshes ``heartbeat_at``; a reader that finds ``running`` with
a stale heartbeat (or a dead process on this machine) reports the run as ``interrupted``,
so a killed run never looks alive forever.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional, Union

from nbtools.atomic import pid_alive

RUN_FILE = "run.json"
LOCK_FILE = ".nbtools-lock.json"  # held by the training process (nbtools.run_folder.lifecycle)
HEARTBEAT_INTERVAL_S = 10.0
# A heartbeat older than this means the process is gone (SIGKILL, power loss, a closed Colab tab).
STALE_AFTER_S = 60.0
STATUSES = ("running", "finished", "failed", "interrupted")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _parse_time(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def write_json_atomic(path: Union[str, Path], data: dict) -> None:
    """Temporary name + rename (nbtools.atomic): a full disk leaves the previous run.json and no temporary."""
    from nbtools.atomic import write_json

    write_json(path, data, indent=2)


def read_run(run_dir: Union[str, Path], stale_after_s: float = STALE_AFTER_S) -> dict:
    """The run record, with ``status`` corrected to ``interrupted`` for a run that stopped
    without saying so (stale heartbeat, or its process is gone on this machine).

    Adds ``status_reason`` when the status was inferred. Raises FileNotFoundError if the
    folder has no run.json.
    """
    path = Path(run_dir) / RUN_FILE
    with open(path, encoding="utf-8") as handle:
        record = json.load(handle)
    if record.get("status") == "running":
        beat = _parse_time(record.get("heartbeat_at")) or _parse_time(record.get("started_at"))
        age = time.time() - beat if beat is not None else float("inf")
        process = record.get("process") or {}
        same_host = process.get("hostname") == socket.gethostname()
        if same_host and process.get("pid") and not pid_alive(int(process["pid"])):
            record["status"] = "interrupted"
            record["status_reason"] = f"the training process (pid {process['pid']}) is no longer running"
        elif age > stale_after_s:
            record["status"] = "interrupted"
            record["status_reason"] = f"no heartbeat for {age:.0f} s (the process was stopped or killed)"
        elif record.get("locked") and not (Path(run_dir) / LOCK_FILE).exists():
            record["status"] = "interrupted"
            record["status_reason"] = ("the training process released the run folder without recording how the run "
                                       "ended (e.g. the disk was full); see error.log if there is one")
    return record


class RunRecord:
    """The writer side of run.json (rank 0 only); thread-safe, every write atomic."""

    def __init__(self, run_dir: Union[str, Path], initial: dict[str, Any]):
        self.path = Path(run_dir) / RUN_FILE
        self._lock = threading.Lock()
        self.data: dict[str, Any] = dict(initial)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.write()

    def update(self, **fields: Any) -> None:
        with self._lock:
            self.data.update(fields)
            self.data["heartbeat_at"] = utc_now()
            write_json_atomic(self.path, self.data)

    def write(self) -> None:
        self.update()

    def start_heartbeat(self, interval_s: float = HEARTBEAT_INTERVAL_S,
                        on_beat: Optional[Callable[[], bool]] = None) -> None:
        """Refresh heartbeat_at every ``interval_s``; ``on_beat`` (the run folder's lock) returning False stops it."""
        def beat():
            while not self._stop.wait(interval_s):
                if on_beat is not None and not on_beat():
                    return  # the run folder is no longer ours: never write into it again
                try:
                    self.update()
                except OSError:  # a full disk must not kill training; the next beat retries
                    pass

        self._thread = threading.Thread(target=beat, name="nbtools-heartbeat", daemon=True)
        self._thread.start()

    def stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


# --- provenance ------------------------------------------------------------------------------

PACKAGES = ("nbtools", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers", "pillow")


def package_versions() -> dict[str, Optional[str]]:
    from importlib import metadata

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_revision(path: Union[str, Path, None] = None) -> Optional[dict]:
    """Commit and dirty flag of the git checkout holding ``path`` (nbtools' own code by default)."""
    where = Path(path or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10)
        return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def sha256_file(path: Union[str, Path], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def data_digest(spec: Union[str, Path]) -> str:
    """What identifies the training data: a file's sha256; for a folder or glob of shards, the sha256 of
    their names, sizes and modification times (reading gigabytes of Parquet on every start would cost
    minutes); for a Hub id, the id (the local cache decides its content)."""
    import glob

    path = Path(spec).expanduser()
    if path.is_file():
        return sha256_file(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else \
        sorted(Path(p) for p in glob.glob(str(spec), recursive=True) if os.path.isfile(p))
    if not files:
        return hashlib.sha256(f"hub:{spec}".encode()).hexdigest()
    digest = hashlib.sha256()
    for file in files:
        stat = file.stat()
        digest.update(f"{file.relative_to(path) if path.is_dir() else file}:{stat.st_size}:{stat.st_mtime_ns}\0"
                      .encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def provenance(data_files: dict[str, Optional[str]]) -> dict:
    """Package versions, code revision, machine and sha256 of each data file."""
    import torch

    return {
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git": git_revision(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "data_files": {name: {"path": str(path), "sha256": data_digest(path)}
                       for name, path in data_files.items() if path},
        "command": " ".join(sys.argv),
    }


def process_info() -> dict:
    return {"pid": os.getpid(), "hostname": socket.gethostname()}
