"""Benchmark files for answer-level evaluation, and how a model's answer is read against them.

Two layouts, one JSON object per line (a JSON array of such objects is read too):

* **yes/no questions in POPE's published layout** (``coco_pope_random.json`` and its siblings)::

      {"question_id": 1, "image": "COCO_val2014_000000310196.jpg", "text": "Is there a snowboard in the image?", "label": "yes"}

  An answer is read as yes or no (:func:`parse_yes_no`); one that is neither is counted as such,
  never guessed.
* **short answers**: a reference ``answer`` and, optionally, a set of exclusive ``terms`` (per row, or
  for the whole file): the answer is right when it names the reference's term and no other, as the
  prepare step's vocabulary judge decides (``nbtools.judges.VocabularyJudge``). Without terms
  the answer must equal the reference once case, punctuation and articles are set aside::

      {"question_id": 1, "image": "images/validation_0001.png", "text": "What colour is the shape?", "answer": "blue",
       "terms": ["red", "green", "blue", "yellow"]}

``image`` is a path relative to the image folder given (POPE's COCO ``val2014`` folder), else to the
benchmark file's folder; an absolute path or a remote URL is used as it is. Every problem of a file is
found before a model loads and reported at once, each as ``FILE:LINE: field: what (fix: …)``.
"""

from __future__ import annotations

import json
import math
import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

from nbtools.errors import UserError, one_line
from nbtools.media_ref import is_embedded, media_source

POPE = "pope"
SHORT_ANSWER = "short_answer"
MODES = {POPE: "yes/no questions (POPE's layout)", SHORT_ANSWER: "short answers"}
YES, NO = "yes", "no"
SHOW_PROBLEMS = 10
MAX_ID_CHARS = 200  # a question id is a name, not a document


class BenchmarkError(UserError, ValueError):
    """The benchmark file cannot be used; the message names the file, row and field, and the fix."""


@dataclass(frozen=True)
class BenchmarkItem:
    """One question of a benchmark: where it is in the file, its picture, and what a right answer is."""

    row: str  # "FILE:LINE" (or "FILE: item N" in a JSON array), for messages
    question_id: Union[int, str]
    image: str  # the path (or URL) the picture is read from
    image_field: str  # the ``image`` value as the file has it, for reports
    text: str
    label: Optional[str] = None  # POPE: "yes" or "no"
    answer: Optional[str] = None  # short answer: the reference
    terms: tuple[str, ...] = ()  # short answer: the exclusive terms (empty: normalised exact match)
    category: Optional[str] = None  # the subset the question belongs to (POPE's adversarial/popular/random)

    @property
    def expected(self) -> str:
        """What a right answer gives: the label, the reference's term, or the reference."""
        if self.label is not None:
            return self.label
        return reference_term(self.answer, self.terms) if self.terms else self.answer


@dataclass
class Benchmark:
    path: str
    mode: str  # POPE or SHORT_ANSWER
    items: list[BenchmarkItem]
    image_root: str
    terms: tuple[str, ...] = ()  # the file-wide terms given by the caller, if any
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """A file name for its results: the benchmark file's name without its extension, in safe characters."""
        stem = Path(self.path).name
        for suffix in (".jsonl", ".json", ".parquet"):
            if stem.lower().endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")
        return safe[:100] or "benchmark"

    def __len__(self) -> int:
        return len(self.items)


# --------------------------------------------------------------------------- reading answers

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
# "Answer:", "The answer is", "Final answer:" before the answer word
_ANSWER_LEAD = re.compile(r"^(?:(?:the\s+)?(?:final\s+|short\s+)?answer\s*(?:is\s*:?|:|-)\s*)", re.IGNORECASE)
# markup, quotes and brackets a model may put around its answer
_DECORATION = "*_#>`\"'“”‘’«»()[]{}:-–—.!,;· \t\r\n\u00a0"
_HEDGE = re.compile(r"^(yes|no)\b\W*(?:or|and|/)\W*(yes|no)\b")


