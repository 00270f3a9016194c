"""Instruct vs Thinking: read from the chat template (what the model is prompted with), else the name."""

from __future__ import annotations

import re
from typing import Any, Iterable, Literal

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
    except Exception:  # a template needing extra variables: fall back to the name
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


def variant_mismatch(variant: Variant, answers: Iterable[str]) -> str | None:
    """A warning when the dataset's answers do not match the model's kind, else None.

    Thinking models should be trained on answers that keep their ``<think>…</think>`` reasoning;
    Instruct models on plain answers (an Instruct model taught ``<think>`` blocks, even empty
    ones, starts emitting them at inference).
    """
    answers = list(answers)
    if not answers:
        return None
    with_think = sum("</think>" in a for a in answers)
    empty = sum(bool(_EMPTY_THINK.search(a)) for a in answers)
    if variant == "thinking" and with_think == 0:
        return (
            f"the model is a Thinking model but none of the {len(answers)} answers has a <think>…</think> block: "
            "training on them teaches it to skip its reasoning. Keep the reasoning in chosen and rejected, "
            "or use the Instruct model."
        )
    if variant == "instruct" and with_think:
        kind = "empty " if empty == with_think else ""
        return (
            f"the model is an Instruct model but {with_think} of {len(answers)} answers contain {kind}<think> blocks: "
            "it would learn to emit them. Remove them (nbtools.models.variant.strip_empty_think for empty ones) "
            "or use a Thinking model."
        )
    return None
