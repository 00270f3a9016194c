"""Base vs tuned on their answers: a benchmark's questions answered by both models, scored, with intervals.

    result = evaluate_answers("runs/shapes-dpo", "data_samples/shapes/colour_questions.jsonl")
    result                                   # the table in a notebook
    result.payload["tuned"]["accuracy"]      # what <run>/answers/colour_questions.json holds

Both models answer every question with the same greedy decoding (one model in memory, its adapter off
and on; either side may be an endpoint, as in the model lab). Yes/no questions in POPE's layout give
accuracy, precision, recall, F1 and the yes-ratio ("yes" is the positive class, as in POPE); short
answers give exact-match accuracy. Every metric has a paired percentile bootstrap 95% interval (the
same resampled questions for both models, 2000 resamples, seeded), and ``difference`` gives
tuned - base with its own paired interval. An answer that is neither yes nor no (or names none of the
terms) counts as wrong, never guessed, and how many there were is reported beside the metrics.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .benchmark import (
    MODES,
    POPE,
    SHORT_ANSWER,
    YES,
    BenchmarkError,
    BenchmarkItem,
    final_text,
    parse_yes_no,
    read_benchmark,
    read_short_answer,
)
from .generation import Decoding
from .metrics import CONFIDENCE, bootstrap_indices, interval_headline

ANSWERS_DIR = "answers"
DEFAULT_DECODING = Decoding(max_new_tokens=32)  # greedy; a yes/no or a short caption fits
DEFAULT_BATCH_SIZE = 16

METRIC_HELP = {
    POPE: {
        "accuracy": "share of questions answered right (an answer that is neither yes nor no is wrong)",
        "precision": "of the questions answered yes, the share labelled yes",
        "recall": "of the questions labelled yes, the share answered yes",
        "f1": "harmonic mean of precision and recall",
        "yes_ratio": "share of questions answered yes (POPE's bias check: about the share labelled yes is unbiased)",
        "neither_ratio": "share of answers that are neither yes nor no (counted wrong, not guessed)",
    },
    SHORT_ANSWER: {
        "accuracy": "exact match: share of answers naming the reference's term and no other term",
        "no_term_ratio": "share of answers naming none of the terms (counted wrong, not guessed)",
    },
}
# The metric the headline, `tuned_better` and the demo's check read.
HEADLINE = "accuracy"


# --------------------------------------------------------------------------- scoring

def read_answer(item: BenchmarkItem, answer: str) -> tuple[str, bool]:
    """``(what the answer says, right)``: ``"yes"``/``"no"``/``"neither"`` for a POPE question; for a short
    answer the term it named, ``"none"`` or ``"several"`` (or the normalised answer without terms)."""
    if item.label is not None:
        said = parse_yes_no(answer)
        return (said or "neither"), said == item.label
    right, named = read_short_answer(answer, item)
    return named, right


def _columns(mode: str, items: Sequence[BenchmarkItem], reads: Sequence[str], rights: Sequence[bool]) -> dict:
    """Per question 0/1 columns whose sums over any resample give every metric."""
    right = np.array(rights, dtype=float)
    if mode == POPE:
        label_yes = np.array([item.label == YES for item in items], dtype=float)
        said_yes = np.array([r == YES for r in reads], dtype=float)
        return {"right": right, "label_yes": label_yes, "said_yes": said_yes, "true_yes": label_yes * said_yes,
                "neither": np.array([r == "neither" for r in reads], dtype=float)}
    return {"right": right, "no_term": np.array([r == "none" for r in reads], dtype=float)}


def _ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1), np.nan)


def _metrics_from_sums(mode: str, sums: dict, n: int, with_terms: bool = True) -> dict[str, np.ndarray]:
    """Each metric from the column sums (arrays: one entry per resample, or one for the data itself)."""
    if mode == POPE:
        return {
            "accuracy": sums["right"] / n,
            "precision": _ratio(sums["true_yes"], sums["said_yes"]),
            "recall": _ratio(sums["true_yes"], sums["label_yes"]),
            "f1": _ratio(2 * sums["true_yes"], sums["said_yes"] + sums["label_yes"]),
            "yes_ratio": sums["said_yes"] / n,
            "neither_ratio": sums["neither"] / n,
        }
    metrics = {"accuracy": sums["right"] / n}
    if with_terms:
        metrics["no_term_ratio"] = sums["no_term"] / n
    return metrics


def _value(x) -> Optional[float]:
    x = float(x)
    return None if np.isnan(x) else x


def _interval(samples: np.ndarray, confidence: float) -> Optional[list[float]]:
    """Percentile interval over the resamples where the metric is defined (None where it never is)."""
    samples = samples[~np.isnan(samples)]
    if samples.size == 0:
        return None
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(samples, [tail, 1.0 - tail])
    return [float(low), float(high)]


def compare_answers(mode: str, items: Sequence[BenchmarkItem], base: tuple[list, list], tuned: tuple[list, list],
                    *, with_terms: bool = True, n_resamples: int = 2000, seed: int = 0,
                    confidence: float = CONFIDENCE) -> dict:
    """Metrics of both sides with paired bootstrap intervals, and their paired differences.

    ``base``/``tuned``: ``(reads, rights)`` per question (see :func:`read_answer`). One draw of question indices
    serves every metric of both sides, so the intervals and the tuned - base differences are paired.
    """
    n = len(items)
    indices = bootstrap_indices(n, n_resamples, seed)
    out: dict = {}
    resampled = {}
    for side, (reads, rights) in (("base", base), ("tuned", tuned)):
        columns = _columns(mode, items, reads, rights)
        point = _metrics_from_sums(mode, {k: np.array([v.sum()]) for k, v in columns.items()}, n, with_terms)
        resampled[side] = _metrics_from_sums(mode, {k: v[indices].sum(axis=1) for k, v in columns.items()}, n,
                                             with_terms)
        out[side] = {m: _value(v[0]) for m, v in point.items()}
        out[side]["ci95"] = {m: _interval(resampled[side][m], confidence) for m in point}
    difference = {}
    for m in out["base"]:
        if m == "ci95":
            continue
        b, t = out["base"][m], out["tuned"][m]
        difference[m] = {"value": None if b is None or t is None else t - b,
                         "ci95": _interval(resampled["tuned"][m] - resampled["base"][m], confidence)}
    out["difference"] = difference
    return out


def flipped_items(items: Sequence[BenchmarkItem], base: tuple[list, list], tuned: tuple[list, list]) -> list[dict]:
    """Questions whose verdict changed: ``"fixed"`` (tuned right, base wrong) or ``"broken"``, in file order."""
    rows = []
    for index, item in enumerate(items):
        if base[1][index] != tuned[1][index]:
            rows.append({"index": index, "question_id": item.question_id, "row": item.row,
                         "direction": "fixed" if tuned[1][index] else "broken",
                         "base": base[0][index], "tuned": tuned[0][index]})
    return rows


# --------------------------------------------------------------------------- answering

def _pictures(item: BenchmarkItem, max_pixels: Optional[int], geometry) -> list:
    """The item's picture, shrunk to the run's ``max_pixels`` as training shrank its images."""
    from PIL import Image

    from nbtools.images import open_resized

    try:
        return [open_resized(item.image, max_pixels, geometry)]
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise BenchmarkError(f"{item.row}: image: {item.image}: cannot be read ({exc}) (fix: restore the file or "
                             "correct its path)") from None


def answer_side(side, items: Sequence[BenchmarkItem], decoding: Decoding, *, max_pixels: Optional[int] = None,
                geometry=None, suffix: str = "", batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = False,
                label: str = "") -> list[str]:
    """One side's answers to every question (:func:`nbtools.evaluate.lab.answerers` gives the sides).

    A model in this process answers greedy questions ``batch_size`` at a time (its adapter set once per
    batch); any other side (an endpoint, a scripted answerer) one at a time through its ``answer`` method.
    """
    from tqdm.auto import tqdm

    from .generation import generate_batch
    from .lab import InProcess
    from .logprobs import adapter_enabled

    batched = isinstance(side, InProcess) and decoding.temperature == 0
    step = batch_size if batched else 1
    answers: list[str] = []
    for start in tqdm(range(0, len(items), step), desc=f"answering ({label})", disable=not progress, leave=False):
        chunk = items[start : start + step]
        pictures = [_pictures(item, max_pixels, geometry) for item in chunk]
        prompts = [item.text + suffix for item in chunk]
        if batched:
            if side.adapter is None:
                answers += generate_batch(side.model, side.processor, pictures, prompts, decoding)
            else:
                with adapter_enabled(side.model, side.adapter):
                    answers += generate_batch(side.model, side.processor, pictures, prompts, decoding)
        else:
            answers += [str(side.answer(pictures[0], prompts[0], decoding))]
    return answers


# --------------------------------------------------------------------------- the evaluation

@dataclass(repr=False)
class AnswerEvaluation:
    """The payload (what ``<run>/answers/<name>.json`` holds) and the files written."""

    payload: Optional[dict]
    paths: dict = field(default_factory=dict)

    def _repr_html_(self) -> str:
        return answers_table_html(self.payload)

    def __repr__(self) -> str:
        if self.payload is None:
            return "<AnswerEvaluation: no benchmark given>"
        return f"<AnswerEvaluation {self.payload['name']} n_items={self.payload['n_items']} files={sorted(self.paths)}>"


def evaluate_answers(run_dir, benchmark, *, run=None, base=None, tuned=None, images=None, terms=None,
                     suffix: str = "", decoding: Optional[Decoding] = None, batch_size: int = DEFAULT_BATCH_SIZE,
                     max_items: Optional[int] = None, n_resamples: int = 2000, seed: int = 0,
                     progress: bool = True, write: bool = True) -> AnswerEvaluation:
    """Base and tuned answer every question of ``benchmark`` (a file, see nbtools.evaluate.benchmark); scored
    with paired intervals; written to ``<run>/answers/<name>.json`` and ``<name>_flipped.html``.

    ``run``: an already loaded :class:`~nbtools.evaluate.run_model.RunModel`. ``base``/``tuned``: other
    answerers (an endpoint URL, ``(url, model)``, an object with ``answer(images, prompt, decoding, ...)``), as
    the model lab takes them; with both given no model is loaded. ``images``: the folder the file's image paths
    are relative to. ``terms``: exclusive terms for short-answer rows without their own. ``suffix``: text added
    to every question (e.g. " Answer yes or no."). An empty ``benchmark`` evaluates nothing (the notebook's
    default when no file is named). The file and its pictures are checked before any model loads.
    """
    from nbtools.images import resize_geometry
    from nbtools.models.variant import model_variant

    from .lab import answerers
    from .run_model import adapter_dir, load_run_config, load_run_model, load_run_processor

    if benchmark is None or str(benchmark).strip() == "":
        return AnswerEvaluation(None)
    run_dir = Path(run_dir)
    config = run.config if run else load_run_config(run_dir)
    in_process = run is not None or base is None or base == "" or tuned is None or tuned == ""
    if in_process and run is None:
        adapter_dir(run_dir)  # a missing or damaged adapter is refused before the benchmark is read
    bench = read_benchmark(benchmark, images, terms)  # a bad file fails before a model loads
    items = bench.items[:max_items] if max_items else bench.items
    decoding = decoding or DEFAULT_DECODING
    if in_process:
        run = run or load_run_model(run_dir)
        processor = run.processor
    else:
        processor = load_run_processor(run_dir, config)  # only to size the pictures as the run does
    sides = answerers(run.model if run else None, run.processor if run else None, base, tuned)
    geometry = resize_geometry(processor)
    answers = {name: answer_side(sides[name], items, decoding, max_pixels=config.max_pixels, geometry=geometry,
                                 suffix=suffix, batch_size=batch_size, progress=progress, label=name)
               for name in ("base", "tuned")}
    scored = {name: _scored(items, texts) for name, texts in answers.items()}
    thinking = model_variant(processor) == "thinking"  # its prompt opens the <think> block the answer closes
    cut = {name: cut_while_reasoning(answers[name], scored[name][0], thinking) for name in ("base", "tuned")}
    with_terms = bench.mode == POPE or all(item.terms for item in items)
    metrics = compare_answers(bench.mode, items, scored["base"], scored["tuned"], with_terms=with_terms,
                              n_resamples=n_resamples, seed=seed)
    payload = {
        "kind": "answers",
        "name": bench.name,
        "benchmark": bench.path,
        "image_root": bench.image_root,
        "mode": bench.mode,
        "mode_help": MODES[bench.mode],
        "n_items": len(items),
        "n_items_in_file": len(bench.items),
        **metrics,
        "tuned_better": _better(metrics),
        "counts": {name: _counts(bench.mode, *scored[name]) for name in ("base", "tuned")},
        "confidence": CONFIDENCE,
        "bootstrap": {"n_resamples": n_resamples, "seed": seed, "paired": True},
        "metric_help": {m: h for m, h in METRIC_HELP[bench.mode].items() if m in metrics["base"]},
        "decoding": decoding.to_dict(),
        "suffix": suffix,
        "sides": {name: sides[name].describe() if hasattr(sides[name], "describe") else type(sides[name]).__name__
                  for name in ("base", "tuned")},
        "flipped": flipped_items(items, scored["base"], scored["tuned"]),
        "items": [_item_record(item, i, answers, scored) for i, item in enumerate(items)],
        "cut_while_reasoning": cut,
        "notes": list(bench.notes) + reasoning_notes(cut, len(items), decoding),
        "run_dir": str(run_dir),
        "model": config.model,
        "model_name": config.model_name,
        "evaluated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    payload.update(_questions_facts(bench.mode, items))
    payload["by_category"] = by_category(bench.mode, items, scored, with_terms, n_resamples, seed)
    paths = write_answers(run_dir, payload) if write else {}
    return AnswerEvaluation(payload, paths)


def _questions_facts(mode: str, items: Sequence[BenchmarkItem]) -> dict:
    """POPE: the share labelled yes; short answers: the terms, first seen first."""
    if mode == POPE:
        return {"label_yes_ratio": float(np.mean([item.label == YES for item in items]))}
    return {"terms": list(dict.fromkeys(t for item in items for t in item.terms))}


def by_category(mode: str, items: Sequence[BenchmarkItem], scored: dict, with_terms: bool, n_resamples: int,
                seed: int) -> dict:
    """Each subset's metrics with their intervals, when the questions come in several (lmms-lab/POPE mixes
    adversarial, popular and random, which POPE reports one by one); empty otherwise."""
    names = sorted({item.category for item in items if item.category})
    if len(names) < 2:
        return {}
    out = {}
    for name in names:
        picked = [i for i, item in enumerate(items) if item.category == name]
        sides = {side: ([scored[side][0][i] for i in picked], [scored[side][1][i] for i in picked])
                 for side in ("base", "tuned")}
        metrics = compare_answers(mode, [items[i] for i in picked], sides["base"], sides["tuned"],
                                  with_terms=with_terms, n_resamples=n_resamples, seed=seed)
        out[name] = {"n_items": len(picked), "base": metrics["base"], "tuned": metrics["tuned"]}
    return out


def category_rows(payload: dict) -> list[tuple[str, ...]]:
    """(category, questions, base and tuned accuracy[, F1]) as display strings, for the table under the main one."""
    groups = payload.get("by_category") or {}
    extra = ("f1",) if payload["mode"] == POPE else ()
    rows = []
    for name, group in groups.items():
        cells = [_with_ci(group[side][metric], group[side]["ci95"][metric])
                 for metric in (HEADLINE, *extra) for side in ("base", "tuned")]
        rows.append((name, str(group["n_items"]), *cells))
    return rows


def category_head(payload: dict) -> tuple[str, ...]:
    extra = ("base f1", "tuned f1") if payload["mode"] == POPE else ()
    return ("category", "questions", f"base {HEADLINE}", f"tuned {HEADLINE}", *extra)


def _scored(items: Sequence[BenchmarkItem], answers: Sequence[str]) -> tuple[list[str], list[bool]]:
    """(what each answer says, whether it is right), in question order."""
    reads = [read_answer(item, text) for item, text in zip(items, answers)]
    return [r for r, _ in reads], [ok for _, ok in reads]


def cut_while_reasoning(answers: Sequence[str], reads: Sequence[str], thinking: bool = False) -> int:
    """Answers that ended inside a ``<think>`` block: the model never got to answer. A Thinking model's prompt
    opens the block, so there an unread answer without ``</think>`` counts too (an endpoint that strips the
    reasoning returns answers that are read, and those are not counted)."""
    return sum(final_text(answer) is None
               or (thinking and "</think>" not in answer.lower() and read in ("neither", "none"))
               for answer, read in zip(answers, reads))


def reasoning_notes(cut: dict, total: int, decoding: Decoding) -> list[str]:
    """A note when answers were cut off while reasoning: they count as wrong, and the fix is more tokens."""
    if not any(cut.values()):
        return []
    counts = ", ".join(f"{name} {n} of {total}" for name, n in cut.items())
    return [f"answers cut off while reasoning ({counts}): the <think> block had not closed after "
            f"max_new_tokens {decoding.max_new_tokens}, so they count as wrong; a Thinking model needs room to "
            "reason before it answers: raise max_new_tokens (--max-new-tokens on the command line) to 1024 or more"]


def _better(metrics: dict) -> bool:
    """Tuned accuracy above base with disjoint 95% intervals."""
    base, tuned = metrics["base"], metrics["tuned"]
    b, t = base["ci95"][HEADLINE], tuned["ci95"][HEADLINE]
    return tuned[HEADLINE] > base[HEADLINE] and t[0] > b[1]


def _counts(mode: str, reads: Sequence[str], rights: Sequence[bool]) -> dict:
    """How the answers were read: ``yes``/``no``/``neither`` (POPE); ``right``, ``wrong`` (another term, or no
    match), ``none`` (no term named) and ``several`` (short answers)."""
    counts: dict = {}
    for read, right in zip(reads, rights):
        key = read if mode == POPE else "right" if right else read if read in ("none", "several") else "wrong"
        counts[key] = counts.get(key, 0) + 1
    return counts


def _item_record(item: BenchmarkItem, index: int, answers: dict, scored: dict) -> dict:
    record = {"question_id": item.question_id, "row": item.row, "image": item.image_field, "image_path": item.image,
              "text": item.text, "expected": item.expected}
    for side in ("base", "tuned"):
        record[side] = {"answer": answers[side][index], "read": scored[side][0][index],
                        "right": bool(scored[side][1][index])}
    return record


def write_answers(run_dir, payload: dict) -> dict:
    """``<run>/answers/<name>.json`` and ``<name>_flipped.html``, each written whole (nbtools.atomic)."""
    from nbtools import atomic

    folder = Path(run_dir) / ANSWERS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    stem = _results_stem(folder, payload)
    paths = {"answers": atomic.write_json(folder / f"{stem}.json", payload, indent=2)}
    paths["flipped"] = atomic.write_text(folder / f"{stem}_flipped.html",
                                         "<!doctype html><meta charset='utf-8'>" + flipped_items_html(payload))
    return paths


def _results_stem(folder: Path, payload: dict) -> str:
    """The benchmark's name; when that file already holds another benchmark's results (two files called
    test.jsonl), the name plus a short hash of this benchmark's path, so neither overwrites the other."""
    import hashlib
    import json

    stem = payload["name"]
    try:
        earlier = json.loads((folder / f"{stem}.json").read_text(encoding="utf-8")).get("benchmark")
    except (OSError, ValueError, AttributeError):
        return stem  # none yet (or unreadable): this one takes the name
    if earlier in (None, payload["benchmark"]):
        return stem
    return f"{stem}-{hashlib.sha256(str(payload['benchmark']).encode()).hexdigest()[:8]}"


