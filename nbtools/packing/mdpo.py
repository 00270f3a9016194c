"""mDPO's two extra loss terms (Wang et al. 2024, "mDPO: Conditional Preference Optimization for Multimodal LLMs").

* ``mdpo_conditional``:
  -log σ(β[(log π(y_w|m,x) − log π_ref(y_w|m,x)) − (log π(y_w|m',x) − log π_ref(y_w|m',x))]).
  The chosen answer must become likelier with the real images m than with corrupted ones m'. Plain
  multimodal DPO can reach its goal from the text alone and learn to ignore the image; this term
  only improves by looking at it. It is computed on the auxiliary image-contrast rows of the batch
  (:mod:`nbtools.packing.contrast`: chosen answer on both sides, m' on the rejected side), so a row's
  "chosen" log-prob is log π(y_w|m,x) and its "rejected" one log π(y_w|m',x). (In the lean layout the row holds
  only the m' side and its "chosen" value is the real pair's chosen log-prob, the same number; see
  :func:`nbtools.packing.layout.borrow_chosen`.)
* ``mdpo_anchor``: -log σ(β(log π(y_w|m,x) − log π_ref(y_w|m,x)) − δ) with δ = 0, on the real pairs:
  keeps the chosen answer's reward above zero (relative DPO can raise the margin while both answers
  lose likelihood).

Each is a mean over its rows, weighted by its ``loss_weights`` entry and added to the DPO loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nbtools.config import MDPO_LOSS_TYPES

ANCHOR_DELTA = 0.0  # mDPO's δ: the chosen reward is anchored at zero

# Sums behind the mDPO metrics, packed into one tensor (summed over processes with the TRL ones).
MDPO_SUM_FIELDS = ("contrast_pairs", "conditional", "conditional_correct", "anchor_pairs", "anchor")


def conditional_losses(chosen_logps, corrupted_logps, ref_chosen_logps, ref_corrupted_logps, *, beta: float):
    """Per auxiliary row: -log σ(β[(chosen − ref chosen) − (corrupted − ref corrupted)])."""
    margin = (chosen_logps - ref_chosen_logps) - (corrupted_logps - ref_corrupted_logps)
    return -F.logsigmoid(beta * margin)


def anchor_losses(chosen_logps, ref_chosen_logps, *, beta: float, delta: float = ANCHOR_DELTA):
    """Per real pair: -log σ(β(chosen − ref chosen) − δ)."""
    return -F.logsigmoid(beta * (chosen_logps - ref_chosen_logps) - delta)


def _mean(values: torch.Tensor) -> torch.Tensor:
    # an empty selection (a batch without images has no contrast rows) adds nothing, not NaN
    return values.mean() if values.numel() else values.sum()


def mdpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    auxiliary: torch.Tensor,
    *,
    beta: float,
    weights: dict[str, float],
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weighted sum of the requested mDPO terms, their sums in :data:`MDPO_SUM_FIELDS` order).

    All tensors cover every row of the batch; ``auxiliary`` (bool, per row) tells the image-contrast
    rows (conditional term) from the real pairs (anchor term).
    """
    unknown = sorted(set(weights) - set(MDPO_LOSS_TYPES))
    if unknown:
        raise ValueError(f"mdpo_loss knows {MDPO_LOSS_TYPES}, got {unknown}")
    auxiliary = auxiliary.to(chosen_logps.device).bool()
    main = ~auxiliary
    conditional = conditional_losses(chosen_logps[auxiliary], rejected_logps[auxiliary], ref_chosen_logps[auxiliary],
                                     ref_rejected_logps[auxiliary], beta=beta)
    anchor = anchor_losses(chosen_logps[main], ref_chosen_logps[main], beta=beta)
    total = chosen_logps.new_zeros(())
    if "mdpo_conditional" in weights:
        total = total + weights["mdpo_conditional"] * _mean(conditional)
    if "mdpo_anchor" in weights:
        total = total + weights["mdpo_anchor"] * _mean(anchor)
    with torch.no_grad():
        contrast_margin = ((chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps))[auxiliary]
        sums = torch.stack([
            auxiliary.float().sum(),
            conditional.detach().float().sum(),
            (contrast_margin > 0).float().sum(),
            main.float().sum(),
            anchor.detach().float().sum(),
        ])
    return total, sums


def mdpo_metrics(sums: list[float], weights: dict[str, float]) -> dict[str, float]:
    """``mdpo/conditional`` (+ ``mdpo/conditional_accuracy``: share of contrast rows where the real images
    win) and ``mdpo/anchor``, for the requested terms; a term with no rows in the batch is left out."""
    s = dict(zip(MDPO_SUM_FIELDS, sums))
    out = {}
    if "mdpo_conditional" in weights and s["contrast_pairs"] > 0:
        out["mdpo/conditional"] = s["conditional"] / s["contrast_pairs"]
        out["mdpo/conditional_accuracy"] = s["conditional_correct"] / s["contrast_pairs"]
    if "mdpo_anchor" in weights and s["anchor_pairs"] > 0:
        out["mdpo/anchor"] = s["anchor"] / s["anchor_pairs"]
    return out
