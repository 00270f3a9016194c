"""The hook the trainer calls: loss + TRL-named metrics for one packed batch.

Order inside a step: the policy forward encodes the images (once), then — unless the batch
carries precomputed reference log-probs — the reference forward runs with the adapter
disabled, under ``no_grad``, reusing the policy's image features when the image path is
frozen (see :mod:`nbtools.packing.vision_cache`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, ContextManager

import torch

from nbtools.config import split_loss_types

from .contrast import AUXILIARY_ROWS
from .logps import PackedLogps, packed_logps
from .loss import METRIC_SUM_FIELDS, LossOptions, metric_sums, metrics_from_sums, packed_loss, reweighted_logps
from .mdpo import mdpo_loss, mdpo_metrics
from .vision_cache import encode_images, vision_features_reusable


def default_reference_context(model) -> ContextManager:
    """Adapter disabled for a PEFT model (the base model is the reference); no-op otherwise."""
    if hasattr(model, "disable_adapter"):
        return model.disable_adapter()
    inner = getattr(model, "module", None)
    if inner is not None and hasattr(inner, "disable_adapter"):
        return inner.disable_adapter()
    return contextlib.nullcontext()


def reference_logps(
    model,
    batch: dict,
    *,
    ref_model=None,
    encoder_outputs: dict | None = None,
    reference_context: Callable[[], ContextManager] | None = None,
    row_budget: int | None = None,
) -> PackedLogps:
    """Reference log-probs of a packed batch: ``ref_model`` if given, else ``model`` with its adapter disabled."""
    target = ref_model if ref_model is not None else model
    context = contextlib.nullcontext() if ref_model is not None else (
        reference_context() if reference_context is not None else default_reference_context(model)
    )
    with torch.no_grad(), context:
        return packed_logps(target, batch, encoder_outputs=encoder_outputs, row_budget=row_budget)


@dataclass
class PackedStepResult:
    loss: torch.Tensor
    policy: PackedLogps
    ref_chosen_logps: torch.Tensor
    ref_rejected_logps: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)
    reused_image_features: bool = False  # images encoded once (no autograd) and shared by both passes
    attention_tokens: int = 0  # tokens in the batch's attention mask (summed over processes with reduce_metrics)
    auxiliary: torch.Tensor | None = None  # per row: an mDPO image-contrast row (None: all rows are real pairs)


def packed_dpo_step(
    model, batch: dict, *, beta: float, loss_type="sigmoid", loss_weights=None, ref_model=None,
    reuse_vision: bool | None = None, reference_context: Callable[[], ContextManager] | None = None,
    reduce_metrics: Callable[[torch.Tensor], torch.Tensor] | None = None, row_budget: int | None = None,
    loss_options: LossOptions | dict | None = None,
) -> PackedStepResult:
    """Loss and metrics (TRL names) for one packed batch.

    ``loss_type``: one TRL loss type or a list of them, weighted by ``loss_weights`` (default 1 each);
    the list may add mDPO's ``mdpo_conditional`` / ``mdpo_anchor`` (:mod:`nbtools.packing.mdpo`).
    Rows flagged in ``batch["auxiliary_rows"]`` (image-contrast pairs) feed only the conditional term;
    the TRL losses and metrics cover the other rows, the real pairs.
    ``reuse_vision=None`` decides from the model (frozen, adapter-free image path); when on,
    the images are encoded once without autograd and both passes take the features.
    ``batch["ref_chosen_logps"]`` / ``["ref_rejected_logps"]``, when present, skip the reference pass.
    ``reduce_metrics``: sums a tensor over processes (e.g. ``accelerator.reduce(t, "sum")``), so the metrics
    describe the whole global batch as TRL's do; every process must call the step when it is given.
    ``row_budget``: consecutive pairs share rows of at most this many tokens in both passes (see
    ``packed_logps``); the loss and metrics stay per pair.
    ``loss_options``: label_smoothing, discopop_tau, f_divergence_type, ld_alpha, use_weighting, ...
    (:class:`~nbtools.packing.loss.LossOptions`, TRL's names); with ``ld_alpha`` the result's ``policy.chosen`` /
    ``.rejected`` and reference values are LD-DPO's weighted sums.
    """
    options = LossOptions.of(loss_options)
    if reuse_vision is None:
        reuse_vision = vision_features_reusable(model) and (ref_model is None or vision_features_reusable(ref_model))
    # frozen image path: encode once, without autograd, for both passes
    features = encode_images(model, batch) if reuse_vision else None
    policy = packed_logps(model, batch, encoder_outputs=features, with_stats=True, row_budget=row_budget)
    reference, ref_chosen, ref_rejected = _reference(model, batch, policy, ref_model, features, reference_context,
                                                     row_budget)
    trl_types, trl_weights, mdpo_weights = split_loss_types(loss_type, loss_weights)
    device = policy.chosen.device
    auxiliary = batch.get(AUXILIARY_ROWS)
    main = (~auxiliary.to(device).bool()) if auxiliary is not None else torch.ones_like(policy.chosen, dtype=torch.bool)
    plain_chosen = policy.chosen[main]  # sft's sums, whatever ld_alpha does to the others
    policy, ref_chosen, ref_rejected, pair_weights = reweighted_logps(policy, reference, ref_chosen, ref_rejected,
                                                                      main, options)
    loss = packed_loss(
        policy.chosen[main], policy.rejected[main], ref_chosen[main], ref_rejected[main], beta=beta,
        loss_types=trl_types, loss_weights=trl_weights, chosen_lengths=batch["chosen_lengths"].to(device)[main],
        rejected_lengths=batch["rejected_lengths"].to(device)[main], options=options, pair_weights=pair_weights,
        sft_chosen_logps=plain_chosen,
    )
    mdpo_sums = None
    if mdpo_weights:
        extra, mdpo_sums = mdpo_loss(policy.chosen, policy.rejected, ref_chosen, ref_rejected, ~main, beta=beta,
                                     weights=mdpo_weights)
        loss = loss + extra
    metrics, tokens = _step_metrics(batch, policy, main, ref_chosen, ref_rejected, beta, mdpo_sums, mdpo_weights,
                                    reduce_metrics)
    return PackedStepResult(loss, policy, ref_chosen, ref_rejected, metrics, features is not None, tokens,
                            ~main if auxiliary is not None else None)


def _reference(model, batch: dict, policy: PackedLogps, ref_model, features, reference_context, row_budget):
    """(the reference pass's per-token values or None, its chosen sums, its rejected sums): the batch's
    precomputed sums when it carries them, else a reference pass."""
    if "ref_chosen_logps" in batch and "ref_rejected_logps" in batch:
        device = policy.chosen.device
        return (None, batch["ref_chosen_logps"].to(device, policy.chosen.dtype),
                batch["ref_rejected_logps"].to(device, policy.chosen.dtype))
    reference = reference_logps(
        model, batch, ref_model=ref_model, encoder_outputs=features, reference_context=reference_context,
        row_budget=row_budget,
    )
    return reference, reference.chosen, reference.rejected


def _step_metrics(batch: dict, policy: PackedLogps, main: torch.Tensor, ref_chosen, ref_rejected, beta: float,
                  mdpo_sums, mdpo_weights, reduce_metrics) -> tuple[dict[str, float], int]:
    """(TRL's metrics over the real pairs, plus mDPO's terms; the batch's attention tokens).

    All metrics travel as one tensor of sums: one all-reduce over processes (when reduce_metrics is given)
    and one device-to-host read per step, however many processes train."""
    attention = batch.get("attention_mask")
    scored = main[policy.token_rows]
    stats = {name: value[scored] for name, value in policy.stats.items()}
    sums = metric_sums(policy.chosen[main], policy.rejected[main], ref_chosen[main], ref_rejected[main], beta, stats,
                       policy.token_is_chosen[scored], attention.sum() if attention is not None else 0)
    if mdpo_sums is not None:
        sums = torch.cat([sums, mdpo_sums.to(sums.device)])
    if reduce_metrics is not None:
        sums = reduce_metrics(sums)
    values = sums.tolist()
    metrics = metrics_from_sums(values[: len(METRIC_SUM_FIELDS)])
    if mdpo_sums is not None:
        metrics.update(mdpo_metrics(values[len(METRIC_SUM_FIELDS):], mdpo_weights))
    return metrics, int(values[METRIC_SUM_FIELDS.index("attention_tokens")])
