"""Training-health alarms: the failures a loss curve hides, read from what TRL already logs.

Four alarms, each one sentence with the step, what it means and what to try:

likelihood_displacement  the chosen answers' own log-probability fell well below the reference's while the
                         margin rose: the model is pushing the rejected answers down faster than it keeps the
                         chosen ones, and its answers degrade (the loss alone looks fine)
reward_divergence        an answer's log-probability fell by more than its whole reference value: the policy
                         runs far away from the reference (often collapse: both answers unlikely)
margin_saturation        the training pairs are all won with a growing margin while validation accuracy does not
                         move: memorising the training pairs
answer_length            greedy answers to a few validation prompts became much longer or shorter than the
                         starting model's (rambling, repetition, or truncation)

The numbers come from ``rewards/*`` and ``logps/*`` (TRL's names, ``eval_`` prefixed for validation):
a reward is ``beta * (log p_policy - log p_reference)``, so ``reward / beta`` is how far the policy's
log-probability of that answer moved from the reference's, in nats, and ``logps - reward / beta`` is
the reference's own log-probability. Validation rows (the same pairs at every evaluation) are used as
they are; training rows (a different batch each time) are averaged over a window first.

Thresholds are set with room on both sides: ``benchmarks/health_alarms.py`` runs the shapes task healthy
and provoked (displacement, collapse, memorising, DPO alone) over several seeds and records each alarm's
strength (``benchmarks/results/health_alarms.json``); its first seed of each case is committed as
``tests/fixtures/health/``, the histories the tests check.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Optional

from nbtools.train.history import evaluation_rows

# --- thresholds (see the module docstring for how they were checked) ------------------------------------------
WINDOW = 5  # training rows averaged per point (their batches differ)
# displacement: chosen log-prob below the reference's by this share of its size and at least these nats...
DISPLACEMENT_SHARE = 0.4
DISPLACEMENT_NATS = 5.0
# ...while the margin (reward units, 0 at the start) has risen to at least this
MARGIN_RISEN = 0.2
# divergence: an answer's log-prob fell by at least this share of the reference's value, and these nats
DIVERGENCE_SHARE = 1.0
DIVERGENCE_NATS = 10.0
# saturation: training pairs won at least this often, with a margin grown by this factor since the first
# evaluation, while validation accuracy moved less than FLAT_ACCURACY from it and stays ACCURACY_GAP below
SATURATED_ACCURACY = 0.95
MARGIN_GROWTH = 1.5
FLAT_ACCURACY = 0.05
ACCURACY_GAP = 0.3
# answer length: mean generated tokens this many times the start's (either way), and at least this many apart
LENGTH_RATIO = 2.0
LENGTH_MIN_TOKENS = 8
STRENGTH_CAP = 10.0  # strengths are ratios to thresholds; a condition met by far counts as this

# metric names on the eval rows carrying the answer-length probe (nbtools.train.callbacks)
ANSWER_TOKENS = "eval_answer_tokens"
ANSWER_TOKENS_START = "eval_answer_tokens_start"

KINDS = ("likelihood_displacement", "reward_divergence", "margin_saturation", "answer_length")


@dataclass
class Alarm:
    kind: str  # one of KINDS
    step: int
    message: str  # one sentence: the step, what it means, what to try
    source: str = "validation"  # "validation" (evaluation rows) or "training" (averaged training rows)
    values: dict = field(default_factory=dict)  # the numbers behind it, and its strength

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return self.message


# --- reading the history ----------------------------------------------------------------------------------------

def _number(row: dict, key: str) -> Optional[float]:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


@dataclass
class Point:
    """One reading of the policy against the reference: a validation row, or a window of training rows."""

    step: int
    source: str
    chosen_shift: Optional[float] = None  # nats: log p_policy - log p_ref of the chosen answers (mean)
    rejected_shift: Optional[float] = None
    chosen_ref: Optional[float] = None  # nats: the reference's log-prob of the chosen answers (mean)
    rejected_ref: Optional[float] = None
    margin: Optional[float] = None  # reward units
    accuracy: Optional[float] = None


def _point(step: int, source: str, values: dict[str, Optional[float]], beta: Optional[float]) -> Point:
    point = Point(step, source, margin=values.get("rewards/margins"), accuracy=values.get("rewards/accuracies"))
    if beta:
        for side in ("chosen", "rejected"):
            reward, logps = values.get(f"rewards/{side}"), values.get(f"logps/{side}")
            if reward is not None:
                shift = reward / beta
                setattr(point, f"{side}_shift", shift)
                if logps is not None:
                    setattr(point, f"{side}_ref", logps - shift)
    return point


_KEYS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
         "logps/rejected")


def validation_points(history: list[dict], beta: Optional[float]) -> list[Point]:
    """One point per evaluation (``nbtools.train.history.evaluation_rows``)."""
    points = []
    for row in evaluation_rows(history):
        if _number(row, "eval_loss") is None:
            continue
        values = {key: _number(row, f"eval_{key}") for key in _KEYS}
        points.append(_point(int(row.get("step", 0)), "validation", values, beta))
    return points


def training_points(history: list[dict], beta: Optional[float], window: int = WINDOW) -> list[Point]:
    """One point per training row from the ``window``-th on: the mean of the last ``window`` rows."""
    rows = [r for r in history if _number(r, "loss") is not None and not r.get("final")]
    points = []
    for end in range(window, len(rows) + 1):
        chunk = rows[end - window:end]
        values = {}
        for key in _KEYS:
            numbers = [v for v in (_number(r, key) for r in chunk) if v is not None]
            values[key] = sum(numbers) / len(numbers) if len(numbers) == len(chunk) else None
        points.append(_point(int(chunk[-1].get("step", 0)), "training", values, beta))
    return points


def _where(point: Point) -> str:
    return f"step {point.step}" + (" (validation)" if point.source == "validation" else
                                   f" (training, mean of the last {WINDOW} logged steps)")


def _ratio(value: float, threshold: float) -> float:
    """How many times ``value`` meets ``threshold`` (>= 1: met), capped."""
    if threshold <= 0:
        return STRENGTH_CAP
    return max(min(value / threshold, STRENGTH_CAP), -STRENGTH_CAP)


# --- the alarms: each point gets a strength, the smallest ratio of its conditions to their thresholds ---------
# (>= 1 fires; the fixtures and the benchmark check firing cases well above 1 and quiet ones well below)

def displacement_strength(p: Point) -> Optional[float]:
    if p.chosen_shift is None or p.chosen_ref is None or p.margin is None:
        return None
    needed = max(DISPLACEMENT_NATS, DISPLACEMENT_SHARE * abs(p.chosen_ref))
    return min(_ratio(-p.chosen_shift, needed), _ratio(p.margin, MARGIN_RISEN))


def displacement(points: list[Point]) -> Optional[Alarm]:
    """The first point where the chosen answers' log-prob fell well below the reference's while the margin rose."""
    for p in points:
        strength = displacement_strength(p)
        if strength is not None and strength >= 1:
            return Alarm(
                "likelihood_displacement", p.step,
                f"Likelihood displacement at {_where(p)}: the chosen answers' log-probability fell from the "
                f"reference's {p.chosen_ref:.1f} to {p.chosen_ref + p.chosen_shift:.1f} nats while the margin rose "
                f"to {p.margin:.2f}, so the model wins pairs by making rejected answers unlikely faster than it keeps "
                "the chosen ones, and its own answers degrade; try a lower learning_rate or a higher beta, add an sft "
                "term (loss_type: [sigmoid, sft]), or train fewer epochs.",
                p.source, {"chosen_shift_nats": p.chosen_shift, "chosen_reference_logps": p.chosen_ref,
                           "margin": p.margin, "strength": strength})
    return None


def divergence_strength(p: Point) -> Optional[tuple[float, str]]:
    """(strength, side): the answer whose log-prob fell furthest, relative to its threshold."""
    found = []
    for side in ("rejected", "chosen"):
        shift, ref = getattr(p, f"{side}_shift"), getattr(p, f"{side}_ref")
        if shift is not None and ref is not None:
            found.append((_ratio(-shift, max(DIVERGENCE_NATS, DIVERGENCE_SHARE * abs(ref))), side))
    return max(found) if found else None


def divergence(points: list[Point]) -> Optional[Alarm]:
    """The first point where an answer's log-prob fell by more than its whole reference value (and enough nats)."""
    for p in points:
        found = divergence_strength(p)
        if found is None or found[0] < 1:
            continue
        strength, side = found
        other = "chosen" if side == "rejected" else "rejected"
        shift, ref, other_shift = getattr(p, f"{side}_shift"), getattr(p, f"{side}_ref"), getattr(p, f"{other}_shift")
        both = (f" (and the {other} ones' by {-other_shift:.1f} nats)"
                if other_shift is not None and -other_shift >= DIVERGENCE_NATS else "")
        return Alarm(
            "reward_divergence", p.step,
            f"Rewards diverging at {_where(p)}: the {side} answers' log-probability fell from the reference's "
            f"{ref:.1f} to {ref + shift:.1f} nats{both}, so the policy is running far from the reference and its "
            "answers usually degrade; try a lower learning_rate or a higher beta, or train fewer epochs.",
            p.source, {"side": side, "shift_nats": shift, "reference_logps": ref, "strength": strength})
    return None


