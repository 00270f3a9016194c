"""Data for one run: validated records -> a memory-mapped dataset + a collator that loads images late.

The dataset TRL sees is the validator's Arrow record table itself (``datasets.Dataset.from_file``,
memory-mapped, a selection of its rows): text, image paths and embedded picture bytes stay on disk
until a batch needs them, so memory does not grow with the number of pairs. The collator decodes
the records of one batch and opens and resizes their images when the data loader asks for it (in
worker processes when ``num_workers`` > 0), then hands ready examples to the packed collator or to
TRL's ``DataCollatorForVisionPreference`` extended with videos and rejected images
(``nbtools.packing.VisionPreferenceCollator``).

Pairs longer than ``max_context_length`` are dropped (with their line numbers) or stop the
run, per ``too_long``; kept pairs are never truncated, so image tokens are never cut.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any, Optional

from nbtools.config import RunConfig
from nbtools.errors import UserError
from nbtools.problems import Problem

LENGTH_FIELDS = ("prompt+chosen", "prompt+rejected")  # the validator's too-long findings
SHOW_LINES = 20  # line numbers listed in a message before "..."


class DataError(UserError, ValueError):
    """The data cannot be trained on as it is; the message lists each problem with its fix."""

    def __init__(self, message: str, problems: Optional[list[Problem]] = None):
        super().__init__(message)
        self.problems = list(problems or [])


@dataclass
class SplitData:
    name: str  # "train" | "validation"
    file: str
    records: Any  # nbtools.data.RecordTable: the pairs to train on, in file order (memory-mapped)
    dropped_too_long: list[int] = field(default_factory=list)  # line numbers
    warnings: list[Problem] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    # {"references", "files_digest"} of the local media the file's valid rows name (ValidationReport.
    # media_fingerprint): a resume compares it, since the data file's sha256 does not cover the pictures.
    # A validation_split holds out part of one file, so both splits carry that file's fingerprint.
    media_fingerprint: Optional[dict] = None


@dataclass
class PreparedData:
    train: SplitData
    validation: Optional[SplitData]
    validation_from_split: bool
    messages: list[str]  # what the run should tell the user about the data

    @property
    def longest_pair(self) -> int:
        splits = [self.train] + ([self.validation] if self.validation else [])
        return max((int(s.records.column("length").max()) for s in splits if len(s.records)), default=0)

    def to_dict(self) -> dict:
        """The ``data`` section of run.json."""
        def split(s: Optional[SplitData]) -> Optional[dict]:
            if s is None:
                return None
            return {"file": s.file, "pairs": len(s.records), "dropped_too_long": len(s.dropped_too_long),
                    "dropped_lines": s.dropped_too_long, "warnings": len(s.warnings), "stats": s.stats,
                    "media_fingerprint": s.media_fingerprint}
        out = {"train": split(self.train), "validation": split(self.validation),
               "validation_from_split": self.validation_from_split, "longest_pair_tokens": self.longest_pair}
        if self.validation_from_split and self.validation is not None:
            out["validation"]["lines"] = self.validation.records.lines.tolist()  # evaluation reuses them
        return out


def _lines_text(lines: list[int]) -> str:
    shown = ", ".join(map(str, lines[:SHOW_LINES]))
    return shown + (f", ... ({len(lines) - SHOW_LINES} more)" if len(lines) > SHOW_LINES else "")


def _problems_text(problems: list[Problem], limit: int = 30) -> str:
    text = "\n".join("  " + p.format() for p in problems[:limit])
    if len(problems) > limit:
        text += f"\n  ... and {len(problems) - limit} more (run `python -m nbtools validate` for the full list)"
    return text


def _load_split(name: str, path, config: RunConfig, family: str, validation_file, messages: list[str],
                style_told: bool = False) -> SplitData:
    """``style_told``: the answers' style against the model was already reported for the other file."""
    from nbtools.data import UnreadableFile, validate_dataset
    from nbtools.data.validate import ANSWER_STYLE_FIELD
    from nbtools.video import VideoSettings

    try:
        report = validate_dataset(path, max_pixels=config.max_pixels, max_context_length=config.max_context_length,
                                  model=config.model, family=family, validation_file=validation_file,
                                  video=VideoSettings.from_config(config), columns=config.columns or None,
                                  progress=True, held_out=name != "train")
    except UnreadableFile as exc:
        field_name = "train_file" if name == "train" else "validation_file"
        raise DataError(f"{field_name}: {exc} (fix: check the path in the config)") from None

    errors = [p for p in report.problems if p.severity == "error"]
    too_long = [p for p in errors if p.field in LENGTH_FIELDS]
    too_long_lines = sorted({p.line for p in too_long})
    other_errors = [p for p in errors if p.field not in LENGTH_FIELDS]
    if other_errors:
        raise DataError(
            f"{path}: {len(other_errors)} problem(s) must be fixed before training:\n{_problems_text(other_errors)}",
            other_errors)
    if too_long and config.too_long == "error":
        raise DataError(
            f"{path}: {len(too_long_lines)} pair(s) are longer than max_context_length={config.max_context_length} "
            f"(too_long: error):\n{_problems_text(too_long)}\n(fix: raise max_context_length, lower max_pixels, "
            "or set too_long: drop to train without them)", too_long)
    if too_long_lines:
        messages.append(
            f"{path}: dropped {len(too_long_lines)} pair(s) longer than max_context_length="
            f"{config.max_context_length} tokens (lines {_lines_text(too_long_lines)}); raise max_context_length "
            "or lower max_pixels to keep them.")
    warnings = [p for p in report.problems if p.severity == "warning"]
    # the answers against the model's kind (Instruct / Thinking): a line of its own, said once per run
    style = [p for p in warnings if p.line is None and p.field == ANSWER_STYLE_FIELD]
    others = [p for p in warnings if p not in style]
    if others:
        messages.append(f"{path}: {len(others)} warning(s), training goes on:\n{_problems_text(others, 5)}")
    if style and not style_told:
        messages.append(style[0].format())
    if report.schema:
        messages.append(f"{report.file}: schema {report.schema}; {report.disk_note}".rstrip("; "))
    kept = report.records.without_lines(too_long_lines)
    if not len(report.records):
        raise DataError(f"{path}: the file holds no preference pairs (fix: write one JSON object per line, see "
                        "the data format in the README)", [])
    if not len(kept):
        raise DataError(f"{path}: no pairs left to train on after dropping {len(too_long_lines)} too-long pair(s) "
                        f"(fix: raise max_context_length above the lengths reported, or lower max_pixels)")
    return SplitData(name, report.file, kept, too_long_lines, warnings, report.stats, report.media_fingerprint)


