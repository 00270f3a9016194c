"""Evaluate a run: score held-out pairs with base and tuned, compare, write evaluation.json.

The held-out pairs are, in order of preference: the file the user names, the run's
``validation_file``, or the validation split training held out of ``train_file``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from nbtools.errors import UserError

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
from .run_model import RunModel, load_run_config, load_run_model


class EvaluationDataError(UserError, ValueError):
    """The held-out pairs cannot be used; the message names the file, line, field and fix."""


@dataclass
class HeldOutPairs:
    source: str  # what the pairs are, for people: a file, or "validation split of FILE"
    records: list  # PreferenceRecord, in file order
    skipped: list[dict] = field(default_factory=list)  # {"file", "line", "reason"}: valid but not scorable


def _existing(path: str, field_name: str) -> str:
    if not Path(path).expanduser().is_file():
        raise EvaluationDataError(
            f"{field_name}: {path}: no such file (fix: run from the folder training ran in, or pass the held-out "
            "pairs with --data FILE / data=...)"
        )
    return str(Path(path).expanduser())


def _load_valid(path: str):
    from nbtools.data import load_records
    from nbtools.problems import has_errors

    loaded = load_records(path)
    if has_errors(loaded.problems):
        errors = [p.format() for p in loaded.problems if p.severity == "error"]
        shown = "\n".join(errors[:10]) + (f"\n... and {len(errors) - 10} more" if len(errors) > 10 else "")
        raise EvaluationDataError(
            f"{path}: {len(errors)} problem(s) in the evaluation pairs; evaluating a silently reduced set would "
            f"mislead, so fix them first (`python -m nbtools validate {path}`):\n{shown}"
        )
    return loaded.records


def held_out_pairs(config, data: Optional[str] = None, run_record: Optional[dict] = None) -> HeldOutPairs:
    """The pairs to evaluate on (see the module docstring for the order).

    For a validation split, training recorded the held-out line numbers in run.json
    (``data.validation.lines``); the same lines are read back, so no pair the model
    trained on is ever evaluated.
    """
    if data is not None:
        path = _existing(str(data), "data")
        return _scorable(path, _load_valid(path))
    if config.validation_file:
        path = _existing(config.validation_file, "validation_file")
        return _scorable(path, _load_valid(path))
    validation = ((run_record or {}).get("data") or {}).get("validation") or {}
    if config.validation_split > 0 and config.train_file and validation.get("lines"):
        path = _existing(config.train_file, "train_file")
        lines = set(validation["lines"])
        records = [r for r in _load_valid(path) if r.line in lines]
        return _scorable(f"validation split ({config.validation_split:g}) of {path}", records)
    raise EvaluationDataError(
        "the run names no held-out pairs (no validation_file, and run.json lists no validation split lines) "
        "(fix: pass a file of pairs with --data FILE / data=...)"
    )


def _scorable(source: str, records: list) -> HeldOutPairs:
    """Pairs with videos or rejected_images are valid data but not scorable yet: listed, not dropped silently."""
    keep, skipped = [], []
    for record in records:
        if record.uses_unsupported_training_inputs:
            skipped.append({"file": record.file, "line": record.line,
                            "reason": "uses videos or rejected_images, which scoring does not support yet"})
        else:
            keep.append(record)
    if not keep:
        raise EvaluationDataError(f"{source}: no pair can be scored ({len(skipped)} skipped: videos or "
                                  "rejected_images) (fix: pass image or text pairs with --data FILE)")
    return HeldOutPairs(source, keep, skipped)


def _run_record(run_dir) -> dict:
    from nbtools.train.run_record import read_run

    try:
        return read_run(run_dir)
    except (OSError, ValueError):
        return {}


def _example(record, max_pixels, family) -> dict:
    from nbtools.data import to_training_example

    try:
        return to_training_example(record, max_pixels, family)
    except OSError as exc:  # loading does not open images; a missing or broken one shows up here
        raise EvaluationDataError(f"{record.file}:{record.line}: images: {exc} (fix: restore the image or "
                                  f"validate the file with `python -m nbtools validate {record.file}`)") from None


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
    pairs = held_out_pairs(config, data, _run_record(run_dir))  # bad data fails before a model loads
    run = run or load_run_model(run_dir)
    records = pairs.records[:max_pairs] if max_pairs else pairs.records
    examples = [_example(r, run.config.max_pixels, run.family) for r in records]
    base, tuned = score_base_and_tuned(run.model, run.processor, examples, batch_size=batch_size, progress=progress)
    evaluation = compare_models(base, tuned, run.config.beta, n_resamples=n_resamples, seed=seed)
    for row in evaluation.flipped:
        row.update(file=records[row["index"]].file, line=records[row["index"]].line)
    payload = evaluation_to_dict(
        evaluation,
        data=pairs.source,
        skipped=pairs.skipped,
        run_dir=str(run_dir),
        model=run.config.model,
        model_name=run.config.model_name,
        evaluated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        pairs={"lines": [r.line for r in records], "base": base.to_dict(), "tuned": tuned.to_dict()},
    )
    paths = {}
    if write:
        paths["evaluation"] = write_evaluation(run_dir, payload)
        paths["plot"] = run_dir / "plots" / PLOT_FILE
        plot_evaluation(payload, paths["plot"])
        paths["flipped"] = run_dir / FLIPPED_FILE
        paths["flipped"].write_text("<!doctype html><meta charset='utf-8'>" + flipped_pairs_html(evaluation.flipped, records))
    order = fixed_first(base, tuned)
    return EvaluationResult(payload, evaluation, [examples[i] for i in order], paths, order)


def scores_from_payload(payload: dict) -> tuple[PairLogProbs, PairLogProbs]:
    """The per-pair log-probs stored in evaluation.json (to recompute intervals without a model)."""
    return PairLogProbs.from_dict(payload["pairs"]["base"]), PairLogProbs.from_dict(payload["pairs"]["tuned"])