def _train_at(training: list[Point], step: int) -> Optional[Point]:
    before = [t for t in training if t.step <= step and t.accuracy is not None and t.margin is not None]
    return before[-1] if before else None


def saturation_strength(first: Point, start: Point, p: Point, now: Point) -> float:
    """Evaluation ``p`` (training window ``now``) against the first evaluation ``first`` (training window ``start``)."""
    solved = _ratio(1 - SATURATED_ACCURACY, max(1 - now.accuracy, 0.0)) if now.accuracy < 1 else STRENGTH_CAP
    growing = _ratio(now.margin, MARGIN_GROWTH * start.margin) if start.margin > 0 else \
        (STRENGTH_CAP if now.margin > 0 else 0.0)
    moved = abs(p.accuracy - first.accuracy)
    flat = _ratio(FLAT_ACCURACY, moved) if moved > 0 else STRENGTH_CAP
    gap = _ratio(now.accuracy - p.accuracy, ACCURACY_GAP)
    return min(solved, growing, flat, gap)


def saturation_points(validation: list[Point], training: list[Point]):
    """(first evaluation, its training window, evaluation, its training window, strength) from the second on."""
    evals = [p for p in validation if p.accuracy is not None]
    if len(evals) < 2:
        return
    first = evals[0]
    start = _train_at(training, first.step)
    if start is None:
        return
    for p in evals[1:]:
        now = _train_at(training, p.step)
        if now is not None and now is not start:
            yield first, start, p, now, saturation_strength(first, start, p, now)