def read_answer_evaluations(run_dir) -> list[dict]:
    """Every answer-level evaluation saved in the run folder (``answers/*.json``), by name; unreadable ones are
    skipped (the model card shows what can be read)."""
    import json

    found = []
    for path in sorted((Path(run_dir) / ANSWERS_DIR).glob("*.json")):
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(payload, dict) and payload.get("kind") == "answers" and "base" in payload:
            found.append(payload)
    return found


# --------------------------------------------------------------------------- showing it

def _percent(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _with_ci(value: Optional[float], ci: Optional[Sequence[float]]) -> str:
    if value is None:
        return "n/a"
    return _percent(value) + (f" [{_percent(ci[0])}, {_percent(ci[1])}]" if ci else "")


def answers_table_rows(payload: dict) -> list[tuple[str, str, str, str]]:
    """(metric, base, tuned, tuned - base) as display strings, intervals in brackets."""
    rows = []
    for metric in payload["metric_help"]:
        diff = payload["difference"][metric]
        rows.append((metric, _with_ci(payload["base"][metric], payload["base"]["ci95"][metric]),
                     _with_ci(payload["tuned"][metric], payload["tuned"]["ci95"][metric]),
                     _with_ci(diff["value"], diff["ci95"])))
    return rows


def answers_caption(payload: dict) -> str:
    """What was asked and how it was read, in one or two sentences."""
    text = (f"{payload['n_items']} questions of {payload['name']} ({payload['mode_help']}), greedy answers "
            f"(at most {payload['decoding']['max_new_tokens']} tokens); {payload['confidence']:.0%} paired bootstrap "
            "intervals")
    if payload["mode"] == POPE:
        text += f"; labelled yes: {_percent(payload.get('label_yes_ratio'))}"
    elif payload.get("terms"):
        text += f"; terms: {', '.join(payload['terms'])}"
    return text


def unread_line(payload: dict) -> str:
    """How many answers could not be read (neither yes nor no / no term named), for each side."""
    key, what = (("neither", "neither yes nor no") if payload["mode"] == POPE
                 else ("none", "naming none of the terms"))
    if payload["mode"] != POPE and not payload.get("terms"):
        return ""
    counts = {side: payload["counts"][side].get(key, 0) for side in ("base", "tuned")}
    return (f"Answers {what} (counted wrong, not guessed): base {counts['base']}, tuned {counts['tuned']} "
            f"of {payload['n_items']}.")


def answers_table_text(payload: dict) -> str:
    from nbtools.display import fixed_width_table

    lines = fixed_width_table([("metric", "base", "tuned", "tuned - base"), *answers_table_rows(payload)])
    lines.append(answers_caption(payload))
    if payload.get("by_category"):
        lines += ["", "by category:", *fixed_width_table([category_head(payload), *category_rows(payload)])]
    lines += [line for line in (unread_line(payload), flipped_line(payload)) if line]
    lines += [f"note: {note}" for note in payload.get("notes", [])]
    return "\n".join(lines)


def flipped_line(payload: dict) -> str:
    flipped = payload.get("flipped") or []
    fixed = sum(row["direction"] == "fixed" for row in flipped)
    return f"Flipped: {fixed} fixed by tuning, {len(flipped) - fixed} broken."


def answers_table_markdown(payload: dict) -> str:
    """The same table for the model card."""
    lines = ["| metric | base | tuned | tuned - base |", "|---|---|---|---|"]
    lines += [f"| `{m}` | {b} | {t} | {d} |" for m, b, t, d in answers_table_rows(payload)]
    if payload.get("by_category"):
        head = category_head(payload)
        lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in category_rows(payload)]
    return "\n".join(lines)


