"""Where LoRA goes on a VLM, and how many parameters that trains, per component.

Default: the language model's attention and MLP projections only. Not the vision tower
(common servers such as vLLM ignore LoRA there), not the projector, not ``lm_head``
(TRL refuses LoRA on it). Targets are resolved to fully-qualified module names so that
what lands where can be shown to the user and asserted in tests.
"""

from __future__ import annotations

import re
import warnings
from typing import Any, Sequence

import torch

from nbtools.errors import UserError

from .families import Family, detect_family

# Attention and MLP projection names across Qwen2/2.5/3 and Llama-style language models.
DEFAULT_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

VISION_SERVING_WARNING = (
    "LoRA on the vision tower/projector requested (include_vision=True): common servers (e.g. vLLM) "
    "load LoRA for the language model only, so serve the merged model instead of the adapter."
)

COMPONENTS = ("vision", "projector", "language_model", "lm_head", "other")


class LoraTargetError(UserError, ValueError):
    """target_modules matched nothing usable, or was malformed."""


def _linear_modules(model: torch.nn.Module) -> list[str]:
    from peft.tuners.lora import LoraLayer

    names = []
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):  # already wrapped: count the base layer once, by the wrapper's name
            names.append(name)
        elif isinstance(module, torch.nn.Linear) and not re.search(r"\.(base_layer|lora_[AB]|lora_dropout)(\.|$)", name):
            names.append(name)
    return names


def _strip_peft_prefix(name: str) -> str:
    return re.sub(r"^base_model\.model\.", "", name)


def resolve_target_modules(
    model: torch.nn.Module, spec: str | Sequence[str] = "default", include_vision: bool = False
) -> list[str]:
    """Fully-qualified names of the Linear modules LoRA will wrap for ``spec``.

    ``spec``: "default" (LM attention + MLP projections), "all-linear" (every Linear of the
    language model; plus vision tower and projector only when ``include_vision``), a list of
    module-name suffixes (e.g. ["q_proj", "v_proj"]) or a regex matched against full names.
    ``lm_head`` is never a target.
    """
    family = detect_family(model)
    allowed = {"language_model"} | ({"vision", "projector"} if include_vision else set())
    candidates = [n for n in _linear_modules(model) if family.component_of(_strip_peft_prefix(n)) in allowed]

    if spec in (None, "default"):
        chosen = [n for n in candidates if n.rsplit(".", 1)[-1] in DEFAULT_PROJECTIONS]
        if include_vision:  # the vision side's own projections (names differ: qkv, proj, fc1, linear_fc1, ...)
            chosen += [n for n in candidates if family.component_of(_strip_peft_prefix(n)) != "language_model"]
    elif spec == "all-linear":
        chosen = candidates
    elif isinstance(spec, str):
        try:
            pattern = re.compile(spec)
        except re.error as err:
            raise LoraTargetError(f"target_modules regex {spec!r} is invalid: {err}") from err
        chosen = [n for n in candidates if pattern.fullmatch(n) or pattern.fullmatch(_strip_peft_prefix(n))]
    elif isinstance(spec, (list, tuple)) and all(isinstance(s, str) for s in spec):
        wanted = set(spec)
        chosen = [n for n in candidates if n.rsplit(".", 1)[-1] in wanted or n in wanted or _strip_peft_prefix(n) in wanted]
    else:
        raise LoraTargetError(
            f"target_modules must be 'default', 'all-linear', a list of module names or a regex, got {spec!r}"
        )
    chosen = sorted(set(chosen), key=candidates.index)
    if not chosen:
        where = "language model" + (" or vision tower" if include_vision else "")
        raise LoraTargetError(
            f"target_modules={spec!r} matches no Linear module of the {where} of this {family.name} model. "
            f"Examples of valid names: {', '.join(sorted({c.rsplit('.', 1)[-1] for c in candidates})[:10])}. "
            "Use 'default' or 'all-linear' if unsure."
        )
    return chosen


def lora_config(
    model: torch.nn.Module,
    target_modules: str | Sequence[str] = "default",
    lora_rank: int = 8,
    lora_alpha: int | None = None,
    lora_dropout: float = 0.05,
    include_vision: bool = False,
):
    """A ``peft.LoraConfig`` whose targets are the exact module names from :func:`resolve_target_modules`."""
    from peft import LoraConfig

    if int(lora_rank) <= 0:
        raise LoraTargetError(f"lora_rank must be a positive integer, got {lora_rank}")
    if include_vision:
        warnings.warn(VISION_SERVING_WARNING, UserWarning, stacklevel=2)
    names = resolve_target_modules(model, target_modules, include_vision=include_vision)
    # An anchored regex of exact names: PEFT then wraps precisely these modules and nothing else.
    pattern = "^(" + "|".join(re.escape(_strip_peft_prefix(n)) for n in names) + ")$"
    return LoraConfig(
        r=int(lora_rank),
        lora_alpha=int(lora_alpha) if lora_alpha is not None else 2 * int(lora_rank),
        lora_dropout=float(lora_dropout),
        target_modules=pattern,
        bias="none",
        task_type="CAUSAL_LM",
    )


def _component(family: Family, param_name: str) -> str:
    name = _strip_peft_prefix(param_name)
    name = re.sub(r"\.(base_layer|lora_[AB]\.[^.]+|lora_embedding_[AB]\.[^.]+)(?=\.)", "", name)
    return family.component_of(name)


def parameter_report(model: torch.nn.Module) -> dict[str, Any]:
    """Trainable and total parameters per component (vision, projector, language_model, lm_head).

    Returns {"components": {name: {"trainable", "total", "trainable_pct"}}, "trainable", "total",
    "trainable_pct", "table": str}. Shared (tied) weights are counted once.
    """
    family = detect_family(model)
    rows = {c: {"trainable": 0, "total": 0} for c in COMPONENTS}
    seen: set[int] = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            continue
        seen.add(id(param))
        comp = _component(family, name)
        rows[comp]["total"] += param.numel()
        if param.requires_grad:
            rows[comp]["trainable"] += param.numel()
    if rows["other"]["total"] == 0:
        rows.pop("other")
    for row in rows.values():
        row["trainable_pct"] = 100.0 * row["trainable"] / row["total"] if row["total"] else 0.0
    trainable = sum(r["trainable"] for r in rows.values())
    total = sum(r["total"] for r in rows.values())
    report = {
        "components": rows,
        "trainable": trainable,
        "total": total,
        "trainable_pct": 100.0 * trainable / total if total else 0.0,
    }
    report["table"] = format_parameter_table(report)
    return report


def format_parameter_table(report: dict[str, Any]) -> str:
    lines = [f"{'component':<16}{'trainable':>14}{'total':>16}{'trainable %':>13}"]
    for comp, row in report["components"].items():
        lines.append(f"{comp:<16}{row['trainable']:>14,}{row['total']:>16,}{row['trainable_pct']:>12.3f}%")
    lines.append(f"{'all':<16}{report['trainable']:>14,}{report['total']:>16,}{report['trainable_pct']:>12.3f}%")
    return "\n".join(lines)