def saturation(validation: list[Point], training: list[Point]) -> Optional[Alarm]:
    """The first evaluation (from the second on) where training pairs are all won with a margin still growing while
    validation accuracy has not moved from the first evaluation and stays well below the training accuracy."""
    for first, start, p, now, strength in saturation_points(validation, training):
        if strength >= 1:
            return Alarm(
                "margin_saturation", p.step,
                f"Margins saturating at step {p.step}: the training pairs are won {now.accuracy:.0%} of the time with "
                f"a margin grown from {start.margin:.2f} to {now.margin:.2f}, while validation accuracy stayed at "
                f"{p.accuracy:.0%} (first evaluation {first.accuracy:.0%}), so the model memorises the training pairs "
                f"instead of learning what makes an answer better; use the checkpoint of step {first.step}, train "
                "fewer epochs, lower learning_rate or raise beta, or add more varied pairs.",
                "validation", {"train_accuracy": now.accuracy, "train_margin": now.margin,
                               "train_margin_at_first_eval": start.margin, "eval_accuracy": p.accuracy,
                               "eval_accuracy_first": first.accuracy, "strength": strength})
    return None


def length_strength(now: float, start: float) -> float:
    ratio = now / start
    return min(_ratio(max(ratio, 1 / ratio) if ratio > 0 else STRENGTH_CAP, LENGTH_RATIO),
               _ratio(abs(now - start), LENGTH_MIN_TOKENS))


