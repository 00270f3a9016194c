"""A model behind an OpenAI-compatible server as a judge: it grades each answer on a scale, and
:func:`parse_score` reads the grade from its reply.

    judge = OpenAICompatibleJudge("http://localhost:8001/v1")        # the one model that server serves
    judge("What colour is the shape?", ["square.png"], ["It is red.", "It is green."], reference="A red square.")
"""

from __future__ import annotations

import json
import math
import re
import string
import threading
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

from nbtools.endpoint import EndpointClient, image_url

from .base import code_identity


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


# --------------------------------------------------------------------------- the judge

class OpenAICompatibleJudge:
    """Scores each answer by asking a model behind an OpenAI-compatible server.

    The request: the prompt's images (``send_images``; False for a text-only judge model), then
    ``template`` filled with ``{prompt}``, ``{answer}``, ``{reference}`` ("(none given)" without one)
    and ``{scale}``; greedy, ``max_new_tokens`` long. ``parse(reply, scale)`` reads the score
    (default :func:`parse_score`): score / scale in [0, 1], or None for a reply
    that is no score. Such a reply is counted (``failed_replies``) and the prompt is not judged
    (None) rather than guessed; the run goes on. A prompt's answers are scored concurrently.
    """

    needs_reference = False

    def __init__(self, base_url: str, model: Optional[str] = None, *, template: Optional[str] = None,
                 scale: float = 10.0, send_images: bool = True, max_new_tokens: int = 16, concurrency: int = 4,
                 api_key: Optional[str] = None, timeout: float = 120.0, max_retries: int = 4, backoff: float = 0.5,
                 max_pixels: Optional[int] = None, family: Optional[str] = None,
                 parse: Optional[Callable[[str, float], Optional[float]]] = None,
                 client: Optional[EndpointClient] = None):
        self.template = check_template(template or DEFAULT_JUDGE_TEMPLATE)
        if not scale or float(scale) <= 0:
            raise ValueError(f"scale must be above 0, got {scale}")
        self.client = client or EndpointClient(base_url, api_key=api_key, timeout=timeout, max_retries=max_retries,
                                               backoff=backoff)
        self.model, self.scale, self.send_images = model or None, float(scale), bool(send_images)
        self.max_new_tokens, self.concurrency = int(max_new_tokens), max(1, int(concurrency))
        self.max_pixels, self.family = max_pixels, family
        self.parse = parse or parse_score
        self.failed_replies: list[str] = []  # replies that held no score, in this process
        self._model_id: Optional[str] = None
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        if self._model_id is None:
            self._model_id = self.client.resolve_model(self.model, "judge_model")
        return self._model_id

    def fingerprint(self) -> str:
        return "openai-compatible judge:" + json.dumps(
            {"model": self.model_id, "template": self.template, "scale": self.scale, "images": self.send_images,
             "max_new_tokens": self.max_new_tokens, "max_pixels": self.max_pixels, "family": self.family,
             "parse": "default" if self.parse is parse_score else code_identity(self.parse)}, sort_keys=True)

    def __repr__(self) -> str:
        return f"OpenAICompatibleJudge({self.client.base_url!r}, {self.model!r})"

    def _score(self, pictures: list, prompt: str, answer: str, reference: Optional[str]) -> Optional[float]:
        text = format_template(self.template, prompt, answer, reference, self.scale)
        content = [{"type": "image_url", "image_url": {"url": url}} for url in pictures] + [{"type": "text",
                                                                                              "text": text}]
        body = {"model": self.model_id, "messages": [{"role": "user", "content": content}], "temperature": 0.0,
                "max_tokens": self.max_new_tokens, "seed": 0}
        reply = self.client.chat(body, "judge")[0]
        score = self.parse(reply, self.scale)
        ok = score is not None and isinstance(score, (int, float)) and 0 <= score <= 1
        if not ok:
            with self._lock:
                self.failed_replies.append(reply)
            return None
        return float(score)

    def __call__(self, prompt, images, answers, reference=None):
        answers = list(answers)
        if not answers:
            return []
        pictures = [image_url(p, self.max_pixels, self.family) for p in images or ()] if self.send_images else []
        self.model_id  # noqa: B018 - resolved once, before the threads
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(answers))) as pool:
            scores = list(pool.map(lambda a: self._score(pictures, prompt, a, reference), answers))
        return None if any(s is None for s in scores) else scores
