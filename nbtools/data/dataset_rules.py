"""Rules that look at the whole dataset rather than one line.

Duplicates, train/validation leakage, dataset size and a verbosity bias: each finding
points at a line where one exists (``line=None`` for dataset-wide findings). They read only what
validation keeps per pair (a 16-byte key, a length ratio); the pairs whose keys match are confirmed
in one pass over the record table, never held all at once.
"""

from __future__ import annotations

import hashlib
import os
from typing import Callable, Iterator

import numpy as np

from nbtools.data.records import PreferenceRecord
from nbtools.data.rules import normalise_ws
from nbtools.media_ref import is_embedded
from nbtools.problems import Problem

MIN_ROWS, MAX_ROWS = 100, 100_000
VERBOSITY_MIN_PAIRS = 10
VERBOSITY_SHARE = 0.8  # chosen longer in at least this share of pairs...
VERBOSITY_RATIO = 1.3  # ...and the median chosen/rejected length ratio at least this
DUPLICATE_FIX = "remove the duplicate, or keep it on purpose to weight this pair double"


def _media_identity(refs) -> tuple:
    """Pictures by path, or by content when embedded in the data (their labels name rows, not pictures)."""
    return tuple(hashlib.blake2b(m.data, digest_size=16).hexdigest() if is_embedded(m) else str(m) for m in refs)


def pair_key(record: PreferenceRecord) -> tuple:
    """Identity of a pair: prompt text, images, videos, chosen and rejected, whitespace-normalised."""
    prompt = tuple((m["role"], normalise_ws(m["content"])) for m in record.prompt)
    return (prompt, _media_identity(record.images), _media_identity(record.videos), normalise_ws(record.chosen),
            normalise_ws(record.rejected))


def pair_key_hash(record: PreferenceRecord) -> bytes:
    """16 bytes standing for :func:`pair_key`, the same in every process (Python's ``hash`` is not);
    matches are confirmed on the full key, so even a collision cannot report a false duplicate."""
    # every part length-prefixed: no text can imitate a boundary between parts
    parts = [f"{len(record.prompt)}|{len(record.images)}|{len(record.videos)}"]
    for message in record.prompt:
        text = normalise_ws(message["content"])
        parts.append(f"{len(message['role'])}:{message['role']}{len(text)}:{text}")
    for ref in (*_media_identity(record.images), "", *_media_identity(record.videos)):
        parts.append(f"{len(ref)}:{ref}")
    chosen, rejected = normalise_ws(record.chosen), normalise_ws(record.rejected)
    parts.append(f"{len(chosen)}:{chosen}{len(rejected)}:{rejected}")
    return hashlib.blake2b("\x1f".join(parts).encode("utf-8", "surrogatepass"), digest_size=16).digest()


def keys_array(records: list[PreferenceRecord]) -> np.ndarray:
    """(n, 2) uint64: the records' :func:`pair_key_hash` values."""
    raw = b"".join(pair_key_hash(r) for r in records)
    return np.frombuffer(raw, dtype=np.uint64).reshape(-1, 2).copy() if raw else np.zeros((0, 2), np.uint64)


