"""The judge interface (see the package docstring): checking what a judge returns, what identifies a judge in
the score cache, and pairwise judging as a use of a judge.

Scores are cached (preparation's ``OUTPUT/judgments.jsonl``) under :func:`judge_fingerprint`: a judge's own
``fingerprint()`` when it has one, else its code (the function's or class's source) and its repr. A judge whose
verdicts depend on something neither shows (a file it reads, a global it captures) should define
``fingerprint()``, or delete the cache when that changes.
"""

from __future__ import annotations

import hashlib
import inspect
import math
from typing import Callable, Optional, Sequence

import numpy as np

from nbtools.errors import UserError

ScoreJudge = Callable[..., Optional[list]]
VERDICTS = ("a", "b", "tie")
TIE_TOLERANCE = 1e-9  # scores closer than this are a tie


class JudgeError(UserError, ValueError):
    """A judge returned something other than one score in [0, 1] per answer (or a pairwise verdict)."""


def _name(judge) -> str:
    return getattr(judge, "__name__", None) or type(judge).__name__


def require_judge(judge, where: str):
    """``judge`` when it can be called as a judge; a TypeError that says what a judge is otherwise (a pairwise
    function passed as it is being the usual mistake)."""
    shape = ("a judge is called as judge(prompt, images, answers, reference=None) and returns one score in [0, 1] "
             "per answer (or None)")
    if not callable(judge):
        raise TypeError(f"{where}: {shape}; got {type(judge).__name__}")
    try:
        signature = inspect.signature(judge)
    except (TypeError, ValueError):  # built in: its calls will tell
        return judge
    try:
        signature.bind("prompt", [], [], reference=None)
        return judge
    except TypeError:
        pass
    name = _name(judge)
    try:
        signature.bind("prompt", "answer a", "answer b")
        hint = (f"{name}{signature} looks like a pairwise judge fn(prompt, answer_a, answer_b) -> 'a' | 'b' | 'tie' "
                f"(fix: pass PairwiseJudge({name}), from nbtools.judges; a scoring judge also takes reference=None)")
    except TypeError:
        hint = f"{name} takes {signature}"
    raise TypeError(f"{where}: {shape}; {hint}")


def run_judge(judge: ScoreJudge, prompt: str, images, answers: Sequence[str], reference=None) -> Optional[list]:
    """Call ``judge`` and check what it returns: None, or one finite score in [0, 1] per answer."""
    scores = judge(prompt, images, list(answers), reference=reference)
    if scores is None:
        return None
    if isinstance(scores, str):
        raise JudgeError(f"the judge {judge!r} returned {scores!r}, a verdict, not scores (fix: a pairwise judge "
                         f"fn(prompt, answer_a, answer_b) is passed as PairwiseJudge(fn), from nbtools.judges)")
    scores = list(scores)
    if len(scores) != len(answers) or not all(isinstance(s, (int, float)) and math.isfinite(s) and 0 <= s <= 1
                                              for s in scores):
        raise JudgeError(f"the judge {judge!r} returned {scores!r} for {len(answers)} answer(s); a judge must "
                         "return one score in [0, 1] per answer (or None when it cannot judge the prompt)")
    return [float(s) for s in scores]


# --------------------------------------------------------------------------- pairwise judging

def prefer(judge: ScoreJudge, prompt: str, images, answer_a: str, answer_b: str, reference=None) -> str:
    """Which of two answers ``judge`` prefers: ``"a"``, ``"b"`` or ``"tie"`` (scores within 1e-9).

    A :class:`PairwiseJudge` is asked once, with the answers in this order; any other judge scores both.
    A judge that cannot judge the prompt (None) is a :class:`JudgeError`.
    """
    compare = getattr(judge, "compare", None)
    if callable(compare):
        return compare(prompt, answer_a, answer_b)
    scores = run_judge(judge, prompt, images, [answer_a, answer_b], reference)
    if scores is None:
        raise JudgeError(f"the judge {judge!r} cannot judge this prompt (it returned None) (fix: give it what it "
                         "needs, e.g. a reference answer, or use another judge)")
    a, b = scores
    if abs(a - b) <= TIE_TOLERANCE:
        return "tie"
    return "a" if a > b else "b"


class PairwiseJudge:
    """A pairwise function ``fn(prompt, answer_a, answer_b) -> "a" | "b" | "tie"`` as a judge.

    Scoring is a round robin: each answer meets every other one (and the reference, when there is one)
    in a seeded random order; its score is its share of wins, a tie counting half. :func:`prefer` (the
    evaluation's win rate) asks ``fn`` once per pair instead, in the order it was given.
    """

    needs_reference = False

    def __init__(self, fn: Callable[[str, str, str], str], seed: int = 0):
        if not callable(fn):
            raise TypeError(f"PairwiseJudge takes a function fn(prompt, answer_a, answer_b) -> 'a' | 'b' | 'tie', "
                            f"got {type(fn).__name__}")
        self.fn = fn
        self.seed = seed

    def compare(self, prompt: str, answer_a: str, answer_b: str) -> str:
        """``fn``'s verdict, checked."""
        verdict = self.fn(prompt, answer_a, answer_b)
        if verdict not in VERDICTS:
            raise JudgeError(f"the pairwise judge {_name(self.fn)} returned {verdict!r}; it must return 'a', 'b' "
                             "or 'tie'")
        return verdict

    def __call__(self, prompt, images, answers, reference=None):
        contestants = list(answers) + ([reference] if reference else [])
        if len(contestants) < 2:
            return [0.5 for _ in answers]
        rng = np.random.default_rng(self.seed)
        points = [0.0] * len(contestants)
        for i in range(len(contestants)):
            for j in range(i + 1, len(contestants)):
                first, second = (i, j) if rng.integers(2) else (j, i)
                verdict = self.compare(prompt, contestants[first], contestants[second])
                if verdict == "tie":
                    points[i] += 0.5
                    points[j] += 0.5
                else:
                    points[first if verdict == "a" else second] += 1.0
        return [p / (len(contestants) - 1) for p in points[: len(answers)]]

    def fingerprint(self) -> str:
        return f"{code_identity(self, with_repr=False)}:seed={self.seed}:{judge_fingerprint(self.fn)}"

    def __repr__(self):
        return f"PairwiseJudge({self.fn!r})"


# --------------------------------------------------------------------------- what identifies a judge

def code_identity(obj, with_repr: bool = True) -> str:
    """A function's or an object's class's name and a digest of its source, plus its repr when that is
    stable (not the default ``<... at 0x...>``): the same judge code gives the same text in every process."""
    target = obj if inspect.isfunction(obj) or inspect.ismethod(obj) or inspect.isclass(obj) else type(obj)
    target = getattr(target, "__func__", target)
    name = f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', type(obj).__name__)}"
    try:
        source = inspect.getsource(target)
    except (OSError, TypeError):  # built in, or defined where no source is kept
        source = ""
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    text = repr(obj) if with_repr else ""
    if " at 0x" in text:
        text = ""
    return f"{name}:{digest}" + (f":{text}" if text else "")


def judge_fingerprint(judge) -> str:
    """What the judge cache keys a judge's scores on (see the module docstring)."""
    own = getattr(judge, "fingerprint", None)
    if callable(own):
        return str(own())
    return code_identity(judge)