def _lengths(history: list[dict]):
    for row in history:
        now, start = _number(row, ANSWER_TOKENS), _number(row, ANSWER_TOKENS_START)
        if not row.get("final") and now is not None and start is not None and start > 0:
            yield int(row.get("step", 0)), now, start


def answer_length(history: list[dict]) -> Optional[Alarm]:
    """The first evaluation whose greedy answers are LENGTH_RATIO times longer or shorter than the start's."""
    for step, now, start in _lengths(history):
        strength = length_strength(now, start)
        if strength < 1:
            continue
        ratio = now / start
        longer = ratio > 1
        what = ("longer: the model rambles or repeats itself" if longer else
                "shorter: the model stops early or drops content")
        return Alarm(
            "answer_length", step,
            f"Answer length changed at step {step}: greedy answers to the same validation prompts average "
            f"{now:.1f} tokens against {start:.1f} at the start ({ratio:.1f}x), much {what}, which preference "
            "metrics do not show; read a few answers (run.json's answer_probe, 04_evaluate.ipynb), and try a lower "
            "learning_rate or a higher beta, an sft term in loss_type, or fewer epochs"
            + (", and check that chosen answers are not systematically longer than rejected ones." if longer
               else "."),
            "validation", {"answer_tokens": now, "answer_tokens_start": start, "ratio": ratio, "strength": strength})
    return None


def health_alarms(history: list[dict], beta: Optional[float] = None) -> list[Alarm]:
    """Every alarm ``history`` (metrics.jsonl rows) raises, at most one per kind (its first step), by step.

    ``beta``: the run's DPO beta; without it the alarms that need log-probability shifts (displacement,
    divergence) cannot be computed and stay silent."""
    validation = validation_points(history, beta)
    training = training_points(history, beta)
    found = []
    for check in (displacement, divergence):
        # the earliest of the two readings: validation rows are exact, training windows see between evaluations
        hits = [a for a in (check(validation), check(training)) if a is not None]
        if hits:
            found.append(min(hits, key=lambda a: (a.step, a.source != "validation")))
    found += [a for a in (saturation(validation, training), answer_length(history)) if a is not None]
    return sorted(found, key=lambda a: (a.step, KINDS.index(a.kind)))


def alarm_strengths(history: list[dict], beta: Optional[float] = None) -> dict[str, Optional[float]]:
    """The largest strength each alarm reached anywhere in ``history`` (>= 1: it fired; None: nothing to read).

    How far a run is from each threshold: benchmarks and tests use it to show the margins both ways."""
    validation = validation_points(history, beta)
    training = training_points(history, beta)
    points = validation + training

    def best(values):
        values = [v for v in values if v is not None]
        return max(values) if values else None

    return {
        "likelihood_displacement": best(displacement_strength(p) for p in points),
        "reward_divergence": best((divergence_strength(p) or (None,))[0] for p in points),
        "margin_saturation": best(s for *_, s in saturation_points(validation, training)),
        "answer_length": best(length_strength(now, start) for _, now, start in _lengths(history)),
    }


# --- the answer-length probe ------------------------------------------------------------------------------------

# The longest answer the probe lets the model write: LENGTH_RATIO times the longest chosen answer of its samples and
# some room (so a doubling shows), within these bounds (a long-answer dataset costs time at every evaluation).
PROBE_MIN_NEW_TOKENS = 32
PROBE_MAX_NEW_TOKENS = 1024