def shared_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions, groups): the pairs whose 128-bit key another pair shares, in ascending position, and
    a group number per key (one int per pair, whatever the size of a group)."""
    if len(keys) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.lexsort((keys[:, 1], keys[:, 0]))
    ordered = keys[order]
    starts = np.empty(len(order), dtype=bool)
    starts[0] = True
    np.any(ordered[1:] != ordered[:-1], axis=1, out=starts[1:])
    del ordered
    group = np.cumsum(starts) - 1
    shared = np.bincount(group)[group] > 1
    positions, group = order[shared], group[shared]
    by_position = np.argsort(positions, kind="stable")
    return positions[by_position], group[by_position]


def _place(record: PreferenceRecord) -> str:
    return f"row {record.row} of {os.path.basename(record.file)}" if record.row is not None else f"line {record.line}"


ReadBack = Callable[[np.ndarray], Iterator[tuple[int, PreferenceRecord]]]  # ascending positions -> (position, record)


def _keyed(rows: Iterator[tuple[int, PreferenceRecord]]) -> Iterator[tuple[int, PreferenceRecord, tuple]]:
    """(position, record, pair_key): rows read back alike share their parts (see ``table.read_rows``),
    so the key of a run of them is computed once."""
    last, key = None, None
    for position, record in rows:
        if not (last is not None and record.prompt is last.prompt and record.chosen is last.chosen
                and record.rejected is last.rejected and record.images is last.images
                and record.videos is last.videos):
            last, key = record, pair_key(record)
        yield position, record, key


def check_duplicates(keys: np.ndarray, read_back: ReadBack) -> list[Problem]:
    """A pair seen before in the same data: it weighs double in training.

    Pairs are matched by their 128-bit keys (16 bytes each, whatever the dataset's size); every
    match is confirmed on the full pairs, read back in one pass over the table (``read_back``).
    What this keeps is bounded by the keys still awaiting a copy, not by the copies: a file of one line
    repeated a million times holds one full key, and its findings share one message string."""
    positions, groups = shared_keys(keys)
    left = np.bincount(groups) if len(groups) else np.zeros(0, np.int64)  # copies of each key not read yet
    open_groups: dict[int, dict[tuple, str]] = {}  # group -> full key -> message naming its first pair
    files: dict[str, str] = {}  # one file-name string for all findings
    problems = []
    for group, (_position, record, key) in zip(groups, _keyed(read_back(positions)), strict=True):
        group = int(group)
        firsts = open_groups.setdefault(group, {})  # two full keys in one group: a hash collision
        message = firsts.get(key)
        if message is None:
            firsts[key] = f"duplicate pair: same prompt, images and answers as {_place(record)}"
        else:
            problems.append(Problem(files.setdefault(record.file, record.file), record.line, "messages", "warning",
                                    message, DUPLICATE_FIX, record.row))
        left[group] -= 1
        if not left[group]:
            del open_groups[group]
    return problems


def check_leakage(keys: np.ndarray, validation: dict[bytes, PreferenceRecord], read_back: ReadBack) -> list[Problem]:
    """A training pair that is also in the validation data inflates the validation metrics
    (``validation``: key -> its first validation record; the training pairs are read back in one pass)."""
    if not validation or not len(keys):
        return []
    wanted = np.frombuffer(b"".join(validation), dtype=np.uint64).reshape(-1, 2)
    as_void = np.dtype((np.void, 16))
    hits = np.flatnonzero(np.isin(np.ascontiguousarray(keys).view(as_void).ravel(),
                                  np.ascontiguousarray(wanted).view(as_void).ravel()))
    seen: dict[bytes, tuple[tuple, str]] = {}  # key -> (validation pair's full key, message): one string per pair
    files: dict[str, str] = {}
    problems = []
    for position, record, key in _keyed(read_back(hits)):
        hashed = keys[position].tobytes()
        if hashed not in seen:
            other = validation[hashed]
            where = f"row {other.row}" if other.row is not None else f"line {other.line}"
            seen[hashed] = (pair_key(other), f"leakage: the same pair is in the validation file {other.file} at {where}")
        other_key, message = seen[hashed]
        if other_key != key:
            continue
        problems.append(Problem(files.setdefault(record.file, record.file), record.line, "messages", "warning",
                                message, "remove it from one of the two files so validation measures unseen pairs",
                                record.row))
    return problems


def check_size(file: str, valid_rows: int) -> list[Problem]:
    """DPO guidance: a few hundred to tens of thousands of pairs."""
    if valid_rows < MIN_ROWS:
        return [Problem(file, None, "dataset", "warning",
                        f"only {valid_rows} valid pairs; DPO usually needs at least {MIN_ROWS}",
                        "add more pairs, or expect noisy results (fine for a smoke test)")]
    if valid_rows > MAX_ROWS:
        return [Problem(file, None, "dataset", "warning",
                        f"{valid_rows} valid pairs is above {MAX_ROWS:,}; gains flatten while cost grows",
                        "train on a sample first (and consider fewer epochs)")]
    return []


def check_verbosity(file: str, pairs: int, share_longer: float, median: float) -> list[Problem]:
    """Chosen answers systematically longer than rejected ones teach length, not quality."""
    if pairs < VERBOSITY_MIN_PAIRS:
        return []
    if share_longer >= VERBOSITY_SHARE and median >= VERBOSITY_RATIO:
        return [Problem(file, None, "dataset", "warning",
                        f"chosen is longer than rejected in {share_longer:.0%} of pairs (median length ratio "
                        f"{median:.2f}); DPO then learns to be verbose",
                        "balance lengths (shorter chosen or longer rejected answers), or watch output length")]
    return []