def prepare_data(config: RunConfig, family: str) -> PreparedData:
    """Validate and load the training (and validation) pairs per the config; raise DataError to stop."""
    if not config.train_file:
        raise DataError("train_file: no training file given (fix: set train_file to a JSONL file of pairs)")
    messages: list[str] = []
    train = _load_split("train", config.train_file, config, family, config.validation_file, messages)
    validation = None
    from_split = False
    if config.validation_file:
        from nbtools.data.validate import ANSWER_STYLE_FIELD

        told = any(p.line is None and p.field == ANSWER_STYLE_FIELD for p in train.warnings)
        validation = _load_split("validation", config.validation_file, config, family, None, messages, told)
    elif config.validation_split > 0:
        # A seeded shuffle so the same config always holds out the same pairs (resume relies on it).
        order = list(range(len(train.records)))
        random.Random(config.seed).shuffle(order)
        n_val = max(1, round(len(order) * config.validation_split))
        if len(order) - n_val < 1:
            raise DataError(f"validation_split: {len(order)} pair(s) are too few to hold out "
                            f"{config.validation_split:.0%} (fix: add pairs, give a validation_file, or set "
                            "validation_split: 0)")
        held = sorted(order[:n_val])  # file order within each split, as before
        kept = sorted(order[n_val:])
        val_records, train_records = train.records.select(held), train.records.select(kept)
        validation = SplitData("validation", train.file, val_records, stats={"pairs": n_val},
                               media_fingerprint=train.media_fingerprint)
        train = dataclasses.replace(train, records=train_records)
        from_split = True
        messages.append(f"validation: held out {n_val} of {len(order)} pairs of {train.file} "
                        f"(validation_split={config.validation_split}, seed {config.seed})")
    return PreparedData(train, validation, from_split, messages)


# --- the dataset TRL sees and the collator that fills in images ---------------------------------

def records_dataset(split: SplitData):
    """The ``datasets.Dataset`` TRL sees: the split's rows of the validator's Arrow table, memory-mapped.

    Its ``images`` column (paths or labels, not pixels) is what TRL recognises a vision dataset by."""
    return split.records.dataset()


def record_from_row(row: dict[str, Any]):
    from nbtools.data.table import decode_record

    return decode_record(row)


@dataclass
class LazyImageCollator:
    """Opens and resizes a batch's images (and decodes its videos) on demand, then runs the packed or unpacked collator."""

    processor: Any
    max_pixels: Optional[int]
    family: str
    video: Optional[Any] = None  # nbtools.video.VideoSettings (None: defaults) for rows with videos
    max_length: Optional[int] = None  # None: kept pairs all fit, nothing is ever truncated
    packed: bool = False  # nbtools.packing's collator: one [prompt, chosen, rejected] row per pair
    # mdpo_conditional: each pair with images gets an image-contrast pair, its crops seeded by this (the run seed)
    contrast_seed: Optional[int] = None

    def __post_init__(self):
        from nbtools.images import resize_geometry

        self.image_geometry = resize_geometry(self.processor, self.family)  # images shrunk to sizes it keeps
        if self.packed:
            from nbtools.packing import PackedPreferenceCollator

            self.inner = PackedPreferenceCollator(self.processor, max_length=self.max_length)
        else:
            from nbtools.packing import VisionPreferenceCollator

            self.inner = VisionPreferenceCollator(processor=self.processor, max_length=self.max_length)

    def examples(self, rows: list[dict[str, Any]]) -> list[dict]:
        from nbtools.data import to_training_example

        examples = [to_training_example(record_from_row(row), self.max_pixels, self.family, video=self.video,
                                        image_geometry=self.image_geometry) for row in rows]
        if self.contrast_seed is not None:  # the reference precompute sees (and caches) these pairs too
            from nbtools.packing.contrast import with_auxiliary

            examples = with_auxiliary(examples, self.contrast_seed)
        return examples

    def __call__(self, rows: list[dict[str, Any]]) -> dict:
        examples = self.examples(rows)
        batch = self.inner(examples)
        if self.contrast_seed is not None:
            from nbtools.packing.contrast import AUXILIARY_ROWS, auxiliary_rows

            batch[AUXILIARY_ROWS] = auxiliary_rows(examples)
        return batch
