"""A cheap fingerprint of the local picture and video files a dataset's trainable rows name.

A resumed run checks the data file's sha256, but a row names its pictures by path: replace
``images/x.png`` and the same data file trains on different pixels. Hashing every file's bytes
would cost a second read of the whole media folder, so the fingerprint takes what validation
already has: each file's size and ``st_mtime_ns`` from the one stat inspection does (kept in
:class:`~nbtools.data.media.MediaInfo`, so a file a worker's cache already knows is not stat'ed
again). A file rewritten in place with the same size within the same mtime tick goes unseen;
a touched but unchanged file counts as changed (the safe side).

What counts: every occurrence of a local path in ``images``, ``videos`` and ``rejected_images``
of every row without an error. Error rows are left out because training never sees them (rows
with other errors stop the run; too-long rows are dropped). Skipped: pictures embedded in
Parquet/Arrow rows (their bytes are in the shards, which the data digest covers) and remote URLs
(no cheap, reliable stat).

Each occurrence contributes a 128-bit blake2b digest of (resolved path, size, mtime_ns): the path
as the record holds it, absolute, so data moved elsewhere (or copied, which sets new mtimes) has
another fingerprint. The stats are taken afresh by each validation (its checker and worker
processes, with their caches, live for one run). The fingerprint is their sum mod 2**128, so it
does not depend on how rows were cut into chunks, which worker process checked them or which
files a worker had cached. Not XOR: a file named twice would cancel out, and a change to it
would go unseen.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from hashlib import blake2b
from itertools import chain
from operator import attrgetter
from typing import Iterable, NamedTuple, Optional

from nbtools.images import is_remote
from nbtools.media_ref import is_embedded

MODULUS = 2**128


def _is_local(ref) -> bool:
    return not is_embedded(ref) and not is_remote(ref)


def stat_digest(path: str, size: int, mtime_ns: int) -> int:
    """One occurrence's 128-bit digest (``MediaInfo.stat_digest`` keeps it per inspected file)."""
    text = f"{path}\0{size}\0{mtime_ns}".encode("utf-8", "surrogatepass")  # odd file names hash too
    return int.from_bytes(blake2b(text, digest_size=16).digest(), "little")


@dataclass
class MediaFingerprint:
    """Running total of one dataset's media references; chunks add, merged results combine."""

    references: int = 0
    total: int = 0  # sum of per-occurrence digests mod 2**128

    def add(self, records, media: dict, skip_lines: set) -> None:
        """Count the local media of ``records`` whose line is not in ``skip_lines`` (error rows);
        ``media`` maps each path to its inspection (every path of a row without an error has one)."""
        valid = [r for r in records if r.line not in skip_lines] if skip_lines else records
        counts = Counter(chain.from_iterable(map(attrgetter("images"), valid)))  # counted in C: 2x a Python loop
        counts.update(chain.from_iterable(map(attrgetter("videos"), valid)))
        counts.update(chain.from_iterable(r.rejected_images for r in valid if r.rejected_images))
        total = self.total
        for ref, count in counts.items():  # one digest per distinct file (kept by its MediaInfo), times its uses
            if not _is_local(ref):  # labels of embedded pictures never equal a resolved path
                continue
            total += count * media[ref].stat_digest
            self.references += count
        self.total = total % MODULUS

    def merge(self, other: "MediaFingerprint") -> None:
        self.references += other.references
        self.total = (self.total + other.total) % MODULUS

    def to_dict(self) -> dict:
        """``{"references": N, "files_digest": "<32 hex digits>"}``: what run.json stores per split."""
        return {"references": self.references, "files_digest": f"{self.total:032x}"}


class ChangedMedia(NamedTuple):
    path: str
    how: str  # "modified" (mtime), "missing" (gone), "replaced" (only the ctime is newer, see changed_media)
    at: Optional[float]  # when, in seconds since the epoch (None when missing)


def changed_media(records: Iterable, since: float, limit: int = 5) -> list[ChangedMedia]:
    """Up to ``limit`` local media files of ``records`` that changed after ``since`` (a ``time.time()``,
    e.g. the run's start): for the message when the fingerprint differs. It stats each distinct
    file of every record, so call it only then.

    Modified files (mtime newer) and missing ones come first, in the order the records name them;
    then files where only the ctime is newer: ``mv``/``cp -p`` of an older file over a picture keeps
    that file's old mtime but sets the ctime (so does a chmod, which is why they come last). The
    scan stops early once ``limit`` modified or missing files are found. ``records``: any records, or a
    :class:`~nbtools.data.table.RecordTable`, whose error rows are left out as the fingerprint leaves them.
    """
    if hasattr(records, "without_errors"):
        records = records.without_errors()
    seen: set[str] = set()
    sure: list[ChangedMedia] = []
    replaced: list[ChangedMedia] = []
    for record in records:
        for refs in (record.images, record.videos, record.rejected_images or ()):
            for ref in refs:
                if ref in seen or not _is_local(ref):
                    continue
                seen.add(ref)
                try:
                    info = os.stat(ref)
                except (OSError, ValueError):
                    sure.append(ChangedMedia(str(ref), "missing", None))
                else:
                    if info.st_mtime > since:
                        sure.append(ChangedMedia(str(ref), "modified", info.st_mtime))
                    elif info.st_ctime > since and len(replaced) < limit:
                        replaced.append(ChangedMedia(str(ref), "replaced", info.st_ctime))
                if len(sure) >= limit:
                    return sure
    return (sure + replaced)[:limit]
