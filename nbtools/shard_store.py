"""A key -> (float, float) store made of append-only shard files, one per writing process.

Why: the reference cache holds one entry per pair (100,000 pairs and more); one file per entry
means 100,000 files to create, list, back up and read one by one. Here every process that writes
appends fixed-size binary records to its own shard, so a folder holds O(1) files per process that
ever wrote into it (ranks x nodes x runs), no matter how many entries, and no two processes ever
append to the same file: several ranks and nodes (local disks or one shared over NFS) write
without locks.

Shard file ``<host>-<pid>-<token>.nbref``::

    header  16 bytes  MAGIC (8) | format version (uint32 LE) | entry size (uint32 LE)
    entry   52 bytes  sha256 key (32 raw bytes) | first, second (float64 LE) | CRC32 of the 48 bytes before (uint32 LE)

Entry ``i`` starts at ``16 + 52 * i``. Each entry is appended with one ``os.write`` of the whole
record to an ``O_APPEND`` descriptor. A reader scans every shard once (on first use) into an
in-memory index and, on a miss, reads only the bytes appended since its last scan, so entries
written by other processes become visible. A torn last entry (a kill mid-write, a short file) or a
damaged one (bad CRC) is skipped: the scan stays on the fixed entry grid, the key just misses and
is recomputed. A shard with another magic, version or entry size is ignored whole (its keys miss),
so a future format change never misreads. When several valid entries hold one key, the last one
scanned wins (values for one key are equal: the key covers every input).

Memory: the index is a dict of bytes objects (about 200 bytes per key: ~20 MB of RSS at 100,000 keys), held by
every process that reads (ranks, data-loader workers); shards are read a chunk at a time, never whole.

Durability: appends reach the page cache at once (other processes on the same machine see them);
they are fsync'ed, and so visible to other NFS clients (close-to-open), at :meth:`ShardStore.flush`,
:meth:`ShardStore.close` or when the store is garbage-collected / the interpreter exits. A crash
before that may lose the last entries: they miss and are recomputed.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import struct
import threading
import weakref
import zlib
from pathlib import Path
from typing import Callable

MAGIC = b"NBREFLP\x00"
VERSION = 1
HEADER = struct.Struct("<8sII")
BODY = struct.Struct("<32sdd")
ENTRY = struct.Struct("<32sddI")
SUFFIX = ".nbref"
KEY = 32
READ_CHUNK = ENTRY.size * 16_384  # bytes read at a time while scanning

_process_token: tuple[int, str] | None = None
_create_lock = threading.Lock()


def header_bytes(version: int = VERSION) -> bytes:
    return HEADER.pack(MAGIC, version, ENTRY.size)


def encode_entry(key: bytes, first: float, second: float) -> bytes:
    """One whole record: the body and its CRC32 (so a damaged or half-written record is recognised)."""
    body = BODY.pack(key, first, second)
    return body + struct.pack("<I", zlib.crc32(body))


def shard_name() -> str:
    """This process's shard name: host, pid and a random token (pids repeat across containers and over time)."""
    global _process_token
    pid = os.getpid()
    if _process_token is None or _process_token[0] != pid:  # a forked child gets its own token
        _process_token = (pid, secrets.token_hex(4))
    host = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())[:64] or "host"
    return f"{host}-{pid}-{_process_token[1]}{SUFFIX}"


def accept_any(first: float, second: float) -> bool:
    return True


def on_grid(size: int) -> bool:
    """Whether a shard of ``size`` bytes ends on an entry boundary (else appending would misalign every later entry)."""
    return size >= HEADER.size and (size - HEADER.size) % ENTRY.size == 0


class _ShardCursor:
    """How far one shard has been read; ``valid`` is None until its header could be read."""

    __slots__ = ("offset", "valid")

    def __init__(self) -> None:
        self.offset = 0
        self.valid: bool | None = None


