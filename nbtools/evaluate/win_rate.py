"""Win rate of the tuned model's answers over the base model's, decided by a judge (:mod:`nbtools.judges`).

Per row, :func:`nbtools.judges.prefer` asks the judge which of the two answers it prefers. Answers are shown
to the judge in a seeded random order so a judge that favours the first answer cannot favour one model.
Without a judge, each row's own :class:`~nbtools.judges.PairReferenceJudge` decides (closer to the pair's
chosen answer than to its rejected one). A pairwise function ``fn(prompt, a, b) -> "a" | "b" | "tie"`` is
passed as ``PairwiseJudge(fn)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from nbtools.judges import JudgeError, PairReferenceJudge, ScoreJudge, prefer, require_judge

from .metrics import CONFIDENCE, bootstrap_indices, bootstrap_mean


@dataclass(frozen=True)
class WinRate:
    """Tuned vs base: wins, losses, ties and the win rate (a tie counts half) with its interval."""

    wins: int
    losses: int
    ties: int
    rate: float
    low: float
    high: float

    @property
    def n(self) -> int:
        return self.wins + self.losses + self.ties

    def to_dict(self) -> dict:
        return {"wins": self.wins, "losses": self.losses, "ties": self.ties, "n": self.n,
                "win_rate": self.rate, "ci95": [self.low, self.high], "confidence": CONFIDENCE}


def win_rate(outcomes: Sequence[str], n_resamples: int = 2000, seed: int = 0) -> WinRate:
    """From per-item outcomes ``"win" | "loss" | "tie"`` (tuned's view): rate and bootstrap CI."""
    unknown = sorted(set(outcomes) - {"win", "loss", "tie"})
    if unknown:
        raise ValueError(f"outcomes must be 'win', 'loss' or 'tie'; got {unknown}")
    if not outcomes:
        raise ValueError("no judged answers: the win rate needs at least one")
    points = np.array([{"win": 1.0, "tie": 0.5, "loss": 0.0}[o] for o in outcomes])
    estimate = bootstrap_mean(points, bootstrap_indices(len(points), n_resamples, seed))
    return WinRate(outcomes.count("win"), outcomes.count("loss"), outcomes.count("tie"),
                   estimate.value, estimate.low, estimate.high)


def _row_judge(row: dict, i: int) -> ScoreJudge:
    if row.get("chosen") is None or row.get("rejected") is None:
        raise ValueError(f"row {i} has no chosen/rejected answers; the reference judge needs them "
                         "(pass your own judge instead)")
    return PairReferenceJudge(row["chosen"], row["rejected"])


def judge_rows(rows: Sequence[dict], judge: Optional[ScoreJudge] = None, seed: int = 0) -> tuple[WinRate, list[str]]:
    """Judge the model lab's rows (``prompt``, ``base``, ``tuned``; ``images`` and ``chosen`` (the reference)
    when they have them; ``chosen``/``rejected`` for the built-in judge). ``judge``: any judge of
    :mod:`nbtools.judges`, e.g. ``VocabularyJudge([...])`` or ``PairwiseJudge(my_pairwise_function)``.

    Returns the win rate and each row's outcome for the tuned model.
    """
    if judge is not None:
        require_judge(judge, "judge_rows(judge=...)")
    rng = np.random.default_rng(seed)
    outcomes = []
    for i, row in enumerate(rows):
        row_judge = judge if judge is not None else _row_judge(row, i)
        tuned_first = bool(rng.integers(2))
        a, b = (row["tuned"], row["base"]) if tuned_first else (row["base"], row["tuned"])
        try:
            verdict = prefer(row_judge, row["prompt"], row.get("images") or [], a, b, reference=row.get("chosen"))
        except JudgeError as exc:
            raise JudgeError(f"row {i}: {exc}") from None
        if verdict == "tie":
            outcomes.append("tie")
        else:
            tuned_won = (verdict == "a") == tuned_first
            outcomes.append("win" if tuned_won else "loss")
    return win_rate(outcomes, seed=seed), outcomes
