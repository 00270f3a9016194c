"""Where validation reads pairs from: a JSONL/.json file, or a table (Parquet, Arrow, a Hub dataset).

:func:`open_data` picks the reader; each source yields chunks of records (``chunks``) and checked
chunks (``results``). A big JSONL file is cut into blocks of whole lines that worker processes parse
and check in parallel while this process merges their results in order, so time drops with the
cores and memory stays bounded (at most a few blocks in flight).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from typing import Iterator, Optional

from nbtools.data.checking import (CHUNK_ROWS, CheckSettings, ChunkChecker, ChunkResult, check_jsonl_block,
                                   check_table_part, gather, init_worker)
from nbtools.data import load
from nbtools.data.load import (PARQUET_MAGIC, LoadResult, UnreadableFile, is_whole_pair_line, iter_blocks, open_jsonl,
                               read_block)
from nbtools.problems import Problem

PARALLEL_MIN_BYTES = 16 * 2**20  # JSONL files at least this big are parsed by worker processes
MIN_BLOCK_BYTES = 2**20  # blocks handed to workers: 1-2 MB each
PARALLEL_MIN_ROWS = 50_000  # Parquet data with at least this many rows is read by worker processes
WORKERS_ENV = "NBTOOLS_VALIDATE_WORKERS"  # 0 or 1: parse in this process (e.g. where processes cannot start)


def default_workers() -> int:
    """Processes for parsing a big JSONL file: the environment's choice, else up to 2 (one per core)."""
    chosen = os.environ.get(WORKERS_ENV, "").strip()
    if chosen.isdigit():
        return int(chosen)
    return min(2, os.cpu_count() or 1)


class DataSource:
    """Pairs from somewhere, in chunks; ``problems`` are about the container (an empty shard...)."""

    file: str = ""
    schema: str = ""  # table data only: the recognised schema, in words
    disk_note: str = ""
    problems: list[Problem]

    def chunks(self, progress: bool = False) -> Iterator[tuple[list, list[Problem], int]]:
        """(records, problems, rows read) per chunk, in order."""
        raise NotImplementedError

    def results(self, checker: ChunkChecker, settings: CheckSettings, progress: bool = False,
                workers: Optional[int] = None) -> Iterator[ChunkResult]:
        for records, problems, rows in self.chunks(progress):
            yield checker.check(records, problems, rows)

    def count_pairs(self) -> int:
        """How many pairs there are, as cheaply as the container allows (the form's step count must not
        read a million pairs); rows that fail their checks still count, the validator names them."""
        return sum(len(records) for records, _problems, _rows in self.chunks())


class LoadedSource(DataSource):
    """Pairs already in memory: a .json list, or a file that is not text (one problem, no rows)."""

    def __init__(self, loaded: LoadResult):
        self.file, self.loaded, self.problems = loaded.file, loaded, []

    def chunks(self, progress: bool = False):
        yield self.loaded.records, self.loaded.problems, self.loaded.rows  # read whole already: one chunk


