"""Rules that look at the whole dataset rather than one line.

Duplicates, train/validation leakage, dataset size and a verbosity bias: each finding
points at a line where one exists (``line=None`` for dataset-wide findings).
"""

from __future__ import annotations

import statistics
from typing import Optional

from nbtools.data.records import PreferenceRecord
from nbtools.data.rules import normalise_ws
from nbtools.problems import Problem

MIN_ROWS, MAX_ROWS = 100, 100_000
VERBOSITY_MIN_PAIRS = 10
VERBOSITY_SHARE = 0.8  # chosen longer in at least this share of pairs...
VERBOSITY_RATIO = 1.3  # ...and the median chosen/rejected length ratio at least this


def pair_key(record: PreferenceRecord) -> tuple:
    """Identity of a pair: prompt text, images (by path), chosen and rejected, whitespace-normalised."""
    prompt = tuple((m["role"], normalise_ws(m["content"])) for m in record.prompt)
    return prompt, tuple(record.images), tuple(record.videos), normalise_ws(record.chosen), normalise_ws(record.rejected)


def check_duplicates(records: list[PreferenceRecord]) -> list[Problem]:
    """A pair seen before in the same file: it weighs double in training."""
    # Only a 64-bit hash per pair is kept (a full key per record would dominate memory on a big
    # file); a hash match is confirmed against the first record's full key before it counts.
    first_seen: dict[int, int] = {}  # hash of the pair key -> index of its first record
    confirmed: dict[int, tuple] = {}  # index of a first record that has copies -> its full key
    colliding: dict[tuple, int] = {}  # full key -> first index, for pairs whose hash another pair took
    messages: dict[int, str] = {}  # one message string per original line, however many copies it has
    problems = []
    previous = (None, None)  # identical lines share contents (see ``load``): their key is computed once
    for index, record in enumerate(records):
        identity = (id(record.prompt), id(record.chosen), id(record.rejected), id(record.images), id(record.videos))
        key = previous[1] if identity == previous[0] else pair_key(record)
        previous = (identity, key)
        first = first_seen.setdefault(hash(key), index)
        if first == index:
            continue
        if first not in confirmed:
            confirmed[first] = pair_key(records[first])
        if confirmed[first] != key:  # two different pairs with one hash: track these by their full key
            first = colliding.setdefault(key, index)
            if first == index:
                continue
        line = records[first].line
        if line not in messages:
            messages[line] = f"duplicate pair: same prompt, images and answers as line {line}"
        problems.append(Problem(record.file, record.line, "messages", "warning", messages[line],
                                "remove the duplicate, or keep it on purpose to weight this pair double"))
    return problems


def check_leakage(records: list[PreferenceRecord], validation: list[PreferenceRecord]) -> list[Problem]:
    """A training pair that is also in the validation file inflates the validation metrics."""
    in_validation: dict[tuple, PreferenceRecord] = {}
    for record in validation:
        in_validation.setdefault(pair_key(record), record)
    problems = []
    for record in records:
        other = in_validation.get(pair_key(record))
        if other is not None:
            problems.append(Problem(record.file, record.line, "messages", "warning",
                                    f"leakage: the same pair is in the validation file {other.file} "
                                    f"at line {other.line}",
                                    "remove it from one of the two files so validation measures unseen pairs"))
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


def check_verbosity(file: str, records: list[PreferenceRecord]) -> list[Problem]:
    """Chosen answers systematically longer than rejected ones teach length, not quality."""
    if len(records) < VERBOSITY_MIN_PAIRS:
        return []
    ratios = [len(r.chosen) / max(1, len(r.rejected)) for r in records]
    share_longer = sum(len(r.chosen) > len(r.rejected) for r in records) / len(records)
    median = statistics.median(ratios)
    if share_longer >= VERBOSITY_SHARE and median >= VERBOSITY_RATIO:
        return [Problem(file, None, "dataset", "warning",
                        f"chosen is longer than rejected in {share_longer:.0%} of pairs (median length ratio "
                        f"{median:.2f}); DPO then learns to be verbose",
                        "balance lengths (shorter chosen or longer rejected answers), or watch output length")]
    return []


def check_dataset(file: str, records: list[PreferenceRecord], valid_rows: int,
                  validation: Optional[list[PreferenceRecord]] = None) -> list[Problem]:
    problems = check_duplicates(records)
    if validation is not None:
        problems += check_leakage(records, validation)
    problems += check_size(file, valid_rows)
    problems += check_verbosity(file, records)
    return problems
