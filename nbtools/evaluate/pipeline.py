"""Evaluate a run: score held-out pairs with base and tuned, compare, write evaluation.json.

The held-out pairs are, in order of preference: the file the user names, the run's
``validation_file``, or the validation split training held out of ``train_file``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from nbtools.errors import UserError
from nbtools.images import resize_geometry
from nbtools.video import VideoSettings

from .logprobs import PairLogProbs, score_base_and_tuned
from .metrics import PreferenceEvaluation, compare_models
from .report import (
    FLIPPED_FILE,
    PLOT_FILE,
    evaluation_to_dict,
    flipped_pairs_html,
    plot_evaluation,
    table_html,
    write_evaluation,
)
from .run_model import RunModel, adapter_dir, load_run_config, load_run_model, read_run_record


class EvaluationDataError(UserError, ValueError):
    """The held-out pairs cannot be used; the message names the file, line, field and fix."""


# The validator's findings for a pair over max_context_length (as in nbtools.train.dataset).
LENGTH_FIELDS = ("prompt+chosen", "prompt+rejected")
SHOW_PROBLEMS = 10


@dataclass
class HeldOutPairs:
    source: str  # what the pairs are, for people: a file, or "validation split of FILE"
    records: list  # PreferenceRecord, in file order
    left_out: list[dict] = field(default_factory=list)  # {"file", "line", "reason"}: valid but not scorable

    def left_out_summary(self) -> dict:
        """What evaluation.json records under ``left_out``."""
        return {"count": len(self.left_out), "pairs": list(self.left_out)}


def _existing(path: str, field_name: str) -> str:
    """``path`` when it names data (a file, Parquet shards, a saved dataset or a Hub id), else one clear error."""
    from nbtools.data.sources import is_table_source

    expanded = Path(path).expanduser()
    if expanded.is_file() or (expanded.exists() and is_table_source(str(expanded))):
        return str(expanded)
    if not expanded.exists() and is_table_source(path):  # a glob or a Hub id
        return path
    raise EvaluationDataError(
        f"{field_name}: {path}: no such file (fix: run from the folder training ran in, or pass the held-out "
        "pairs with --data FILE / data=...)"
    )


def _checked(path: str, config, lines: Optional[set] = None) -> tuple[list, list[dict]]:
    """The pairs of ``path`` (only ``lines`` of it, for a validation split) that pass the checks training
    applies, and the ones left out with why.

    The same validation as training, with the run's model, ``max_pixels``, video settings and
    ``max_context_length``:
    an error in the data (schema, a missing, corrupt or decompression-bomb image, a video that is not
    one) stops here with every problem listed, as evaluating a silently reduced set would mislead; a
    pair over ``max_context_length`` is left out and listed (``too_long: drop``) or stops the
    evaluation (``too_long: error``), exactly as training treated it.
    """
    from nbtools.data import UnreadableFile, validate_dataset

    try:  # videos are counted as the run samples them (fps, max_frames, video_max_pixels)
        report = validate_dataset(path, max_pixels=config.max_pixels, max_context_length=config.max_context_length,
                                  model=config.model, video=VideoSettings.from_config(config),
                                  columns=getattr(config, "columns", "") or None, held_out=True)
    except UnreadableFile as exc:
        raise EvaluationDataError(f"{exc} (fix: check the path, or pass a JSONL or Parquet file of pairs)") from None
    records = report.records if lines is None else [r for r in report.records if r.line in lines]
    wanted = {r.line for r in records}
    errors = [p for p in report.problems
              if p.severity == "error" and (lines is None or p.line is None or p.line in wanted)]
    too_long = [p for p in errors if p.field in LENGTH_FIELDS]
    others = [p for p in errors if p.field not in LENGTH_FIELDS]
    long_pairs: dict[int, str] = {}
    for problem in too_long:  # the first finding per line: prompt + chosen, else prompt + rejected
        long_pairs.setdefault(problem.line, problem.message.split(";")[0])
    if others:
        raise EvaluationDataError(
            f"{path}: {len(others)} problem(s) in the evaluation pairs; evaluating a silently reduced set would "
            f"mislead, so fix them first (`python -m nbtools validate {shlex.quote(path)}`):\n{_listing(others)}")
    if too_long and config.too_long == "error":
        raise EvaluationDataError(
            f"{path}: {len(long_pairs)} pair(s) longer than max_context_length={config.max_context_length}, and the "
            "run says too_long: error (fix: raise max_context_length or lower max_pixels in the run's config.yaml, "
            f"or remove those pairs):\n{_listing(too_long)}")
    left_out = [{"file": path, "line": line, "reason": f"too long: {message}"}
                for line, message in sorted(long_pairs.items())]
    return [r for r in records if r.line not in long_pairs], left_out


def _listing(problems: list) -> str:
    shown = [p.format() for p in problems]
    more = len(shown) - SHOW_PROBLEMS
    return "\n".join(shown[:SHOW_PROBLEMS]) + (f"\n... and {more} more" if more > 0 else "")


def held_out_pairs(config, data: Optional[str] = None, run_record: Optional[dict] = None) -> HeldOutPairs:
    """The pairs to evaluate on (see the module docstring for the order), checked as training checks
    them (see :func:`_checked`); ``left_out`` lists each valid pair that cannot be scored, and why.

    For a validation split, training recorded the held-out line numbers in run.json
    (``data.validation.lines``); the same lines are read back, so no pair the model
    trained on is ever evaluated.
    """
    if data is not None:
        path = _existing(str(data), "data")
        return _scorable(path, *_checked(path, config))
    if config.validation_file:
        path = _existing(config.validation_file, "validation_file")
        return _scorable(path, *_checked(path, config))
    validation = ((run_record or {}).get("data") or {}).get("validation") or {}
    if config.validation_split > 0 and config.train_file and validation.get("lines"):
        path = _existing(config.train_file, "train_file")
        records, left_out = _checked(path, config, lines=set(validation["lines"]))
        return _scorable(f"validation split ({config.validation_split:g}) of {path}", records, left_out)
    raise EvaluationDataError(
        "the run names no held-out pairs (no validation_file, and run.json lists no validation split lines) "
        "(fix: pass a file of pairs with --data FILE / data=...)"
    )


def _scorable(source: str, records: list, left_out: list[dict]) -> HeldOutPairs:
    """The pairs to score; stops with one message when every pair was left out (nothing to compare)."""
    left_out = sorted(left_out, key=lambda item: item["line"])
    if not records:
        reasons = sorted({item["reason"].split(":")[0] for item in left_out})
        raise EvaluationDataError(f"{source}: no pair can be scored ({len(left_out)} left out: {'; '.join(reasons)}) "
                                  "(fix: pass pairs that fit the run's max_context_length with --data FILE, or raise "
                                  "max_context_length)")
    return HeldOutPairs(source, list(records), left_out)


def _example(record, max_pixels, family, video=None, image_geometry=None) -> dict:
    """The record as training saw it: images at ``max_pixels``, videos sampled with the run's ``video``
    settings (fps, max_frames, video_max_pixels), rejected_images for an image-contrast pair."""
    from nbtools.data import to_training_example

    from PIL import Image

    try:
        return to_training_example(record, max_pixels, family, video=video, image_geometry=image_geometry)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:  # a file changed or broke since it was checked
        media = "videos" if record.videos else "images"
        raise EvaluationDataError(f"{record.file}:{record.line}: {media}: {exc} (fix: restore the file or "
                                  f"validate the file with `python -m nbtools validate {shlex.quote(record.file)}`)") from None


@dataclass(repr=False)  # the payload holds per-pair log-probs: too long for a notebook's text output
class EvaluationResult:
    payload: dict  # what evaluation.json holds
    evaluation: PreferenceEvaluation
    # The scored examples (images opened) for the lab and the side by side, the pairs the tuned model
    # fixed first (see fixed_first); ``order[i]`` is the position of ``examples[i]`` in the data.
    examples: list
    paths: dict  # written files: evaluation, plot, flipped
    order: list = field(default_factory=list)

    def _repr_html_(self) -> str:
        return table_html(self.payload)

    def __repr__(self) -> str:
        return f"<EvaluationResult n_pairs={self.payload.get('n_pairs')} files={sorted(self.paths)}>"


def fixed_first(base: PairLogProbs, tuned: PairLogProbs) -> list[int]:
    """Pair indices, those the tuned model fixed first, then the rest, then those it broke.

    Fixed = the base model preferred the rejected answer and the tuned model prefers the chosen
    one: the pairs that show what training changed, so a side by side should start with them.
    Within each group the data order is kept.
    """
    base_right = base.chosen > base.rejected
    tuned_right = tuned.chosen > tuned.rejected
    rank = [0 if (t and not b) else 2 if (b and not t) else 1 for b, t in zip(base_right, tuned_right)]
    return sorted(range(len(rank)), key=lambda i: (rank[i], i))


def evaluate_run(
    run_dir,
    data: Optional[str] = None,
    *,
    run: Optional[RunModel] = None,
    batch_size: int = 4,
    n_resamples: int = 2000,
    seed: int = 0,
    max_pairs: Optional[int] = None,
    progress: bool = True,
    write: bool = True,
) -> EvaluationResult:
    """Compare base and tuned on held-out pairs; write evaluation.json, the plot and flipped pairs.

    ``run`` reuses an already loaded :class:`RunModel` (the notebook keeps one for the lab).
    """
    run_dir = Path(run_dir)
    config = run.config if run else load_run_config(run_dir)
    if run is None:
        adapter_dir(run_dir)  # a missing or damaged adapter is refused before the data is read
    # a missing or unreadable run.json is refused: its validation lines say which pairs were held out
    pairs = held_out_pairs(config, data, read_run_record(run_dir))  # bad data fails before a model loads
    run = run or load_run_model(run_dir)
    records = pairs.records[:max_pairs] if max_pairs else pairs.records
    video = VideoSettings.from_config(run.config)
    geo = resize_geometry(run.processor, run.family)  # as the training collator shrank them
    examples = [_example(r, run.config.max_pixels, run.family, video, geo) for r in records]
    base, tuned = score_base_and_tuned(run.model, run.processor, examples, batch_size=batch_size, progress=progress)
    evaluation = compare_models(base, tuned, run.config.beta, n_resamples=n_resamples, seed=seed)
    for row in evaluation.flipped:
        row.update(file=records[row["index"]].file, line=records[row["index"]].line)
    payload = evaluation_to_dict(
        evaluation,
        data=pairs.source,
        left_out=pairs.left_out_summary(),
        run_dir=str(run_dir),
        model=run.config.model,
        model_name=run.config.model_name,
        evaluated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        pairs={"lines": [r.line for r in records], "base": base.to_dict(), "tuned": tuned.to_dict()},
    )
    paths = {}
    if write:
        from nbtools import atomic

        paths["evaluation"] = write_evaluation(run_dir, payload)
        paths["plot"] = run_dir / "plots" / PLOT_FILE
        plot_evaluation(payload, paths["plot"])
        paths["flipped"] = run_dir / FLIPPED_FILE
        atomic.write_text(paths["flipped"], "<!doctype html><meta charset='utf-8'>"
                          + flipped_pairs_html(evaluation.flipped, records, video=video, family=run.family))
    order = fixed_first(base, tuned)
    return EvaluationResult(payload, evaluation, [examples[i] for i in order], paths, order)