def answers_table_html(payload: Optional[dict]) -> str:
    if payload is None:
        return ("<p>No benchmark file given: the answer-level evaluation was skipped (name one in "
                "<code>benchmark_file</code>).</p>")
    from nbtools.display import table_style

    head = "".join(f"<th>{h}</th>" for h in ("metric", "base", "tuned", "tuned &minus; base"))
    body = []
    for metric, *cells in answers_table_rows(payload):
        tip = html.escape(payload["metric_help"][metric], quote=True)
        body.append(f'<tr><td title="{tip}"><code>{metric}</code></td>'
                    + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    extra = _category_table_html(payload)
    extra += "".join(f"<p>{html.escape(line)}</p>" for line in (unread_line(payload), flipped_line(payload)) if line)
    extra += "".join(f'<p style="color:#b45309">&#9888; {html.escape(n)}</p>' for n in payload.get("notes", []))
    return (f"{table_style('nbt-answers')}<table class='nbt-answers'><caption style='text-align:left'>"
            f"{html.escape(answers_caption(payload))}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>{extra}")


def _category_table_html(payload: dict) -> str:
    if not payload.get("by_category"):
        return ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in category_head(payload))
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in category_rows(payload))
    return (f"<table class='nbt-answers'><caption style='text-align:left'>By category (each with its own "
            f"intervals)</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def answers_headline(payload: Optional[dict]) -> str:
    """Base -> tuned accuracy with intervals, and whether the intervals separate (the notebook's checked line)."""
    if payload is None:
        return "No benchmark file given: answers were not evaluated."
    base, tuned = payload["base"], payload["tuned"]
    return interval_headline(f"{HEADLINE} on {payload['n_items']} questions of {payload['name']}", base[HEADLINE],
                             base["ci95"][HEADLINE], tuned[HEADLINE], tuned["ci95"][HEADLINE], "answers better",
                             "no difference in answers")


def flipped_items_html(payload: dict) -> str:
    """The questions whose verdict changed between base and tuned, with their pictures and both answers."""
    from nbtools.data.preview import THUMB_PX, thumbnail_data_uri
    from nbtools.display import table_style

    flipped = payload.get("flipped") or []
    if not flipped:
        return "<p>No question changed its verdict between the base and the tuned model.</p>"
    items = payload["items"]
    rows = []
    for row in flipped:
        item = items[row["index"]]
        colour = "#15803d" if row["direction"] == "fixed" else "#b91c1c"
        uri = thumbnail_data_uri(item.get("image_path") or item["image"])
        picture = f'<img src="{uri}" style="width:{THUMB_PX}px;height:auto">' if uri else html.escape(item["image"])
        cells = [html.escape(str(item["question_id"])), f'<b style="color:{colour}">{row["direction"]}</b>', picture,
                 html.escape(item["text"]), html.escape(str(item["expected"])),
                 html.escape(item["base"]["answer"]) + f" <i>({html.escape(item['base']['read'])})</i>",
                 html.escape(item["tuned"]["answer"]) + f" <i>({html.escape(item['tuned']['read'])})</i>"]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("question", "verdict", "image", "text", "expected", "base answer",
                                               "tuned answer"))
    return (f"{table_style('nbt-flipped')}<table class='nbt-flipped'><caption style='text-align:left'>"
            f"{html.escape(flipped_line(payload))} ({html.escape(payload['name'])})</caption><thead><tr>{head}</tr>"
            f"</thead><tbody>{''.join(rows)}</tbody></table>")
