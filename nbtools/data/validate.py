"""Validate a preference dataset before training: every problem, with line (or row), field and fix.

``validate_dataset`` streams the data in chunks through the rule families — parse and schema
(per row), media files (per distinct path, threaded), sequence length (image tokens included) —
then runs the dataset-wide rules on what the chunks left (16-byte keys, statistics) and returns a
:class:`ValidationReport` whose records live in a memory-mapped Arrow table. Nothing here raises for
bad data; only data that cannot be opened at all raises :class:`~nbtools.data.load.UnreadableFile`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping, Optional, Union

import numpy as np

from nbtools.data.checking import CheckSettings, ChunkChecker, ChunkResult
from nbtools.data.fingerprint import MediaFingerprint
from nbtools.data.load import UnreadableFile, no_gc_pauses
from nbtools.data.media import MediaInfo
from nbtools.data.records import PreferenceRecord
from nbtools.data.rules import check_duplicates, check_leakage, check_size, check_verbosity, pair_key_hash
from nbtools.data.source import open_data
from nbtools.data.sources import readable_size
from nbtools.data.stats import StatsAccumulator
from nbtools.data.table import RecordTable, TableWriter, TokenView
from nbtools.data.tokens import PairTokens, TokenCounter
from nbtools.problems import SEVERITY_ORDER, Problem, Repeat, has_errors, printable, summarise_repeats
from nbtools.video import VideoSettings

__all__ = ["ValidationReport", "validate_dataset", "UnreadableFile"]
REPORT_MEDIA = 100_000  # media files whose inspection the report keeps (the rest only count in the statistics)


@dataclass(repr=False)  # the default repr would dump every record into saved notebooks
class ValidationReport:
    file: str
    rows: int  # non-blank lines (or .json items, or table rows)
    valid: int  # rows without any error
    records: RecordTable  # every row that parsed into a pair (some may still have media/length errors)
    problems: list[Problem]
    stats: dict = field(default_factory=dict)
    tokens: Mapping[int, PairTokens] = field(default_factory=dict)  # line -> token counts
    media: dict[str, MediaInfo] = field(default_factory=dict)  # path -> what inspecting it found (files only)
    schema: str = ""  # table data: which schema was recognised and how it maps to a pair
    disk_note: str = ""  # table data: read in place, or what a copy cost
    # {"references", "files_digest"}: the local files the valid rows name (nbtools.data.fingerprint);
    # training stores it so a resumed run can tell that a picture was replaced
    media_fingerprint: dict = field(default_factory=lambda: MediaFingerprint().to_dict())

    @property
    def error_lines(self) -> set[int]:
        return {p.line for p in self.problems if p.severity == "error" and p.line is not None}

    @property
    def valid_records(self) -> RecordTable:
        """The rows training can use: parsed, and with no error on their line."""
        return self.records.without_errors()

    def has_errors(self, strict: bool = False) -> bool:
        return has_errors(self.problems, strict)

    def count(self, severity: str) -> int:
        return sum(p.severity == severity for p in self.problems)

    def __repr__(self) -> str:
        return f"<ValidationReport {self.summary()}>"

    def summary(self) -> str:
        unit = "rows (numbered from 0 in each shard, as datasets numbers them)" if self.schema else "rows"
        return printable(f"{self.file}: {self.rows} {unit}, {self.valid} valid; {self.count('error')} errors, "
                         f"{self.count('warning')} warnings, {self.count('info')} info")

    def summarised(self, all_problems: bool = False) -> tuple[list[Problem], list[Repeat]]:
        """The problems to list one by one, and the repeated findings summarised (first
        ``REPEAT_SHOWN`` lines of each kind + a count); ``all_problems`` lists every one."""
        if all_problems:
            return self.problems, []
        return summarise_repeats(self.problems)

    def to_dict(self, all_problems: bool = False) -> dict:
        """The ``--json`` schema: file, rows, valid, problems (line/severity/field/message/fix),
        repeated (count/shown/first_line/last_line + the first one's severity/field/message/fix), stats.

        Every string is valid UTF-8 (undecodable bytes and lone surrogates are shown escaped)."""
        shown, repeats = self.summarised(all_problems)
        return _printable_tree({
            "file": self.file, "rows": self.rows, "valid": self.valid,
            "problems": [{"line": p.line, "severity": p.severity, "field": p.field, "message": p.message,
                          "fix": p.fix, **({"file": p.file, "row": p.row} if p.row is not None else {})}
                         for p in shown],
            "repeated": [r.to_dict() for r in repeats],
            "stats": self.stats})

    def _repr_html_(self) -> str:  # a report shown in a notebook cell
        import html

        from nbtools.data.preview import problems_html

        shown, repeats = self.summarised()  # a finding on 800,000 lines must not become 800,000 HTML rows
        notes = "".join(f"<div class='nbt-problem'>{html.escape(r.format(self.file))}</div>" for r in repeats)
        return printable(f"<p><b>{html.escape(self.summary())}</b></p>" + problems_html(shown) + notes)


def _printable_tree(value):
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {_printable_tree(k): _printable_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_printable_tree(v) for v in value]
    return value


def validate_dataset(
    path,
    *,
    max_pixels: Optional[int] = None,
    max_context_length: Optional[int] = None,
    model: Optional[str] = None,
    root: Optional[Union[str, os.PathLike]] = None,
    deep: bool = False,
    validation_file=None,
    family: Optional[str] = None,
    progress: bool = False,
    video: Optional[VideoSettings] = None,
    columns: Optional[dict[str, str]] = None,
    workers: Optional[int] = None,
    held_out: bool = False,
) -> ValidationReport:
    """Check ``path`` — a JSONL/.json file, a Parquet file, glob or folder of shards, a ``save_to_disk``
    folder, a ``datasets.Dataset`` or a Hub dataset id (see ``nbtools.data.sources``) — and return the
    report; see the module docstring. ``family`` picks the image geometry (``qwen3_vl`` by default) when
    no ``model`` is given; ``video`` (fps, max_frames, video_max_pixels; the run config's defaults when
    None) decides how many tokens a video costs; ``columns`` maps the pair's parts to the columns of a
    table in another schema. The data is streamed in chunks: memory holds a 16-byte key per pair, not
    the pairs (those go to a memory-mapped :class:`~nbtools.data.table.RecordTable`). ``workers``: processes
    that parse big JSONL files (default: 2 on machines with 2 or more cores, for files over 16 MB). ``held_out``:
    the pairs are scored, not trained on (a validation or evaluation file), so the guidance on how many pairs
    training needs does not apply to them."""
    settings = CheckSettings(max_pixels, max_context_length, model, family, os.fspath(root) if root else None, deep,
                             video)
    checker = ChunkChecker(settings)
    source = open_data(path, columns)
    validation = None
    problems: list[Problem] = []
    if validation_file is not None and _same_file(validation_file, path):
        problems.append(Problem(source.file, None, "validation_file", "warning",
                                "the validation file is the training file itself; leakage was not checked",
                                "pass a separate held-out file"))
    elif validation_file is not None:
        validation = validation_keys(validation_file, columns, progress)
    with no_gc_pauses():
        return _validate(source, checker, settings, problems, validation, progress, workers, held_out)


def _same_file(a, b) -> bool:
    try:
        return os.path.realpath(os.fspath(a)) == os.path.realpath(os.fspath(b))
    except TypeError:  # a datasets.Dataset
        return a is b


def validation_keys(spec, columns: Optional[dict[str, str]] = None, progress: bool = False) -> dict:
    """key -> first record of the validation data (held out pairs are few; their records are kept)."""
    keys: dict[bytes, PreferenceRecord] = {}
    for records, _problems, _rows in open_data(spec, columns).chunks(progress=progress):
        for record in records:
            keys.setdefault(pair_key_hash(record), record)
    return keys


def _validate(source: "DataSource", checker: ChunkChecker, settings: CheckSettings, problems: list[Problem],
              validation: Optional[dict], progress: bool, workers: Optional[int],
              held_out: bool) -> ValidationReport:
    writer = TableWriter()
    merged = _Merged()
    try:
        for result in source.results(checker, settings, progress, workers):
            merged.add(result)
            writer.write(result.batch)
        table = writer.finish()
    except BaseException:
        writer.abort()
        raise
    problems += source.problems + merged.problems
    valid = merged.rows - len(merged.error_lines)
    keys = merged.all_keys()
    problems += check_duplicates(keys, table.read_back)
    if validation is not None:
        problems += check_leakage(keys, validation, table.read_back)
    if not held_out:
        problems += check_size(source.file, valid)
    problems += check_verbosity(source.file, *merged.stats.verbosity())
    problems += check_answer_style(source.file, checker.counter, merged.stats.think)
    problems = _in_order(problems)
    stats = merged.stats.result(rows=merged.rows, valid=valid, counter=checker.counter, problems=problems)
    if source.schema:
        stats["schema"] = source.schema
    tokens = TokenView(table, estimated=checker.counter.estimated)
    return ValidationReport(source.file, merged.rows, valid, table, problems, stats, tokens, merged.media,
                            schema=source.schema, disk_note=_disk_note(source, table, merged.stats),
                            media_fingerprint=merged.fingerprint.to_dict())


def _in_order(problems: list[Problem]) -> list[Problem]:
    """By line (dataset-wide findings last), errors first on a line; stable. Sorted as one int64 key per
    finding: a key tuple each would cost ~70 bytes per finding where every line has one."""
    keys = np.fromiter(((p.line if p.line is not None else _NO_LINE) * 4 + SEVERITY_ORDER[p.severity]
                        for p in problems), dtype=np.int64, count=len(problems))
    return [problems[i] for i in np.argsort(keys, kind="stable")]  # not .tolist(): a Python int per finding


_NO_LINE = 2**60  # sorts after every line


ANSWER_STYLE_FIELD = "model"  # the field of the finding below (train() shows it once for both files)


def check_answer_style(file: str, counter: TokenCounter, think) -> list[Problem]:
    """Given a model: chosen answers whose ``<think>`` blocks do not suit its kind (one dataset-wide warning).

    Instruct models learn to emit the blocks they are trained on; Thinking models trained on answers
    without reasoning learn to skip it (``nbtools.models.variant``)."""
    if counter.processor is None:  # no --model: the kind is unknown
        return []
    from nbtools.models.variant import mismatch_finding, model_variant

    finding = mismatch_finding(model_variant(counter.processor), think, "chosen answers")
    if finding is None:
        return []
    message, fix = finding
    return [Problem(file, None, ANSWER_STYLE_FIELD, "warning", message, fix)]


def _disk_note(source: "DataSource", table: RecordTable, stats: StatsAccumulator) -> str:
    """What reading the data cost on disk: the source's own note, plus the record table validation wrote."""
    size = table.path.stat().st_size
    what = ("with the embedded pictures: Parquet cannot be memory-mapped" if stats.embedded
            else "text and media paths")
    note = f"validated rows: {readable_size(size)} in a memory-mapped Arrow table ({what})"
    return f"{source.disk_note}; {note}" if source.disk_note else note


class _Merged:
    """What validation keeps of every chunk: problems, error lines, 16-byte keys, statistics, media,
    media fingerprint."""

    def __init__(self):
        self.rows = 0
        self.problems: list[Problem] = []
        self.error_lines: set[int] = set()
        self.keys: list[np.ndarray] = []  # row i of the record table: keys[i]
        self.stats = StatsAccumulator()
        self.media: dict[str, MediaInfo] = {}
        self.fingerprint = MediaFingerprint()

    def add(self, result: ChunkResult) -> None:
        self.rows += result.rows
        self.problems += result.problems
        self.error_lines |= result.error_lines
        self.keys.append(result.keys)
        self.stats.merge(result.stats)
        self.fingerprint.merge(result.fingerprint)
        if len(self.media) < REPORT_MEDIA:
            self.media.update(result.media)
        if len(self.keys) > 64:
            self.keys = [np.concatenate(self.keys)]

    def all_keys(self) -> np.ndarray:
        return np.concatenate(self.keys) if self.keys else np.zeros((0, 2), np.uint64)