def final_text(answer: str) -> Optional[str]:
    """The answer without a Thinking model's reasoning (``<think>…</think>``), or None when the reasoning never
    ended (the answer was cut off before the model answered)."""
    text = unicodedata.normalize("NFKC", str(answer))
    if "</think>" in text.lower():  # Qwen3's templates open the block in the prompt: keep what follows its end
        text = re.split(r"</think>", text, flags=re.IGNORECASE)[-1]
    text = _THINK_BLOCK.sub(" ", text)
    if "<think>" in text.lower():
        return None
    return text


def parse_yes_no(answer: str) -> Optional[str]:
    """``"yes"``, ``"no"``, or None when the answer is neither.

    Read from the start of the answer, after a Thinking model's reasoning, markup (``**Yes**``), quotes and an
    ``Answer:`` lead: "Yes.", "yes, there is a dog", "NO", "The answer is no." are read; "There is a dog.",
    "I cannot tell", "Yes or no?", an empty answer and one cut off while reasoning are neither. Nothing is
    guessed from words later in the answer (POPE's own script counts every answer without "no"/"not" as yes).
    """
    text = final_text(answer)
    if text is None:
        return None
    text = text.strip(_DECORATION)
    for _ in range(2):  # "**Answer:** Yes"
        text = _ANSWER_LEAD.sub("", text).strip(_DECORATION)
    lowered = text.lower()
    if _HEDGE.match(lowered):
        return None
    match = re.match(r"[^\W\d_]+", lowered)
    if match is None:
        return None
    word = match.group(0)
    return word if word in (YES, NO) else None


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def normalised(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces: "The Red." and "red" compare equal."""
    return " ".join(w for w in _words(unicodedata.normalize("NFKC", text)) if w not in ("a", "an", "the"))


def named_terms(answer: str, terms: Sequence[str]) -> list[str]:
    """The terms the answer names (whole words, any case), in the order of ``terms``."""
    from nbtools.judges import contains_term

    return [t for t in terms if contains_term(answer, t)]


def reference_term(reference: Optional[str], terms: Sequence[str]) -> Optional[str]:
    """The one term the reference names, or None when it names none or several."""
    named = named_terms(reference or "", terms)
    return named[0] if len(named) == 1 else None


def read_short_answer(answer: str, item: BenchmarkItem) -> tuple[bool, str]:
    """``(right, what the answer named)``: with terms, right when the answer names the reference's term and no
    other, and what it named is that term, ``"none"`` (no term: counted wrong, not guessed) or ``"several"``;
    without terms, right when it equals the reference after :func:`normalised` (``"match"`` or ``"no match"``)."""
    text = final_text(answer)
    if not item.terms:
        right = text is not None and normalised(text) == normalised(item.answer or "")
        return right, "match" if right else "no match"
    if text is None:
        return False, "none"
    named = named_terms(text, item.terms)
    if not named:
        return False, "none"
    if len(named) > 1:
        return False, "several"
    return named[0] == item.expected, named[0]


# --------------------------------------------------------------------------- reading files

def parse_terms(terms: Union[None, str, Sequence[str]]) -> tuple[str, ...]:
    """``"red, green"`` or ``["red", "green"]`` -> ``("red", "green")``; empty entries dropped."""
    if terms is None:
        return ()
    if isinstance(terms, str):
        terms = terms.split(",")
    return tuple(t.strip() for t in terms if isinstance(t, str) and t.strip())


_NOT_JSON = object()  # a row that is not JSON; its problem is the third item


def _json_rows(path: Path, text: str) -> list[tuple[str, object, str]]:
    """``[(where, value, problem)]`` of a JSON Lines file (or a JSON array), in file order; a row that is not
    JSON has the value ``_NOT_JSON`` and says why."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            values = json.loads(stripped)
        except (ValueError, RecursionError) as exc:
            return [(str(path), _NOT_JSON, f"{path}: not valid JSON ({one_line(exc)[:160]}) (fix: write one JSON "
                                           "object per line, or one JSON array of objects)")]
        if not isinstance(values, list):
            return [(str(path), _NOT_JSON, f"{path}: not a JSON array of objects (fix: write one JSON object per "
                                           "line)")]
        return [(f"{path}: item {i}", value, "") for i, value in enumerate(values, 1)]
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            rows.append((where, json.loads(line), ""))
        except (ValueError, RecursionError) as exc:
            rows.append((where, _NOT_JSON, f"{where}: not valid JSON ({one_line(exc)[:120]}) (fix: one JSON object "
                                           "per line, e.g. {\"question_id\": 1, \"image\": \"a.jpg\", \"text\": \"Is "
                                           "there a dog in the image?\", \"label\": \"yes\"})"))
    return rows


def _question_id(value, where: str) -> tuple[Optional[Union[int, str]], Optional[str]]:
    if isinstance(value, bool) or value is None or not isinstance(value, (int, str, float)):
        shown = "missing" if value is None else f"{one_line(json.dumps(value))[:60]} is not a number or text"
        return None, (f"{where}: question_id: {shown} (fix: give every row a \"question_id\", a whole number or "
                      "text unique in the file)")
    if isinstance(value, float):
        if not (math.isfinite(value) and value.is_integer()):
            return None, f"{where}: question_id: {value!r} is not a whole number (fix: use a whole number or text)"
        value = int(value)
    if isinstance(value, str) and (not value.strip() or len(value) > MAX_ID_CHARS):
        return None, (f"{where}: question_id: {'empty' if not value.strip() else 'longer than 200 characters'} "
                      "(fix: a short number or text unique in the file)")
    return value, None


def _text_field(row: dict, name: str, where: str, fix: str) -> tuple[Optional[str], Optional[str]]:
    value = row.get(name)
    if not isinstance(value, str) or not value.strip():
        shown = "missing" if value is None else ("empty" if isinstance(value, str)
                                                 else f"{one_line(json.dumps(value))[:60]} is not text")
        return None, f"{where}: {name}: {shown} (fix: {fix})"
    return value, None


def _image_path(value: str, root: Path) -> str:
    from nbtools.images import is_remote

    if is_embedded(value):
        return value
    if is_remote(value) or value.startswith(("http://", "https://")):
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else root / path)