class JsonlSource(DataSource):
    """A JSONL file, read in blocks of whole lines."""

    def __init__(self, file: str, handle, size: int):
        self.file, self.handle, self.size, self.problems = file, handle, size, []
        self.base_dir = os.path.dirname(os.path.abspath(file))

    def _blocks(self, progress: bool, block_bytes: Optional[int] = None):
        reporter = load._Progress(self.file, self.size) if progress and self.size >= load.PROGRESS_MIN_BYTES else None
        with self.handle:
            yield from iter_blocks(self.handle, block_bytes or load.BLOCK_BYTES, reporter=reporter)

    def chunks(self, progress: bool = False):
        for first, block in self._blocks(progress):
            loaded = read_block(self.file, self.base_dir, first, block)
            yield loaded.records, loaded.problems, loaded.rows

    def count_pairs(self) -> int:
        """Lines that hold a whole object, unparsed; a file with pretty-printed objects is read through."""
        start, pairs = self.handle.tell(), 0
        for raw in self.handle:
            if is_whole_pair_line(raw):
                pairs += 1
            elif raw.strip():  # a pretty-printed object, or a broken line: only parsing tells
                self.handle.seek(start)
                return super().count_pairs()
        self.handle.close()
        return pairs

    def results(self, checker: ChunkChecker, settings: CheckSettings, progress: bool = False,
                workers: Optional[int] = None) -> Iterator[ChunkResult]:
        workers = default_workers() if workers is None else workers
        if workers < 2 or self.size < PARALLEL_MIN_BYTES:
            yield from super().results(checker, settings, progress)
            return
        # at least 4 blocks per worker (the last ones finish together), at most 2 MB (a worker's memory)
        block_bytes = max(MIN_BLOCK_BYTES, min(2 * MIN_BLOCK_BYTES, self.size // (4 * workers)))
        tasks = ((check_jsonl_block, self.file, self.base_dir, first, block)
                 for first, block in self._blocks(progress, block_bytes))
        yield from _in_workers(settings, workers, tasks)


def _process_context():
    """fork starts in milliseconds, but is unsafe once torch (and its thread pools) is loaded: spawn then."""
    import multiprocessing
    import sys

    return multiprocessing.get_context("spawn" if "torch" in sys.modules else "fork")


class TableDataSource(DataSource):
    """Parquet shards, a save_to_disk folder, a ``datasets.Dataset`` or a Hub id (``nbtools.data.sources``)."""

    def __init__(self, table, columns: Optional[dict] = None):
        self.table, self.columns = table, columns
        self.file, self.schema, self.disk_note = table.name, table.schema, table.disk_note
        self.problems = list(table.problems)

    def count_pairs(self) -> int:
        return self.table.rows  # from the shards' metadata (unreadable shards count 0)

    def chunks(self, progress: bool = False):
        bar = _table_progress(self.table, progress)
        yield from gather(self.table.iter_records(), CHUNK_ROWS, bar)
        self.problems += self.table.problems[len(self.problems):]  # damaged row groups found while reading

    def results(self, checker: ChunkChecker, settings: CheckSettings, progress: bool = False,
                workers: Optional[int] = None) -> Iterator[ChunkResult]:
        workers = default_workers() if workers is None else workers
        parts = self.table.parts() if workers >= 2 and self.table.rows >= PARALLEL_MIN_ROWS else []
        if len(parts) < 2:
            yield from super().results(checker, settings, progress)
            return
        bar = _table_progress(self.table, progress)
        for results in _in_workers(settings, workers, ((check_table_part, part, self.columns) for part in parts)):
            for result in results:
                if bar is not None:
                    bar.update(result.rows)
                yield result
        if bar is not None:
            bar.close()


def _in_workers(settings: CheckSettings, workers: int, tasks: Iterator[tuple]) -> Iterator:
    """Run ``(function, *arguments)`` tasks in worker processes, results in order, a few in flight at a time."""
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=_process_context(),
                               initializer=init_worker, initargs=(settings,))
    try:
        pending = []
        for function, *arguments in tasks:
            pending.append(pool.submit(function, *arguments))
            if len(pending) > 2 * workers:  # bounded: a few tasks in flight, whatever the data's size
                yield pending.pop(0).result()
        for future in pending:
            yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _table_progress(table, progress: bool):
    if not progress or table.rows < 10_000:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=table.rows, desc=f"validating {os.path.basename(table.name) or table.name}", unit="row",
                mininterval=2.0)


def parse_columns(columns) -> Optional[dict[str, str]]:
    """``"prompt=question image=img"`` (the CLI's and RunConfig's form) or a dict -> a dict (None when empty)."""
    if not columns:
        return None
    if isinstance(columns, dict):
        return dict(columns)
    mapping = {}
    for item in str(columns).replace(",", " ").split():
        part, sep, column = item.partition("=")
        if not sep or not part or not column:
            raise UnreadableFile(f"columns: {item!r} is not PART=COLUMN (fix: write e.g. 'prompt=question "
                                 "image=img chosen=good rejected=bad')")
        mapping[part] = column
    return mapping


def open_data(spec, columns=None) -> DataSource:
    """The right reader for ``spec``; raises :class:`UnreadableFile` when there is nothing to read."""
    from nbtools.data import sources

    columns = parse_columns(columns)
    if not isinstance(spec, (str, os.PathLike)) or sources.is_table_source(spec) or _is_parquet(spec):
        try:
            return TableDataSource(sources.open_table_source(spec, columns), columns)
        except sources.TableSourceError as exc:
            if not (isinstance(spec, (str, os.PathLike)) and os.path.isfile(spec)):
                raise
            # one damaged file: a finding about the file (exit 1, like a JSONL file full of errors), not a usage error
            text = str(exc)
            message, _, fix = text.partition(" (fix: ")
            return LoadedSource(LoadResult(os.fspath(spec), 0, problems=[Problem(
                os.fspath(spec), None, "file", "error", message.removeprefix(f"{os.fspath(spec)}: "),
                fix.rstrip(")") or "re-download or re-export the file")]))
    if columns:
        raise UnreadableFile(f"{os.fspath(spec)}: columns= maps the columns of Parquet/Arrow data; a JSONL file "
                             "is read in its own format (fix: drop columns, or convert the file with "
                             "`python -m nbtools convert`)")
    handle, size, early = open_jsonl(spec)
    if early is not None:
        return LoadedSource(early)
    return JsonlSource(os.fspath(spec), handle, size)


def _is_parquet(spec) -> bool:
    try:
        with open(spec, "rb") as handle:
            return handle.read(4) == PARQUET_MAGIC
    except (OSError, ValueError):
        return False
