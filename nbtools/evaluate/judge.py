"""Win rate of the tuned model's answers over the base model's, decided by a judge.

A judge is any callable ``judge(prompt, answer_a, answer_b) -> "a" | "b" | "tie"``: a
person's rule, a string match, or a call to a stronger model the user has. Answers are
shown to the judge in a seeded random order so a judge that favours the first answer
cannot favour one model.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from .metrics import CONFIDENCE, bootstrap_indices, bootstrap_mean

Judge = Callable[[str, str, str], str]
VERDICTS = ("a", "b", "tie")


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def similarity(answer: str, reference: str) -> float:
    """Word-level similarity in [0, 1] (difflib ratio over lower-cased words)."""
    return difflib.SequenceMatcher(a=_words(answer), b=_words(reference), autojunk=False).ratio()


def reference_score(answer: str, chosen: str, rejected: str) -> float:
    """How much closer ``answer`` is to the pair's chosen answer than to its rejected one (-1..1)."""
    return similarity(answer, chosen) - similarity(answer, rejected)


def reference_judge(chosen: str, rejected: str, tolerance: float = 1e-9) -> Judge:
    """A judge for one pair: the answer closer to ``chosen`` (than to ``rejected``) wins."""

    def judge(prompt: str, answer_a: str, answer_b: str) -> str:
        a, b = reference_score(answer_a, chosen, rejected), reference_score(answer_b, chosen, rejected)
        if abs(a - b) <= tolerance:
            return "tie"
        return "a" if a > b else "b"

    return judge


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


def judge_rows(rows: Sequence[dict], judge: Optional[Judge] = None, seed: int = 0) -> tuple[WinRate, list[str]]:
    """Judge the model lab's rows (``prompt``, ``base``, ``tuned``; ``chosen``/``rejected`` for the
    reference judge). Without ``judge`` the built-in reference judge is used per pair.

    Returns the win rate and each row's outcome for the tuned model.
    """
    rng = np.random.default_rng(seed)
    outcomes = []
    for i, row in enumerate(rows):
        if judge is None:
            if row.get("chosen") is None or row.get("rejected") is None:
                raise ValueError(f"row {i} has no chosen/rejected answers; the reference judge needs them "
                                 "(pass your own judge instead)")
            row_judge = reference_judge(row["chosen"], row["rejected"])
        else:
            row_judge = judge
        tuned_first = bool(rng.integers(2))
        a, b = (row["tuned"], row["base"]) if tuned_first else (row["base"], row["tuned"])
        verdict = row_judge(row["prompt"], a, b)
        if verdict not in VERDICTS:
            raise ValueError(f"the judge returned {verdict!r} for row {i}; a judge must return 'a', 'b' or 'tie'")
        if verdict == "tie":
            outcomes.append("tie")
        else:
            tuned_won = (verdict == "a") == tuned_first
            outcomes.append("win" if tuned_won else "loss")
    return win_rate(outcomes, seed=seed), outcomes
