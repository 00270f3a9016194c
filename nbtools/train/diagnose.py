"""The advice users read off loss curves, computed from the logged metrics.

both losses falling            -> learning well
train falling, validation up   -> overfitting (use the best checkpoint's step)
both flat or rising            -> review data or config
Shown while training (at each evaluation) and after it, and stored in run.json, with the training-health
alarms the loss curves hide (``alarms``: likelihood displacement, diverging rewards, saturating margins,
answer length; see nbtools.train.health).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

from nbtools.train.health import health_alarms
from nbtools.train.history import evaluation_rows

# A change smaller than this fraction of the starting loss counts as flat.
FLAT_TOLERANCE = 0.02
# Validation is "rising" when its latest value is this fraction above its best.
RISE_TOLERANCE = 0.02


@dataclass
class Diagnosis:
    verdict: str  # learning | overfitting | not_learning | too_early | no_validation
    message: str
    best_step: Optional[int] = None
    best_eval_loss: Optional[float] = None
    train_change: Optional[float] = None  # relative change of the training loss, start -> end (negative = falling)
    eval_change: Optional[float] = None  # relative change of the validation loss, first -> last
    alarms: list = field(default_factory=list)  # nbtools.train.health.Alarm.to_dict() of each alarm raised, by step

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return self.message


def _relative_change(values: list[float]) -> Optional[float]:
    """Mean of the last third vs mean of the first third, relative to the first (robust to noise)."""
    if len(values) < 2:
        return None
    k = max(1, len(values) // 3)
    start = sum(values[:k]) / k
    end = sum(values[-k:]) / k
    return (end - start) / max(abs(start), 1e-8)


def diagnose(history: list[dict], beta: Optional[float] = None) -> Diagnosis:
    """Read ``history`` (metrics.jsonl rows: ``loss`` / ``eval_loss`` with ``step``) and say how it goes.

    ``beta`` (the run's DPO beta) lets the health alarms read log-probability shifts from the rewards."""
    diagnosis = _from_losses(history)
    diagnosis.alarms = [alarm.to_dict() for alarm in health_alarms(history, beta)]
    return diagnosis


def _from_losses(history: list[dict]) -> Diagnosis:
    train = [(h["step"], h["loss"]) for h in history if "loss" in h and h.get("loss") is not None]
    evals = [(h["step"], h["eval_loss"]) for h in evaluation_rows(history)]
    train_change = _relative_change([v for _, v in train])
    if train_change is None:
        return Diagnosis("too_early", "Too early to tell: fewer than two training-loss points so far.")
    train_falling = train_change < -FLAT_TOLERANCE
    if not evals:
        trend = "falling" if train_falling else "flat or rising"
        return Diagnosis(
            "no_validation", f"Training loss is {trend} ({train_change:+.0%}); there is no validation set, so "
            "overfitting cannot be seen. Add validation_file or validation_split.", train_change=train_change,
        )
    best_step, best_loss = min(evals, key=lambda e: e[1])
    first_eval, last_eval = evals[0][1], evals[-1][1]
    eval_change = (last_eval - first_eval) / max(abs(first_eval), 1e-8)
    base = dict(best_step=best_step, best_eval_loss=best_loss, train_change=train_change, eval_change=eval_change)
    if len(evals) < 2:
        return Diagnosis("too_early", f"Training loss {train_change:+.0%}; one evaluation so far (validation "
                         f"loss {last_eval:.4f}). Wait for the next evaluation.", **base)
    eval_rising_from_best = last_eval > best_loss + RISE_TOLERANCE * max(abs(best_loss), 1e-8)
    if train_falling and eval_rising_from_best and best_step != evals[-1][0]:
        return Diagnosis(
            "overfitting", f"Overfitting: training loss keeps falling ({train_change:+.0%}) while validation loss "
            f"rose from {best_loss:.4f} at step {best_step} to {last_eval:.4f}. Use the checkpoint of step "
            f"{best_step} (load_best_model_at_end does this), stop earlier, or add data / lower the learning rate.",
            **base,
        )
    if train_falling and eval_change < -FLAT_TOLERANCE:
        return Diagnosis(
            "learning", f"Learning well: training loss {train_change:+.0%} and validation loss {eval_change:+.0%} "
            f"are both falling (best validation loss {best_loss:.4f} at step {best_step}).", **base,
        )
    if train_falling:
        return Diagnosis(
            "learning", f"Training loss is falling ({train_change:+.0%}) but validation loss is flat "
            f"({eval_change:+.0%}): the model may be memorising. Check that the validation pairs resemble the "
            "training pairs, or train longer.", **base,
        )
    return Diagnosis(
        "not_learning", f"Not learning: training loss {train_change:+.0%} and validation loss {eval_change:+.0%} "
        "are flat or rising. Review the data (are chosen and rejected really different? do answers depend on "
        "the images?) or the config (raise learning_rate, check beta, train longer).", **base,
    )
