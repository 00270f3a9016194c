"""Judges that score sampled answers: ``judge(prompt, images, answers, reference=None) -> scores``.

A score is in [0, 1]; below ``wrong_below`` (0.5 by default) the answer counts as wrong. A
judge may return ``None`` when it cannot judge a prompt (e.g. a reference-based judge on a
prompt without a reference); the strategies count such prompts instead of guessing.

Built in: :class:`RuleJudge` (terms an answer must or must not contain),
:class:`VocabularyJudge` (the answer names the same one of a set of exclusive terms as the
reference), :class:`ReferenceJudge` (content words compared with the reference, so one
changed word counts) and :class:`PairwiseAdapter` (wraps the evaluation's pairwise judges,
``judge(prompt, a, b) -> "a" | "b" | "tie"``). Any callable with the signature above works too;
``nbtools.prepare.endpoint.OpenAICompatibleJudge`` asks a model behind an OpenAI-compatible server.

Scores are cached (``OUTPUT/judgments.jsonl``) under :func:`judge_fingerprint`: a judge's own
``fingerprint()`` when it has one, else its code (the function's or class's source) and its
repr. A judge whose verdicts depend on something neither shows (a file it reads, a global it
captures) should define ``fingerprint()``, or delete the cache when that changes.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import math
import re
import string
import unicodedata
from typing import Callable, Optional, Sequence, Union

import numpy as np

from nbtools.errors import UserError

ScoreJudge = Callable[..., Optional[list]]
Terms = Union[Sequence[str], Callable[[str, Optional[str]], Sequence[str]]]


class JudgeError(UserError, ValueError):
    """A judge returned something other than one score in [0, 1] per answer."""


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


class PairwiseAdapter:
    """Scores answers with a pairwise judge ``judge(prompt, a, b) -> "a" | "b" | "tie"``.

    Round robin: each answer meets every other one (and the reference, when there is one) in
    a seeded random order; its score is its share of wins, a tie counting half.
    """

    needs_reference = False

    def __init__(self, judge: Callable[[str, str, str], str], seed: int = 0):
        self.judge = judge
        self.seed = seed

    def __call__(self, prompt, images, answers, reference=None):
        contestants = list(answers) + ([reference] if reference else [])
        if len(contestants) < 2:
            return [0.5 for _ in answers]
        rng = np.random.default_rng(self.seed)
        points = [0.0] * len(contestants)
        for i in range(len(contestants)):
            for j in range(i + 1, len(contestants)):
                first, second = (i, j) if rng.integers(2) else (j, i)
                verdict = self.judge(prompt, contestants[first], contestants[second])
                if verdict not in ("a", "b", "tie"):
                    raise JudgeError(f"the pairwise judge returned {verdict!r}; it must return 'a', 'b' or 'tie'")
                if verdict == "tie":
                    points[i] += 0.5
                    points[j] += 0.5
                else:
                    points[first if verdict == "a" else second] += 1.0
        return [p / (len(contestants) - 1) for p in points[: len(answers)]]

    def fingerprint(self) -> str:
        return f"{code_identity(self, with_repr=False)}:seed={self.seed}:{judge_fingerprint(self.judge)}"

    def __repr__(self):
        return f"PairwiseAdapter({self.judge!r})"


def run_judge(judge: ScoreJudge, prompt: str, images, answers: Sequence[str], reference=None) -> Optional[list]:
    """Call ``judge`` and check what it returns: None, or one finite score in [0, 1] per answer."""
    scores = judge(prompt, images, list(answers), reference=reference)
    if scores is None:
        return None
    scores = list(scores)
    if len(scores) != len(answers) or not all(isinstance(s, (int, float)) and math.isfinite(s) and 0 <= s <= 1
                                              for s in scores):
        raise JudgeError(f"the judge {judge!r} returned {scores!r} for {len(answers)} answer(s); a judge must "
                         "return one score in [0, 1] per answer (or None when it cannot judge the prompt)")
    return [float(s) for s in scores]


def make_judge(config) -> ScoreJudge:
    """The built-in judge a :class:`~nbtools.prepare.config.PrepareConfig` names."""
    if config.judge == "endpoint":
        from .endpoint import OpenAICompatibleJudge

        return OpenAICompatibleJudge(config.judge_url, config.judge_model, template=config.judge_template,
                                     scale=config.judge_scale, concurrency=config.concurrency,
                                     timeout=config.request_timeout, max_retries=config.max_retries,
                                     max_pixels=config.max_pixels)
    if config.judge == "rule":
        return RuleJudge(config.must_include, config.must_not_include)
    if config.judge == "vocabulary":
        return VocabularyJudge(config.vocabulary)
    return ReferenceJudge()


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


# --------------------------------------------------------------------------- scores in a model's reply

_NUM = r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?![\w])"
_FRACTION = re.compile(rf"({_NUM})\s*(?:/|out\s+of)\s*({_NUM})", re.IGNORECASE)
_PERCENT = re.compile(rf"({_NUM})\s*%")
_NUMBER = re.compile(_NUM)
_KEYWORD = re.compile(r"\b(?:score|rating|grade|mark)s?\b[^\d\n+-]{0,24}?"
                      rf"({_NUM}(?:\s*(?:/|out\s+of)\s*{_NUM}|\s*%)?)", re.IGNORECASE)
_ALONE = re.compile(rf"\s*(?:(?:score|rating|grade)\s*[:=]?\s*)?({_NUM}(?:\s*(?:/|out\s+of)\s*{_NUM}|\s*%)?)"
                    r"\s*[.!]?\s*", re.IGNORECASE)
MAX_REPLY_CHARS = 20_000  # a longer reply is read up to here


def _value(text: str, scale: float) -> Optional[float]:
    """One number, fraction or percentage -> its share of the scale, or None when it is out of range."""
    try:
        fraction = _FRACTION.fullmatch(text.strip())
        if fraction:
            top, bottom = float(fraction.group(1)), float(fraction.group(2))
            value = top / bottom if bottom > 0 and 0 <= top <= bottom else None
        elif text.strip().endswith("%"):
            share = float(_PERCENT.fullmatch(text.strip()).group(1))
            value = share / 100 if 0 <= share <= 100 else None
        else:
            number = float(text)
            value = number / scale if 0 <= number <= scale else None
    except (ValueError, AttributeError, OverflowError, ZeroDivisionError):
        return None
    return value if value is not None and math.isfinite(value) else None


def parse_score(reply, scale: float = 10.0) -> Optional[float]:
    """A judge model's reply -> its score as a share of ``scale`` in [0, 1], or None when the reply does not
    give one score.

    Read in this order: a reply that is only a score ("7", "**7.5**", "Score: 7.", "7/10", "70%"); the last
    number after score/rating/grade/mark ("The colour is wrong. Score: 2"); the reply's only fraction
    ("2 out of 10" or "2/10", against its own denominator) or percentage; the reply's only number. A number
    outside [0, scale] (a fraction above 1, a percentage above 100) and a reply with several different
    numbers and no keyword give None, as does anything that is not text.
    """
    if not isinstance(reply, str) or not scale or not math.isfinite(scale) or scale <= 0:
        return None
    text = unicodedata.normalize("NFKC", reply[:MAX_REPLY_CHARS])
    text = re.sub(r"[*_`#>]", " ", text)  # markdown emphasis and quoting around the number
    alone = _ALONE.fullmatch(text)
    if alone:
        return _value(alone.group(1), scale)
    keyed = _KEYWORD.findall(text)
    if keyed:
        return _value(keyed[-1], scale)
    for pattern in (_FRACTION, _PERCENT):
        found = {m.group(0) for m in pattern.finditer(text)}
        if len(found) == 1:
            return _value(found.pop(), scale)
        if found:
            return None
    numbers = {float(m.group(0)) for m in _NUMBER.finditer(text) if _finite(m.group(0))}
    if len(numbers) == 1:
        return _value(_NUMBER.search(text).group(0), scale)
    return None


def _finite(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except (ValueError, OverflowError):
        return False


# --------------------------------------------------------------------------- the judge's prompt

TEMPLATE_FIELDS = ("prompt", "answer", "reference", "scale")
DEFAULT_JUDGE_TEMPLATE = (
    "You grade answers to questions about the picture(s) shown.\n"
    "Question: {prompt}\n"
    "Reference answer: {reference}\n"
    "Answer to grade: {answer}\n"
    "How correct is the answer to grade, from 0 (wrong) to {scale} (fully correct)? Reply with the number only."
)
NO_REFERENCE = "(none given)"


def check_template(template: str) -> str:
    """Raise ValueError unless ``template`` formats with the judge's fields and shows the answer."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ValueError(f"the template cannot be read ({exc})") from None
    unknown = sorted(n for n in names if n.split(".")[0].split("[")[0] not in TEMPLATE_FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join('{' + n + '}' for n in unknown)} in the template")
    if "answer" not in names:
        raise ValueError("the template never shows {answer}")
    format_template(template, "q", "a", "r", 10)
    return template


def format_template(template: str, prompt: str, answer: str, reference: Optional[str], scale: float) -> str:
    """The judge's prompt for one answer (an empty reference reads "(none given)")."""
    shown_scale = int(scale) if float(scale).is_integer() else scale
    try:
        return template.format(prompt=prompt, answer=answer, reference=reference or NO_REFERENCE, scale=shown_scale)
    except (KeyError, IndexError, AttributeError, ValueError) as exc:
        raise ValueError(f"the template cannot be filled in ({type(exc).__name__}: {exc})") from None