def _image_problem(path: str) -> Optional[str]:
    """Why the picture at ``path`` cannot be used (its header is read), or None."""
    from PIL import Image

    from nbtools.images import is_remote

    if is_remote(path) or path.startswith(("http://", "https://")):
        return None  # read when answered; a failure then names the row
    if not is_embedded(path) and not os.path.isfile(path):
        return "no such file"
    try:
        with Image.open(media_source(path)) as image:
            image.size  # noqa: B018 - the header is read on open
    except Image.DecompressionBombError as exc:
        return f"too large to open safely ({one_line(exc)[:100]})"
    except (OSError, ValueError, SyntaxError) as exc:  # PIL raises SyntaxError for some broken headers
        return f"not a readable image ({one_line(exc)[:100]})"
    return None


def read_benchmark(path, images: Optional[os.PathLike] = None,
                   terms: Union[None, str, Sequence[str]] = None) -> Benchmark:
    """The benchmark at ``path``, checked whole: every row, every picture (its header), the question ids (unique)
    and one layout for the file. Raises :class:`BenchmarkError` listing every problem found.

    ``images``: the folder ``image`` paths are relative to (default: the file's folder). ``terms``: exclusive terms
    for the short-answer rows that give none of their own (``"red,green,blue,yellow"`` or a list).
    """
    from nbtools.data.sources import is_table_source

    from .benchmark_table import TableUnusable, image_root, table_rows

    given_terms = parse_terms(terms)
    if is_table_source(path):  # Parquet shards, a save_to_disk folder or a Hub id; JSON files are not
        root = Path(image_root(path, images))
        try:
            name, rows = table_rows(path)
        except TableUnusable as exc:
            raise BenchmarkError(str(exc)) from None
        path = Path(name)
    else:
        path = Path(os.fspath(path)).expanduser()
        root, text = _benchmark_text(path, images)
        rows = _json_rows(path, text)
    reader = _RowReader(root, given_terms)
    for where, row, problem in rows:
        reader.read(where, _NOT_JSON if problem else row, problem)
    problems = reader.problems
    if len(problems) == 1:
        raise BenchmarkError(problems[0])
    if problems:
        more = len(problems) - SHOW_PROBLEMS
        raise BenchmarkError(f"{path}: {len(problems)} problems in the benchmark file; fix them first:\n"
                             + "\n".join(problems[:SHOW_PROBLEMS]) + (f"\n... and {more} more" if more > 0 else ""))
    if not reader.items:
        raise BenchmarkError(f"{path}: no questions (fix: one JSON object per line, e.g. {{\"question_id\": 1, "
                             "\"image\": \"a.jpg\", \"text\": \"Is there a dog in the image?\", \"label\": \"yes\"}})")
    benchmark = Benchmark(str(path), reader.mode, reader.items, str(root), given_terms)
    if reader.mode == POPE and given_terms:
        benchmark.notes.append("terms are for short-answer files; this POPE file's answers are read as yes/no")
    return benchmark


