"""DPO loss and TRL-named metrics from summed log-probs (the packed path's counterpart of TRL's loss code)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# The packed step implements these TRL loss types, alone or weighted together (e.g. sigmoid + sft,
# RPO's recipe); the trainer keeps TRL's path for the others.
PAIRWISE_LOSS_TYPES = ("sigmoid", "hinge", "ipo")
PACKED_LOSS_TYPES = PAIRWISE_LOSS_TYPES + ("sft",)


def dpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
    loss_type: str = "sigmoid",
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean per-pair loss; same formulas as TRL's ``DPOTrainer`` (reverse-KL divergence)."""
    chosen_logratios = chosen_logps - ref_chosen_logps
    rejected_logratios = rejected_logps - ref_rejected_logps
    delta = chosen_logratios - rejected_logratios
    if loss_type == "sigmoid":
        per_pair = -F.logsigmoid(beta * delta)
    elif loss_type == "hinge":
        per_pair = torch.relu(1 - beta * delta)
    elif loss_type == "ipo":
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError("the ipo loss needs chosen_lengths and rejected_lengths")
        ipo_delta = chosen_logratios / chosen_lengths.clamp(min=1) - rejected_logratios / rejected_lengths.clamp(min=1)
        per_pair = (ipo_delta - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"dpo_loss supports loss_type in {PAIRWISE_LOSS_TYPES}, got {loss_type!r}")
    return per_pair.mean()


def packed_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    loss_types=("sigmoid",),
    loss_weights=None,
) -> torch.Tensor:
    """Weighted sum of the given losses, as TRL adds them: each pairwise loss is a mean over pairs;
    ``sft`` is the chosen answers' negative log-likelihood per token over the whole batch."""
    loss_types = [loss_types] if isinstance(loss_types, str) else list(loss_types)
    weights = list(loss_weights) if loss_weights else [1.0] * len(loss_types)
    if len(weights) != len(loss_types):
        raise ValueError(f"{len(loss_types)} loss types but {len(weights)} weights")
    total = chosen_logps.new_zeros(())
    for loss_type, weight in zip(loss_types, weights):
        if loss_type == "sft":
            part = -chosen_logps.sum() / chosen_lengths.sum().clamp(min=1)
        else:
            part = dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=beta,
                            loss_type=loss_type, chosen_lengths=chosen_lengths, rejected_lengths=rejected_lengths)
        total = total + weight * part
    return total


# Order of the per-step sums that :func:`metric_sums` packs into one tensor (so that several processes add
# them with one all-reduce and the host reads them with one transfer).
METRIC_SUM_FIELDS = (
    "pairs", "chosen_rewards", "rejected_rewards", "correct", "margins", "chosen_logps", "rejected_logps",
    "tokens", "entropy", "chosen_tokens", "chosen_logits", "rejected_tokens", "rejected_logits", "chosen_top1",
    "attention_tokens",
)


def metric_sums(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    stats: dict,
    is_chosen: torch.Tensor,
    attention_tokens: torch.Tensor | int = 0,
) -> torch.Tensor:
    """Sums and counts behind TRL's metrics for this process's pairs, in :data:`METRIC_SUM_FIELDS` order.

    Sums, not means: summed over processes they give the metrics of the whole global batch, the way
    TRL gathers its per-pair values across ranks before averaging.
    """
    with torch.no_grad():
        chosen_rewards = beta * (chosen_logps - ref_chosen_logps).detach().float()
        rejected_rewards = beta * (rejected_logps - ref_rejected_logps).detach().float()
        device = chosen_rewards.device
        chosen_mask = is_chosen.to(device)
        zero = torch.zeros((), device=device)
        entropy = stats.get("entropy")
        mean_logits = stats.get("mean_logits")
        top1 = stats.get("is_top1")
        values = [
            torch.tensor(float(chosen_rewards.numel()), device=device),
            chosen_rewards.sum(),
            rejected_rewards.sum(),
            (chosen_rewards > rejected_rewards).float().sum(),
            (chosen_rewards - rejected_rewards).sum(),
            chosen_logps.detach().float().sum(),
            rejected_logps.detach().float().sum(),
            torch.tensor(float(chosen_mask.numel()), device=device),
            entropy.float().sum() if entropy is not None else zero,
            chosen_mask.float().sum(),
            mean_logits.float()[chosen_mask].sum() if mean_logits is not None else zero,
            (~chosen_mask).float().sum(),
            mean_logits.float()[~chosen_mask].sum() if mean_logits is not None else zero,
            top1[chosen_mask].float().sum() if top1 is not None else zero,
            torch.as_tensor(attention_tokens, device=device).float().sum(),
        ]
        return torch.stack([v.float() for v in values])


def metrics_from_sums(sums: list[float]) -> dict[str, float]:
    """TRL's metric names from the (possibly summed over processes) values of :func:`metric_sums`."""
    s = dict(zip(METRIC_SUM_FIELDS, sums))

    def ratio(numerator: str, denominator: str) -> float:
        return s[numerator] / s[denominator] if s[denominator] > 0 else 0.0

    return {
        "rewards/chosen": ratio("chosen_rewards", "pairs"),
        "rewards/rejected": ratio("rejected_rewards", "pairs"),
        "rewards/accuracies": ratio("correct", "pairs"),
        "rewards/margins": ratio("margins", "pairs"),
        "logps/chosen": ratio("chosen_logps", "pairs"),
        "logps/rejected": ratio("rejected_logps", "pairs"),
        "entropy": ratio("entropy", "tokens"),
        "logits/chosen": ratio("chosen_logits", "chosen_tokens"),
        "logits/rejected": ratio("rejected_logits", "rejected_tokens"),
        "mean_token_accuracy": ratio("chosen_top1", "chosen_tokens"),
    }
