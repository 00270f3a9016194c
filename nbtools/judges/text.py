"""Judges that compare words (no model): :class:`RuleJudge` (terms an answer must or must not contain),
:class:`VocabularyJudge` (the answer names the same one of a set of exclusive terms as the reference),
:class:`ReferenceJudge` (content words compared with the reference, so one changed word counts) and
:class:`PairReferenceJudge` (the evaluation's built-in judge: closer to a pair's chosen answer than to its
rejected one).
"""

from __future__ import annotations

import difflib
import re
from typing import Callable, Optional, Sequence, Union

from .base import code_identity

Terms = Union[Sequence[str], Callable[[str, Optional[str]], Sequence[str]]]


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def contains_term(text: str, term: str) -> bool:
    """Whole-word, case-insensitive: "red" is in "A red square." but not in "a reddish one"."""
    words = _words(term)
    if not words:
        return False
    return re.search(r"\b" + r"\W+".join(map(re.escape, words)) + r"\b", text.lower()) is not None


class RuleJudge:
    """Score 1 when every rule holds; when one breaks, 0.5 x the share of rules that hold (so below 0.5).

    ``must_include`` / ``must_not_include`` are lists of terms, or callables
    ``(prompt, reference) -> terms`` for rules that differ per prompt.
    """

    needs_reference = False

    def __init__(self, must_include: Terms = (), must_not_include: Terms = ()):
        self.must_include = must_include
        self.must_not_include = must_not_include

    @staticmethod
    def _terms(terms: Terms, prompt: str, reference: Optional[str]) -> list[str]:
        return list(terms(prompt, reference) if callable(terms) else terms)

    def __call__(self, prompt, images, answers, reference=None):
        include = self._terms(self.must_include, prompt, reference)
        exclude = self._terms(self.must_not_include, prompt, reference)
        if not include and not exclude:
            return None
        scores = []
        for answer in answers:
            held = sum(contains_term(answer, t) for t in include) + sum(not contains_term(answer, t) for t in exclude)
            total = len(include) + len(exclude)
            scores.append(1.0 if held == total else 0.5 * held / total)
        return scores

    def fingerprint(self) -> str:
        def terms(value):
            return code_identity(value) if callable(value) else list(value)
        return f"{code_identity(self, with_repr=False)}:{terms(self.must_include)}:{terms(self.must_not_include)}"

    def __repr__(self):
        return f"RuleJudge(must_include={self.must_include!r}, must_not_include={self.must_not_include!r})"


class VocabularyJudge:
    """The answer must name the term of ``vocabulary`` that the reference names, and no other.

    For answers that differ in one exclusive attribute (colours, counts, yes/no). Prompts whose
    reference names none or several of the terms cannot be judged (``None``).
    """

    needs_reference = True

    def __init__(self, vocabulary: Sequence[str]):
        self.vocabulary = [t for t in vocabulary if t.strip()]

    def true_term(self, reference: Optional[str]) -> Optional[str]:
        named = [t for t in self.vocabulary if reference and contains_term(reference, t)]
        return named[0] if len(named) == 1 else None

    def __call__(self, prompt, images, answers, reference=None):
        term = self.true_term(reference)
        if term is None:
            return None
        return RuleJudge([term], [t for t in self.vocabulary if t != term])(prompt, images, answers, reference)

    def __repr__(self):
        return f"VocabularyJudge({self.vocabulary!r})"


# Function words and caption boilerplate ("The picture shows", "I can see"): differences in these
# are phrasing, not content.
STOPWORDS = frozenset("""
a an the this that these those there here it its it's i we you he she they me my our your his her their them
is are was were be been being am do does did has have had can could will would shall should may might must
of in on at to from by with for about as into onto over under near and or but so than then also very just
see seen shows show showing shown picture image photo photograph looks look looking appears there's
""".split())


class ReferenceJudge:
    """Content words of the answer against the reference; a substituted content word is a contradiction.

    Unlike word overlap ("a green circle" shares 2 of 3 words with "a yellow circle"), a word
    that takes the place of a reference word it does not match halves the score each time:
    score = (0.5 + 0.25 * recall + 0.25 * precision) * 0.5 ** contradictions, and 0 for an
    answer with no content words. Paraphrases with other words (synonyms) count as
    contradictions too: use a model judge for free-form answers.
    """

    needs_reference = True

    def score(self, answer: str, reference: str) -> float:
        ref, ans = _words(reference), _words(answer)
        ref_content = {w for w in ref if w not in STOPWORDS}
        ans_content = {w for w in ans if w not in STOPWORDS}
        if not ref_content:  # nothing but function words to compare: plain word similarity
            return difflib.SequenceMatcher(a=ans, b=ref, autojunk=False).ratio()
        if not ans_content:
            return 0.0
        contradictions = 0
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=ref, b=ans, autojunk=False).get_opcodes():
            if tag != "replace":
                continue
            lost = {w for w in ref[i1:i2] if w not in STOPWORDS} - ans_content
            new = {w for w in ans[j1:j2] if w not in STOPWORDS} - ref_content
            contradictions += min(len(lost), len(new))
        shared = len(ref_content & ans_content)
        recall, precision = shared / len(ref_content), shared / len(ans_content)
        return (0.5 + 0.25 * recall + 0.25 * precision) * 0.5 ** contradictions

    def __call__(self, prompt, images, answers, reference=None):
        if not reference:
            return None
        return [self.score(a, reference) for a in answers]

    def __repr__(self):
        return "ReferenceJudge()"


def similarity(answer: str, reference: str) -> float:
    """Word-level similarity in [0, 1] (difflib ratio over lower-cased words)."""
    return difflib.SequenceMatcher(a=_words(answer), b=_words(reference), autojunk=False).ratio()


def reference_score(answer: str, chosen: str, rejected: str) -> float:
    """How much closer ``answer`` is to the pair's chosen answer than to its rejected one (-1..1)."""
    return similarity(answer, chosen) - similarity(answer, rejected)


class PairReferenceJudge:
    """For one pair: each answer scores ``(1 + reference_score) / 2``, so the answer closer to ``chosen`` (than
    to ``rejected``) scores higher; word overlap, so it suits answers phrased like the pair's."""

    needs_reference = False

    def __init__(self, chosen: str, rejected: str):
        self.chosen, self.rejected = chosen, rejected

    def __call__(self, prompt, images, answers, reference=None):
        return [(1.0 + reference_score(a, self.chosen, self.rejected)) / 2 for a in answers]

    def __repr__(self):
        return f"PairReferenceJudge({self.chosen!r}, {self.rejected!r})"