def _benchmark_text(path: Path, images: Optional[os.PathLike]) -> tuple[Path, str]:
    """(the image folder, the file's text): the file and the folder must exist and the text be UTF-8."""
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "no such file"
        raise BenchmarkError(f"{path}: {what} (fix: pass a benchmark file: one JSON object per line, POPE's layout "
                             "or short answers, or Parquet shards with the pictures embedded (lmms-lab/POPE); see "
                             "docs/evaluation.md, 'Base vs tuned on answers')")
    root = (Path(os.fspath(images)).expanduser() if images else path.parent).absolute()
    if images and not root.is_dir():
        raise BenchmarkError(f"{root}: no such image folder (fix: pass the folder the benchmark's image paths are "
                             "relative to, e.g. COCO's val2014 for POPE)")
    try:
        return root, path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BenchmarkError(f"{path}: not UTF-8 text (byte {exc.start}) (fix: save the file as UTF-8 JSON "
                             "Lines)") from None
    except OSError as exc:
        raise BenchmarkError(f"{path}: cannot be read ({exc.strerror or exc}) (fix: check the file's "
                             "permissions)") from None


class _RowReader:
    """Checks the rows one by one: every problem is kept (the file is reported whole), good rows become items."""

    def __init__(self, root: Path, given_terms: tuple[str, ...]):
        self.root, self.given_terms = root, given_terms
        self.problems: list[str] = []
        self.items: list[BenchmarkItem] = []
        self.mode: Optional[str] = None  # the file's layout: its first row's
        self.mode_row = ""
        self.seen_ids: dict = {}
        self.checked_images: dict[str, Optional[str]] = {}

    def read(self, where: str, row, problem: Optional[str]) -> None:
        if row is _NOT_JSON:
            self.problems.append(problem)
            return
        if not isinstance(row, dict):
            self.problems.append(f"{where}: not a JSON object (fix: one object per row with question_id, image, "
                                 "text and label or answer)")
            return
        if not self._layout(where, row):
            return
        before = len(self.problems)
        question_id = self._question_id(where, row)
        image_value, image = self._image(where, row)
        question, problem = _text_field(row, "text", where, "give the question, e.g. \"Is there a dog in the "
                                        "image?\"")
        if problem:
            self.problems.append(problem)
        label, answer, item_terms = self._label(where, row) if self.mode == POPE else self._answer(where, row)
        if len(self.problems) == before:  # the picture goes to the model on its own: a <image> tag is dropped
            question = question.replace("<image>", "").strip() or question
            category = row.get("category")
            self.items.append(BenchmarkItem(where, question_id, image, image_value, question, label, answer,
                                            item_terms, category.strip() if isinstance(category, str)
                                            and category.strip() else None))

    def _layout(self, where: str, row: dict) -> bool:
        """Whether the row is in a layout, and the file's (the first row's) at that."""
        row_mode = POPE if "label" in row else SHORT_ANSWER if "answer" in row else None
        if row_mode is None:
            self.problems.append(f"{where}: label/answer: missing (fix: add \"label\": \"yes\" or \"no\" for a "
                                 "yes/no question in POPE's layout, or \"answer\": the reference for a short-answer "
                                 "question)")
            return False
        if self.mode is None:
            self.mode, self.mode_row = row_mode, where
        elif row_mode != self.mode:
            self.problems.append(f"{where}: {'label' if row_mode == POPE else 'answer'}: this row is a "
                                 f"{MODES[row_mode]} row but {self.mode_row} is a {MODES[self.mode]} row (fix: one "
                                 "layout per file; split the file)")
            return False
        return True

    def _question_id(self, where: str, row: dict):
        question_id, problem = _question_id(row.get("question_id"), where)
        if problem:
            self.problems.append(problem)
            return question_id
        key = (type(question_id).__name__, question_id)
        if key in self.seen_ids:
            self.problems.append(f"{where}: question_id: {one_line(json.dumps(question_id))[:60]} repeats "
                                 f"{self.seen_ids[key]} (fix: give every question its own id)")
        else:
            self.seen_ids[key] = where
        return question_id

    def _image(self, where: str, row: dict) -> tuple[Optional[str], Optional[str]]:
        """(the value as written, the path it names), each picture's header read once."""
        image_value, problem = _text_field(row, "image", where, "give the picture's path, relative to the image "
                                           "folder (--images) or to the benchmark file")
        if problem:
            self.problems.append(problem)
            return image_value, None
        image = _image_path(image_value, self.root)
        if image not in self.checked_images:
            self.checked_images[image] = _image_problem(image)
        if self.checked_images[image] and is_embedded(image):
            self.problems.append(f"{where}: image: the embedded picture is {self.checked_images[image]} (fix: "
                                 "download the shard again; if the row stays damaged, remove it)")
        elif self.checked_images[image]:
            self.problems.append(f"{where}: image: {image}: {self.checked_images[image]} (fix: pass the folder the "
                                 "pictures are in with --images DIR / images=..., or correct the path)")
        return image_value, image

    def _label(self, where: str, row: dict) -> tuple[Optional[str], None, tuple[str, ...]]:
        """POPE's layout: a yes/no label."""
        raw = row.get("label")
        label = raw.strip().lower() if isinstance(raw, str) else None
        if label not in (YES, NO):
            self.problems.append(f"{where}: label: {one_line(json.dumps(raw))[:60]} is not \"yes\" or \"no\" (fix: "
                                 "label each question \"yes\" or \"no\", as POPE does)")
        return label, None, ()

    def _answer(self, where: str, row: dict) -> tuple[None, Optional[str], tuple[str, ...]]:
        """The short-answer layout: a reference naming exactly one of the row's (or the given) terms."""
        answer, problem = _text_field(row, "answer", where, "give the reference answer, e.g. \"blue\"")
        if problem:
            self.problems.append(problem)
        item_terms: tuple[str, ...] = ()
        own = row.get("terms")
        if own is not None and (not isinstance(own, list) or not parse_terms(own)
                                or not all(isinstance(t, str) for t in own)):
            self.problems.append(f"{where}: terms: {one_line(json.dumps(own))[:80]} is not a list of words (fix: "
                                 "e.g. \"terms\": [\"red\", \"green\", \"blue\", \"yellow\"], or leave it out)")
        else:
            item_terms = parse_terms(own) if own is not None else self.given_terms
        if answer and item_terms and reference_term(answer, item_terms) is None:
            named = named_terms(answer, item_terms)
            how = "none" if not named else f"several ({', '.join(named)})"
            self.problems.append(f"{where}: answer: {one_line(json.dumps(answer))[:80]} names {how} of the terms "
                                 f"{', '.join(item_terms)} (fix: the reference must name exactly one term)")
        return None, answer, item_terms
