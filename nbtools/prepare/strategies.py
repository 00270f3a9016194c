"""Turning a prompt's sampled answers into at most one pair per strategy.

Each strategy returns ``(Pair, "made")`` or ``(None, reason)``; the reason is counted in the
report, so every prompt that made no pair is accounted for:

* ``reference`` — chosen = the reference, rejected = the sample the judge scores lowest, only
  when that score says wrong (correct samples never become rejected; else ``agreement``); among
  equally low samples, the one worded most like the reference.
* ``ranking`` — chosen = the best sample, rejected = the worst, only when the scores are at
  least ``min_score_gap`` apart (else ``tie``).
* ``corrupted`` — rejected = the lowest-scored answer to the corrupted image, when judged wrong;
  chosen = the reference, or the best answer to the real image when it is judged right.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

from nbtools.data.rules import normalise_ws

REASONS = {
    "agreement": "no sample was judged wrong (the model agrees with the reference)",
    "tie": "best and worst sample scored within min_score_gap (or were the same text)",
    "no_reference": "the prompt has no reference answer",
    "not_judged": "the judge could not judge the prompt (returned None)",
    "no_correct_answer": "no reference, and no answer to the real image was judged right",
    "no_image": "the prompt has no image to corrupt",
    "identical": "chosen and rejected are the same text",
    "has_reference": "the prompt has a reference answer, so the reference strategy makes its pair (ranking serves "
                     "prompts without one; select ranking alone to rank every prompt)",
}


@dataclass
class Pair:
    """One preference pair, before it is written in the data format."""

    messages: list  # prompt messages (tags kept), without the answer
    images: list
    chosen: str
    rejected: str
    strategy: str
    source: str
    chosen_score: Optional[float] = None
    rejected_score: Optional[float] = None
    rejected_images: Optional[list] = None
    videos: list = field(default_factory=list)  # the prompt's videos, in <video> tag order


@dataclass
class Judged:
    """A prompt's answers and the judge's scores (None: not judged)."""

    row: object  # PromptRow
    answers: list
    scores: Optional[list]
    corrupted_images: list = field(default_factory=list)
    corrupted_answers: list = field(default_factory=list)
    corrupted_scores: Optional[list] = None


def _same(a: str, b: str) -> bool:
    return normalise_ws(a).lower() == normalise_ws(b).lower()


def _argmin(values: Sequence[float]) -> int:
    return min(range(len(values)), key=lambda i: (values[i], i))


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))


def _closest_of_the_worst(answers: Sequence[str], scores: Sequence[float], reference: str) -> int:
    """The lowest-scored answer; among equally low ones, the one worded most like the reference, so the
    pair differs in the mistake rather than in phrasing (a judge that only says wrong/right ties often)."""
    from nbtools.judges import similarity

    low = min(scores)
    return max((i for i, s in enumerate(scores) if s == low), key=lambda i: (similarity(answers[i], reference), -i))


def _pair(judged: Judged, strategy: str, chosen: str, rejected: str, chosen_score, rejected_score, **extra) -> Pair:
    row = judged.row
    return Pair(row.messages, list(row.images), chosen, rejected, strategy, row.source, chosen_score, rejected_score,
                videos=list(getattr(row, "videos", []) or []), **extra)


def reference_vs_sample(judged: Judged, wrong_below: float):
    reference = judged.row.reference
    if not reference:
        return None, "no_reference"
    if judged.scores is None:
        return None, "not_judged"
    worst = _closest_of_the_worst(judged.answers, judged.scores, reference)
    if judged.scores[worst] >= wrong_below:
        return None, "agreement"
    if _same(judged.answers[worst], reference):
        return None, "identical"
    return _pair(judged, "reference", reference, judged.answers[worst], None, judged.scores[worst]), "made"


def judged_ranking(judged: Judged, min_score_gap: float):
    if judged.scores is None:
        return None, "not_judged"
    best, worst = _argmax(judged.scores), _argmin(judged.scores)
    gap = judged.scores[best] - judged.scores[worst]
    if gap < min_score_gap or _same(judged.answers[best], judged.answers[worst]):
        return None, "tie"
    return _pair(judged, "ranking", judged.answers[best], judged.answers[worst],
                 judged.scores[best], judged.scores[worst]), "made"


def corrupted_input(judged: Judged, wrong_below: float, contrast: str = "text"):
    if not judged.row.images:
        return None, "no_image"
    if judged.corrupted_scores is None:
        return None, "not_judged"
    chosen, chosen_score = judged.row.reference, None
    if not chosen:
        if judged.scores is None:
            return None, "not_judged"
        best = _argmax(judged.scores)
        if judged.scores[best] < wrong_below:
            return None, "no_correct_answer"
        chosen, chosen_score = judged.answers[best], judged.scores[best]
    worst = _argmin(judged.corrupted_scores)
    if judged.corrupted_scores[worst] >= wrong_below:
        return None, "agreement"
    rejected = judged.corrupted_answers[worst]
    if _same(chosen, rejected):
        return None, "identical"
    extra = {"rejected_images": list(judged.corrupted_images)} if contrast == "image" else {}
    return _pair(judged, "corrupted", chosen, rejected, chosen_score, judged.corrupted_scores[worst], **extra), "made"


def make_pairs(judged: Judged, strategies: Sequence[str], *, wrong_below: float, min_score_gap: float,
               contrast: str = "text") -> list[tuple[str, Optional[Pair], str]]:
    """``(strategy, pair or None, reason)`` for each selected strategy that applies to this prompt.

    Ranking serves prompts without a reference when ``reference`` is selected too (a prompt
    with a reference gets its pair from the reference, and ranking's outcome is ``has_reference``);
    alone, it serves every prompt.
    """
    results = []
    for strategy in strategies:
        if strategy == "reference":
            results.append((strategy, *reference_vs_sample(judged, wrong_below)))
        elif strategy == "ranking":
            if judged.row.reference and "reference" in strategies:
                results.append((strategy, None, "has_reference"))  # counted, so the report can say why
                continue
            results.append((strategy, *judged_ranking(judged, min_score_gap)))
        elif strategy == "corrupted":
            results.append((strategy, *corrupted_input(judged, wrong_below, contrast)))
    return results
