"""Judges: one interface for preparation and evaluation. A judge scores answers.

    judge(prompt, images, answers, reference=None) -> [score per answer] | None

A score is in [0, 1]; below ``wrong_below`` (0.5 by default) preparation counts the answer as wrong. A
judge returns None when it cannot judge a prompt (a reference-based judge on a prompt without a
reference); preparation counts such prompts instead of guessing. Any callable of that shape is a judge.

Pairwise judging is a use of a judge: :func:`prefer` asks a judge to score two answers and names the
winner (``"a"``, ``"b"`` or ``"tie"``); the evaluation's win rate (``nbtools.evaluate.judge_rows``) calls it
per row. A pairwise function ``fn(prompt, answer_a, answer_b) -> "a" | "b" | "tie"`` (a person's rule, a
call to a stronger model) becomes a judge as :class:`PairwiseJudge` (``PairwiseJudge(fn)``).

Modules: ``base`` (the interface: checking a judge's scores, the cache's fingerprint, pairwise use),
``text`` (judges that compare words: :class:`RuleJudge`, :class:`VocabularyJudge`, :class:`ReferenceJudge`,
:class:`PairReferenceJudge`), ``served`` (:class:`OpenAICompatibleJudge`: a model behind an
OpenAI-compatible server grades each answer, and :func:`parse_score` reads its reply).
"""

from .base import (
    JudgeError, PairwiseJudge, ScoreJudge, code_identity, judge_fingerprint, prefer, require_judge, run_judge,
)
from .served import DEFAULT_JUDGE_TEMPLATE, OpenAICompatibleJudge, check_template, parse_score
from .text import (
    PairReferenceJudge, ReferenceJudge, RuleJudge, VocabularyJudge, contains_term, reference_score, similarity,
)

__all__ = [
    "DEFAULT_JUDGE_TEMPLATE", "JudgeError", "OpenAICompatibleJudge", "PairReferenceJudge", "PairwiseJudge",
    "ReferenceJudge", "RuleJudge", "ScoreJudge", "VocabularyJudge", "check_template", "code_identity",
    "contains_term", "judge_fingerprint", "parse_score", "prefer", "reference_score",
    "require_judge", "run_judge", "similarity",
]