class AnswerLengthProbe:
    """Greedy answers to a few fixed validation prompts, generated at the start and at each evaluation.

    Their mean length in tokens goes into the evaluation rows (``eval_answer_tokens`` and the start's
    ``eval_answer_tokens_start``), where :func:`answer_length` reads it. Greedy decoding draws no random
    numbers and the model is put back in training mode after, so training goes on exactly as without it.
    """

    def __init__(self, examples: list[dict], processor, max_new_tokens: int):
        self.examples = examples  # training examples (nbtools.data.to_training_example): prompt, images, videos
        self.processor = processor
        self.max_new_tokens = int(max_new_tokens)
        self.start: Optional[float] = None  # mean tokens of the starting model's answers
        self.answers_start: list[str] = []
        self.answers: list[str] = []  # the latest evaluation's
        self.step: Optional[int] = None  # the step of the latest answers

    @classmethod
    def for_run(cls, cfg, split, processor, family: str) -> Optional["AnswerLengthProbe"]:
        """``cfg.health_samples`` validation pairs spread over ``split`` (a SplitData), or None when off."""
        count = min(int(getattr(cfg, "health_samples", 0) or 0), len(split.records) if split is not None else 0)
        if count <= 0:
            return None
        from nbtools.data import to_training_example
        from nbtools.images import resize_geometry
        from nbtools.train.dataset import record_from_row
        from nbtools.video import VideoSettings

        total = len(split.records)
        picks = sorted({round(i * (total - 1) / max(count - 1, 1)) for i in range(count)})
        rows = split.records.dataset().select(picks)
        geometry = resize_geometry(processor, family)
        examples = [to_training_example(record_from_row(row), cfg.max_pixels, family,
                                        video=VideoSettings.from_config(cfg), image_geometry=geometry) for row in rows]
        tokenizer = getattr(processor, "tokenizer", processor)
        longest = max(len(tokenizer(_text(e["chosen"]), add_special_tokens=False)["input_ids"]) for e in examples)
        budget = min(PROBE_MAX_NEW_TOKENS, max(PROBE_MIN_NEW_TOKENS, math.ceil(LENGTH_RATIO * 1.25 * longest)))
        return cls(examples, processor, budget)

    def _generate(self, model) -> tuple[list[str], list[int]]:
        import torch

        from nbtools.evaluate.generation import build_inputs

        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        stops = getattr(getattr(model, "generation_config", None), "eos_token_id", None) or tokenizer.eos_token_id
        stops = set(stops if isinstance(stops, (list, tuple)) else [stops]) - {None}
        device = next(model.parameters()).device
        texts, lengths = [], []
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for example in self.examples:
                    inputs = build_inputs(self.processor, example.get("images"), example["prompt"], device,
                                          example.get("videos", ()))
                    output = model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                            temperature=None, top_p=None, top_k=None,
                                            pad_token_id=tokenizer.pad_token_id)
                    new = output[0, inputs["input_ids"].shape[1]:].tolist()
                    length = next((i for i, token in enumerate(new) if token in stops), len(new))
                    lengths.append(length)
                    texts.append(tokenizer.decode(new[:length], skip_special_tokens=True).strip())
        finally:
            model.train(was_training)
        return texts, lengths

    def measure_start(self, model) -> float:
        self.answers_start, lengths = self._generate(model)
        self.start = sum(lengths) / len(lengths)
        return self.start

    def measure(self, model, step: int) -> float:
        self.answers, lengths = self._generate(model)
        self.step = step
        return sum(lengths) / len(lengths)

    def to_dict(self) -> dict:
        """What run.json keeps: the prompts, the start's answers and the latest evaluation's."""
        return {"max_new_tokens": self.max_new_tokens, "start_tokens": self.start, "step": self.step,
                "samples": [{"prompt": _text(e["prompt"]), "start": start, "latest": latest}
                            for e, start, latest in zip(self.examples, self.answers_start or [None] * len(self.examples),
                                                        self.answers or [None] * len(self.examples))]}


def _text(messages: list[dict]) -> str:
    """The text of structured chat messages (their last turn's text blocks)."""
    content = messages[-1]["content"] if messages else ""
    if isinstance(content, str):
        return content
    return " ".join(block.get("text", "") for block in content if block.get("type") == "text")


def measure_start(probe: AnswerLengthProbe, history: list[dict], model, fresh: bool, base_is_start: bool) -> None:
    """The starting model's answers: measured now when training starts from step 0 (``fresh``), else read back from
    the history of the resumed run (its evaluation rows carry the start's mean), else measured with the adapter
    switched off when that is the starting model (``base_is_start``: a new LoRA adapter starts as the base model;
    a run continuing ``adapter_path`` does not, and goes without the length alarm)."""
    if fresh:
        probe.measure_start(model)
        return
    recorded = [_number(r, ANSWER_TOKENS_START) for r in history]
    recorded = [v for v in recorded if v is not None]
    if recorded:
        probe.start = recorded[-1]
    elif base_is_start and hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            probe.measure_start(model)