class ShardStore:
    """Map 32-byte keys to pairs of floats, stored as append-only shards in ``folder`` (see the module docstring).

    ``accept(first, second)`` decides which values may be stored and returned (others are refused by
    :meth:`put` and skipped when scanning). Nothing touches the disk until the first read or write.
    """

    def __init__(self, folder: str | os.PathLike, accept: Callable[[float, float], bool] = accept_any):
        self.folder = Path(folder)
        self.accept = accept
        self._index: dict[bytes, bytes] = {}  # key -> the 16 bytes of its two values
        self._cursors: dict[str, _ShardCursor] = {}
        self._scanned = False
        self._lock = threading.RLock()
        self._fd: int | None = None
        self._fd_pid = 0
        self._finalizer: weakref.finalize | None = None

    # --- reading -----------------------------------------------------------------------------

    def get(self, key: bytes) -> tuple[float, float] | None:
        """The stored values, or None; a miss first reads what other processes appended since the last scan."""
        value = self._index.get(key) if self._scanned else None
        if value is None:
            self.refresh()
            value = self._index.get(key)
        return None if value is None else struct.unpack("<dd", value)

    def get_many(self, keys: list[bytes]) -> list[tuple[float, float] | None]:
        """Values of several keys, with at most one re-scan for all their misses."""
        if not self._scanned or any(key not in self._index for key in keys):
            self.refresh()
        values = [self._index.get(key) for key in keys]
        return [None if value is None else struct.unpack("<dd", value) for value in values]

    def __len__(self) -> int:
        self.refresh()
        return len(self._index)

    def keys(self) -> list[bytes]:
        self.refresh()
        return list(self._index)

    def refresh(self) -> None:
        """Read the bytes appended to every shard (new shards included) since the last scan."""
        with self._lock:
            try:
                entries = list(os.scandir(self.folder))
            except (FileNotFoundError, NotADirectoryError):
                entries = []
            for entry in entries:
                if entry.name.endswith(SUFFIX) and entry.is_file():
                    self._read_shard(entry.name, self._cursors.setdefault(entry.name, _ShardCursor()))
            self._scanned = True

    def _read_shard(self, name: str, cursor: _ShardCursor) -> None:
        if cursor.valid is False:
            return
        try:
            with open(self.folder / name, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if cursor.valid is None:
                    if size < HEADER.size:
                        return  # being created: look again next time
                    cursor.valid = handle.read(HEADER.size) == header_bytes()
                    cursor.offset = HEADER.size
                    if not cursor.valid:
                        return
                if size < cursor.offset:  # cut short since the last scan: read it again (a later entry wins anyway)
                    cursor.offset = HEADER.size
                self._read_entries(handle, cursor, size)
        except OSError:
            return

    def _read_entries(self, handle, cursor: _ShardCursor, size: int) -> None:
        """Index the whole entries between the cursor and ``size``, a chunk at a time (never a whole shard in memory).

        The cursor moves only past the last undamaged entry, so a damaged tail is read again at the next
        scan: it may be an entry whose bytes were not all visible yet (NFS).
        """
        position = cursor.offset
        end = position + (size - position) // ENTRY.size * ENTRY.size
        while position < end:
            handle.seek(position)
            chunk = handle.read(min(READ_CHUNK, end - position))
            chunk = chunk[:len(chunk) // ENTRY.size * ENTRY.size]
            if not chunk:
                return
            good_end = self._take(chunk)
            if good_end:
                cursor.offset = position + good_end
            position += len(chunk)

    def _take(self, data: bytes) -> int:
        """Index the valid entries of ``data`` (whole entries); returns where its last undamaged entry ends (or 0)."""
        view = memoryview(data)
        good_end = 0
        for start in range(0, len(data), ENTRY.size):
            key, first, second, crc = ENTRY.unpack_from(view, start)
            if crc != zlib.crc32(view[start:start + BODY.size]):
                continue
            good_end = start + ENTRY.size
            if self.accept(first, second):
                self._index[key] = data[start + KEY:start + BODY.size]
        return good_end

    # --- writing -----------------------------------------------------------------------------

    def put(self, key: bytes, first: float, second: float) -> bool:
        """Append one entry to this process's shard; False (nothing written) when ``accept`` refuses the values."""
        if len(key) != 32:
            raise ValueError(f"a key is 32 bytes, not {len(key)}")
        if not self.accept(first, second):
            return False
        record = encode_entry(key, first, second)
        value = record[KEY:BODY.size]
        with self._lock:
            fd = self._writer()
            if not on_grid(os.fstat(fd).st_size):  # cut short (a failed write, a truncation): start another shard
                self._abandon_shard()
                fd = self._writer()
            if os.write(fd, record) != len(record):  # a short write (disk full): the next put starts another
                self._abandon_shard()
                return False
            self._index[key] = value
        return True

    def _abandon_shard(self) -> None:
        """Stop appending to this shard: the next write goes to a new one (new token), on the entry grid."""
        global _process_token
        self._close_writer(sync=False)
        _process_token = None

    def _writer(self) -> int:
        """This process's append descriptor, opened (and the shard created with its header) on first use."""
        if self._fd is not None and self._fd_pid == os.getpid():
            return self._fd
        if self._fd is not None:  # inherited over fork: never append to the parent's shard
            self._finalizer.detach()
            os.close(self._fd)
            self._fd = None
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = self._open_shard(self.folder / shard_name())
        if fd is None:  # this process's shard exists in a form it cannot extend: use another name
            global _process_token
            _process_token = None
            fd = self._open_shard(self.folder / shard_name())
            if fd is None:
                raise OSError(f"cannot create a reference shard in {self.folder}")
        self._fd, self._fd_pid = fd, os.getpid()
        self._finalizer = weakref.finalize(self, _close_fd, fd, self._fd_pid)
        return fd

    @staticmethod
    def _open_shard(path: Path) -> int | None:
        """An O_APPEND descriptor on ``path``, created with its header if new; None when an existing file there
        has another header or does not end on the entry grid (appending would make its entries unreadable)."""
        with _create_lock:  # two stores of this process on one folder: only one writes the header
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                pass  # this process's shard, made by another store on the same folder
            else:
                try:
                    os.write(fd, header_bytes())
                finally:
                    os.close(fd)
        fd = os.open(path, os.O_RDWR | os.O_APPEND)
        if os.pread(fd, HEADER.size, 0) == header_bytes() and on_grid(os.fstat(fd).st_size):
            return fd
        os.close(fd)
        return None

    def flush(self) -> None:
        """fsync this process's shard, so the entries survive a crash and other NFS clients see them."""
        with self._lock:
            if self._fd is not None and self._fd_pid == os.getpid():
                os.fsync(self._fd)

    def close(self) -> None:
        """Flush and close the shard (the store stays usable: a later put reopens it)."""
        with self._lock:
            self._close_writer(sync=True)

    def _close_writer(self, sync: bool) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._fd is not None:
            _close_fd(self._fd, self._fd_pid, sync)
        self._fd = None


def _close_fd(fd: int, pid: int, sync: bool = True) -> None:
    """Close a shard descriptor at close, collection or exit; fsync only in the process that wrote."""
    if pid != os.getpid():
        return
    try:
        if sync:
            os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
