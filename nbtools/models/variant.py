"""Instruct vs Thinking: read from the chat template (what the model is prompted with), else the name."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Iterable, Literal

from jinja2.exceptions import TemplateError

Variant = Literal["instruct", "thinking"]

_PROBE = [{"role": "user", "content": "hi"}]


def _generation_prompt(tok_or_proc: Any) -> str | None:
    template = getattr(tok_or_proc, "chat_template", None)
    if not template:
        tok = getattr(tok_or_proc, "tokenizer", None)
        template = getattr(tok, "chat_template", None) if tok is not None else None
        tok_or_proc = tok if template else tok_or_proc
    if not template:
        return None
    try:
        with_prompt = tok_or_proc.apply_chat_template(_PROBE, add_generation_prompt=True, tokenize=False)
        without = tok_or_proc.apply_chat_template(_PROBE, add_generation_prompt=False, tokenize=False)
    except (TemplateError, TypeError, ValueError, KeyError):  # a template needing extra variables: use the name
        return None
    return with_prompt[len(without):] if with_prompt.startswith(without) else with_prompt


def model_variant(processor_or_tokenizer: Any, config: Any = None) -> Variant:
    """'thinking' if the generation prompt opens a ``<think>`` block or the model name says Thinking."""
    prompt = _generation_prompt(processor_or_tokenizer)
    if prompt is not None and "<think>" in prompt:
        return "thinking"
    names = [
        getattr(processor_or_tokenizer, "name_or_path", None),
        getattr(getattr(processor_or_tokenizer, "tokenizer", None), "name_or_path", None),
        getattr(config, "_name_or_path", None) if config is not None else None,
    ]
    if any(n and "thinking" in str(n).lower() for n in names):
        return "thinking"
    return "instruct"


_EMPTY_THINK = re.compile(r"<think>\s*</think>\s*")


def strip_empty_think(text: str) -> str:
    """Remove empty ``<think></think>`` blocks (some templates add them to Instruct turns)."""
    return _EMPTY_THINK.sub("", text)


@dataclass
class ThinkCounts:
    """How many answers carry reasoning blocks (counted chunk by chunk by validation, merged with ``+``)."""

    answers: int = 0
    closed: int = 0  # with a ``</think>``: reasoning a Thinking model keeps (its prompt may open the block)
    tagged: int = 0  # with ``<think>`` or ``</think>``: what an Instruct model would learn to emit
    empty: int = 0  # with an empty ``<think></think>`` block

    @classmethod
    def of(cls, answers: Iterable[str]) -> "ThinkCounts":
        counts = cls()
        for answer in answers:
            counts.answers += 1
            closed = "</think>" in answer
            counts.closed += closed
            counts.tagged += closed or "<think>" in answer
            counts.empty += bool(_EMPTY_THINK.search(answer))
        return counts

    def __add__(self, other: "ThinkCounts") -> "ThinkCounts":
        return ThinkCounts(self.answers + other.answers, self.closed + other.closed, self.tagged + other.tagged,
                           self.empty + other.empty)


def mismatch_finding(variant: Variant, counts: ThinkCounts, noun: str = "answers") -> tuple[str, str] | None:
    """(what is wrong, how to fix it) when the answers counted in ``counts`` do not suit a ``variant`` model, else
    None. ``noun`` names them in the message ("chosen answers" where only those were counted)."""
    if not counts.answers:
        return None
    if variant == "thinking" and counts.closed == 0:
        return (f"the model is a Thinking model but none of the {counts.answers} {noun} has a <think>…</think> "
                "block: training on them teaches it to skip its reasoning",
                "keep the reasoning in chosen and rejected, or use the Instruct model")
    if variant == "instruct" and counts.tagged:
        kind = "empty " if counts.empty == counts.tagged else ""
        return (f"the model is an Instruct model but {counts.tagged} of {counts.answers} {noun} contain {kind}<think> "
                "blocks: it would learn to emit them",
                "remove them (nbtools.models.variant.strip_empty_think for empty ones) or use a Thinking model")
    return None


def variant_mismatch(variant: Variant, answers: Iterable[str]) -> str | None:
    """A warning when the dataset's answers do not match the model's kind, else None.

    Thinking models should be trained on answers that keep their ``<think>…</think>`` reasoning;
    Instruct models on plain answers (an Instruct model taught ``<think>`` blocks, even empty
    ones, starts emitting them at inference). Validation, the config form and ``train()`` pass the
    chosen answers: those are what the model learns to say.
    """
    finding = mismatch_finding(variant, ThinkCounts.of(answers))
    if finding is None:
        return None
    message, fix = finding
    return f"{message}. {fix[0].upper()}{fix[1:]}."


@functools.lru_cache(maxsize=16)
def variant_of_model(name_or_path: str, build: bool = True) -> Variant | None:
    """The kind of the model ``name_or_path`` names, from its processor's chat template (no weights read).

    None when it cannot be told here: the folder or hub snapshot is not available, or, with
    ``build=False``, a built-in tiny model is not built yet (the config form never waits for a build).
    """
    from .loading import load_processor
    from .tiny import TINY_SPECS, _is_current

    from nbtools.errors import UserError
    from nbtools.paths import model_cache_dir

    spec = TINY_SPECS.get(str(name_or_path))
    if spec is not None and not build and not _is_current(model_cache_dir() / spec.folder_name()):
        return None
    try:
        processor = load_processor(name_or_path)
    except (UserError, OSError, ValueError):  # a model that cannot be read here: the check is advice, never an
        return None  # obstacle (a bug in nbtools is not "cannot be read": it propagates)
    return model_variant(processor)
