"""The per-chunk half of validation: media, token counts, lengths, keys and statistics of a few
thousand rows at a time, in this process or in a worker process.

``validate_dataset`` streams the data in chunks; each chunk goes through :meth:`ChunkChecker.check`,
which returns a :class:`ChunkResult`: the chunk's problems, its rows as an Arrow batch for the
record table, a 128-bit key per pair (duplicates and leakage are found from these alone), the
media it inspected and its part of the statistics. Nothing of a chunk outlives it but these, so
memory does not grow with the dataset. Big JSONL files are split into blocks that two worker
processes parse and check while the main process writes the table (see ``validate``).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np

from nbtools.data.media import MediaInfo, inspect_image, inspect_video, is_inside, size_findings
from nbtools.data.fingerprint import MediaFingerprint
from nbtools.data.records import PreferenceRecord
from nbtools.data.row_checks import check_lengths, check_video_support, video_size_findings
from nbtools.data.rules import keys_array
from nbtools.data.stats import StatsAccumulator
from nbtools.data.tokens import TokenCounter
from nbtools.images import is_remote
from nbtools.media_ref import is_embedded
from nbtools.problems import Problem
from nbtools.video import VideoSettings

CHUNK_ROWS = 10_000  # records checked together (table data, .json lists)
MEDIA_CACHE = 200_000  # inspected files remembered per process (datasets reuse pictures heavily)
INSPECT_THREADS = 8  # remote files: opening one waits on the network


@dataclass(frozen=True)
class CheckSettings:
    """What a worker process needs to check rows the way the main process would (picklable)."""

    max_pixels: Optional[int] = None
    max_context_length: Optional[int] = None
    model: Optional[str] = None
    family: Optional[str] = None
    root: Optional[str] = None
    deep: bool = False
    video: Optional[VideoSettings] = None

    def counter(self) -> TokenCounter:
        from nbtools.images import geometry

        if self.model:
            return TokenCounter.for_model(self.model, self.max_pixels, video=self.video)
        return TokenCounter(geometry(self.family), self.max_pixels, video=self.video)


@dataclass
class ChunkResult:
    rows: int  # rows read (records or not)
    problems: list[Problem]
    batch: object  # pyarrow.RecordBatch of the chunk's records
    keys: np.ndarray  # (n, 2) uint64: each record's pair key (rules.pair_key_hash), in the batch's order
    error_lines: set[int]  # rows with an error (file-level problems excluded)
    stats: StatsAccumulator
    media: dict[str, MediaInfo] = field(default_factory=dict)  # files first inspected in this chunk
    fingerprint: MediaFingerprint = field(default_factory=MediaFingerprint)  # the local media of rows without errors


class ChunkChecker:
    """Checks chunks of records with one token counter and one bounded cache of inspected files."""

    def __init__(self, settings: CheckSettings, counter: Optional[TokenCounter] = None):
        self.settings = settings
        self.counter = counter or settings.counter()
        self.cache: dict[str, MediaInfo] = {}
        self.size_findings: dict[str, list] = {}

    # ------------------------------------------------------------------ media
    def _inspect(self, records: list[PreferenceRecord]) -> tuple[dict[str, MediaInfo], dict[str, MediaInfo]]:
        """Every media reference of the chunk -> MediaInfo; also the files inspected for the first time."""
        wanted_images, wanted_videos, found = [], [], {}
        for record in records:
            for key, refs in media_fields(record):
                for ref in refs:
                    if ref in found or self._escapes(ref):
                        continue
                    cached = None if is_embedded(ref) else self.cache.get(ref)
                    if cached is not None:
                        found[ref] = cached
                    else:
                        found[ref] = None  # placeholder keeps the order and skips repeats
                        (wanted_videos if key == "videos" else wanted_images).append(ref)
        new: dict[str, MediaInfo] = {}
        remote = [p for p in wanted_images if is_remote(p)]
        for path in wanted_images:  # a local header parses faster than a thread hands it over
            if not is_remote(path):
                new[path] = inspect_image(path, self.settings.deep)
        if remote:  # network-bound: threads overlap the waiting
            with ThreadPoolExecutor(max_workers=INSPECT_THREADS) as pool:
                for info in pool.map(lambda p: inspect_image(p, self.settings.deep), remote):
                    new[info.path] = info
        for path in wanted_videos:
            new[path] = inspect_video(path, self.settings.deep)
        found.update(new)
        files = {p: i for p, i in new.items() if not is_embedded(p)}
        if len(self.cache) + len(files) > MEDIA_CACHE:
            self.cache.clear()
        self.cache.update(files)
        return found, files

    def _escapes(self, ref: str) -> bool:
        root = self.settings.root
        return bool(root) and not is_embedded(ref) and not is_inside(ref, root)

    def _media_problems(self, records: list[PreferenceRecord], media: dict[str, MediaInfo]) -> list[Problem]:
        """File problems, confinement to ``root`` and size against the vision patch, per field."""
        settings, problems = self.settings, []
        for record in records:
            for key, refs in media_fields(record):
                for i, ref in enumerate(refs):
                    where = f"{key}[{i}]"
                    if self._escapes(ref):
                        what = "is a remote URL, outside" if is_remote(ref) else "lies outside"
                        problems.append(_at(record, where, "error", f"{ref} {what} the allowed root {settings.root}",
                                            "copy the file under the root folder or point --root higher"))
                        continue
                    info = media[ref]
                    if info.error:
                        problems.append(_at(record, where, "error", f"{info.error}: {ref}", info.fix))
                        continue
                    for severity, message, fix in self._size_findings(key, ref, info):
                        problems.append(_at(record, where, severity, message, fix))
        return problems

    def _size_findings(self, key: str, ref: str, info: MediaInfo) -> list:
        found = None if is_embedded(ref) else self.size_findings.get(ref)  # embedded: one per row, not cached
        if found is None:
            found = (video_size_findings(info) if key == "videos" else
                     size_findings(info, self.counter.geo, self.counter.max_pixels))
            if not is_embedded(ref):
                if len(self.size_findings) > MEDIA_CACHE:
                    self.size_findings.clear()
                self.size_findings[ref] = found
        return found

    # ------------------------------------------------------------------ one chunk
    def check(self, records: list[PreferenceRecord], problems: list[Problem], rows: int) -> ChunkResult:
        from nbtools.data.table import record_batch

        media, new_files = self._inspect(records)
        problems = list(problems)
        problems += self._media_problems(records, media)
        problems += check_video_support(records, self.counter)
        sizes = {p: (i.width, i.height) for p, i in media.items() if i is not None and not i.error and i.width}
        videos = {p: media[p] for r in records for p in r.videos if p in media}
        tokens = self.counter.count(records, sizes, videos)
        problems += check_lengths(records, tokens, media, self.counter, self.settings.max_context_length)
        error_lines = {p.line for p in problems if p.severity == "error" and p.line is not None and p.field != "file"}
        errors = [r.line in error_lines for r in records]
        stats = StatsAccumulator()
        stats.add(records, tokens, media)
        fingerprint = MediaFingerprint()
        fingerprint.add(records, media, error_lines)
        return ChunkResult(rows, problems, record_batch(records, tokens, errors), keys_array(records),
                           error_lines, stats, new_files, fingerprint)


def media_fields(record: PreferenceRecord):
    yield "images", record.images
    yield "videos", record.videos
    if record.rejected_images:
        yield "rejected_images", record.rejected_images


def _at(record: PreferenceRecord, field_name: str, severity: str, message: str, fix: str) -> Problem:
    return Problem(record.file, record.line, field_name, severity, message, fix, record.row)


# ---------------------------------------------------------------------- worker processes

def gather(rows: Iterator[tuple], size: int, bar=None) -> Iterator[tuple[list, list[Problem], int]]:
    """(records, problems, rows read) chunks of at most ``size`` records from (record, problems) rows.

    Problems about a shard as a whole (damaged row groups) have no line and come with the chunk they
    were found in."""
    records, problems, count = [], [], 0
    for record, row_problems in rows:
        count += 1
        problems += row_problems
        if record is not None:
            records.append(record)
        if bar is not None:
            bar.update(1)
        if len(records) >= size:
            yield records, problems, count
            records, problems, count = [], [], 0
    if bar is not None:
        bar.close()
    if records or problems or count:
        yield records, problems, count



_WORKER: Optional[ChunkChecker] = None


def init_worker(settings: CheckSettings) -> None:
    global _WORKER
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _WORKER = ChunkChecker(settings)


def check_jsonl_block(file: str, base_dir: str, first_line: int, block: bytes) -> ChunkResult:
    """Parse and check one block of JSONL lines in a worker process."""
    from nbtools.data.load import read_block

    loaded = read_block(file, base_dir, first_line, block)
    return _WORKER.check(loaded.records, loaded.problems, loaded.rows)


_TABLES: dict = {}  # file -> its TableSource, opened once per worker process


def check_table_part(part, columns: Optional[dict]) -> list[ChunkResult]:
    """Read and check one part of a Parquet dataset (whole row groups) in a worker process."""
    from nbtools.data.sources import open_table_source

    table = _TABLES.get(part.file)
    if table is None:
        _TABLES.clear()
        table = _TABLES[part.file] = open_table_source(part.file, columns)
    table.problems.clear()  # what opening found, the main process found too
    results = [_WORKER.check(records, problems, rows)
               for records, problems, rows in gather(table.iter_part(part), CHUNK_ROWS)]
    if table.problems:  # damaged row groups of this part: reported with its last chunk
        results.append(_WORKER.check([], list(table.problems), 0))
        table.problems.clear()
    return results
