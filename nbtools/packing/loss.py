"""DPO losses and TRL-named metrics from summed log-probs (the packed path's counterpart of TRL's loss code).

Every loss type TRL 1.16's ``DPOTrainer`` accepts, written from its definition (notation: ``r_w``, ``r_l`` the
chosen / rejected log-ratios log π(y|x) − log π_ref(y|x) of a pair, β the DPO beta, σ the logistic function,
``Δ = s_w − s_l`` the difference of the f-divergence scores below, which is ``r_w − r_l`` for plain DPO):

===============  =============================================================================================
``sigmoid``      DPO (Rafailov et al. 2023): −log σ(βΔ)
``hinge``        SLiC (Zhao et al. 2023): max(0, 1 − βΔ)
``ipo``          IPO (Azar et al. 2023): (Δ̄ − 1/(2β))², Δ̄ the difference of the per-token scores s/|y|
``sigmoid_norm`` length-normalised DPO: −log σ(βΔ̄)
``exo_pair``     EXO (Ji et al. 2024): KL(q ‖ p) of the two-answer distributions q = (σ(βΔ), σ(−βΔ)) and the
                 smoothed labels p = (1 − ε, ε), ε = ``label_smoothing`` (> 0)
``robust``       rDPO (Chowdhury et al. 2024): labels flipped with probability ε = ``label_smoothing``:
                 [(1 − ε)(−log σ(βΔ)) − ε(−log σ(−βΔ))] / (1 − 2ε)
``nca_pair``     NCA (Chen et al. 2024): −log σ(βr_w) − ½ log σ(−βr_w) − ½ log σ(−βr_l)
``bco_pair``     BCO on pairs (Jung et al. 2024): −log σ(βr_w) − log σ(−βr_l)
``sppo_hard``    SPPO with hard win probabilities (Wu et al. 2024): (r_w − 1/(2β))² + (r_l + 1/(2β))²
``aot``          AOT (Melnyk et al. 2024): the batch's policy margins log π(y_w) − log π(y_l) and reference
                 margins, each sorted, δ = their difference rank by rank; −(1 − ε) log σ(βδ) − ε log σ(−βδ)
``aot_unpaired`` the same with δ = sorted r_w − sorted r_l
``apo_zero``     APO-zero (D'Oosterlinck et al. 2024): (1 − σ(βr_w)) + σ(βr_l)
``apo_down``     APO-down: σ(βr_w) + (1 − σ(β(r_w − r_l)))
``discopop``     DiscoPOP / LRML (Lu et al. 2024), z = βΔ, m = σ(z/τ), τ = ``discopop_tau``:
                 (1 − m)(−log σ(z)) + m·exp(−z)
``sft``          the chosen answers' negative log-likelihood per token, over the whole batch
===============  =============================================================================================

Each pairwise loss is a mean over the batch's pairs; the weighted sum over ``loss_type`` entries is the loss, as
TRL adds them. Options (TRL's names):

* ``f_divergence_type`` (f-DPO, Wang et al. 2023): the scores s = f'(π/π_ref) replace the log-ratios in the
  losses built on Δ (``sigmoid``, ``sigmoid_norm``, ``hinge``, ``ipo``, ``exo_pair``, ``robust``, ``discopop``):
  forward KL 1 − e^(−r), Jensen-Shannon log 2 + log σ(r), α-divergence (e^((α−1)r) − 1)/(α − 1) with
  α = ``f_alpha_divergence_coef`` (r itself at α = 1). The other losses have no f-divergence form.
* ``ld_alpha`` (LD-DPO, Liu et al. 2024): in each pair, answer tokens past the shorter answer's length count
  ``ld_alpha`` times in the summed log-probs (policy and reference); ``sft`` keeps the plain sums.
* ``use_weighting`` (WPO, Zhou et al. 2024): each pair's loss is multiplied by w_w·w_l, w = exp(mean over the
  answer's tokens of log p(token) − log Σ_v p(v)²) under the policy, without gradient.

None of these keeps state between steps (TRL 1.16's ``bco_pair`` has no running reward mean), so gradient
accumulation and several processes need nothing beyond what plain DPO needs; ``aot`` sorts within each process's
batch, as TRL does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F

from nbtools.config import F_DIVERGENCE_LOSS_TYPES, F_DIVERGENCES, SORTING_LOSS_TYPES, TRL_LOSS_TYPES

# The loss types of TRL 1.16's DPOTrainer, all implemented here (alone or weighted together).
PACKED_LOSS_TYPES = TRL_LOSS_TYPES
PAIRWISE_LOSS_TYPES = tuple(t for t in PACKED_LOSS_TYPES if t != "sft")


@dataclass(frozen=True)
class LossOptions:
    """The settings besides beta that change what a loss type computes (TRL's ``DPOConfig`` names and defaults)."""

    label_smoothing: float = 0.0
    discopop_tau: float = 0.05
    f_divergence_type: str = "reverse_kl"
    f_alpha_divergence_coef: float = 0.5
    ld_alpha: float | None = None
    use_weighting: bool = False

    @classmethod
    def of(cls, source: Any = None) -> "LossOptions":
        """From a mapping or any object carrying these names (a ``DPOConfig``, a ``RunConfig``); missing = default."""
        if source is None or isinstance(source, LossOptions):
            return source or cls()
        get = source.get if isinstance(source, dict) else (lambda name, default: getattr(source, name, default))
        values = {}
        for f in fields(cls):
            value = get(f.name, f.default)
            values[f.name] = getattr(value, "value", value)  # an enum (older TRL's FDivergenceType) -> its string
        return cls(**values)


def f_divergence_scores(logratios: torch.Tensor, kind: str = "reverse_kl", alpha: float = 0.5) -> torch.Tensor:
    """f'(u) at u = π/π_ref = exp(logratios): the score an f-divergence-regularised DPO compares."""
    if kind == "reverse_kl":
        return logratios
    if kind == "forward_kl":
        return 1 - torch.exp(-logratios)
    if kind == "js_divergence":
        return math.log(2.0) + F.logsigmoid(logratios)
    if kind == "alpha_divergence":
        if abs(alpha - 1.0) < 1e-6:  # the limit is log u
            return logratios
        exponent = ((alpha - 1.0) * logratios).float()
        # keep exp() finite in the inputs' own dtype (fp16 overflows past e^11)
        limit = 11.0 if logratios.dtype == torch.float16 else 80.0
        return ((torch.exp(exponent.clamp(max=limit)) - 1.0) / (alpha - 1.0)).to(logratios.dtype)
    raise ValueError(f"f_divergence_type must be one of {', '.join(F_DIVERGENCES)}, got {kind!r}")


def _per_token(scores: torch.Tensor, lengths: torch.Tensor | None, loss_type: str) -> torch.Tensor:
    if lengths is None:
        raise ValueError(f"the {loss_type} loss needs chosen_lengths and rejected_lengths")
    return scores / lengths.to(scores.dtype).clamp(min=1)


def _smoothed_logistic(margin: torch.Tensor, beta: float, epsilon: float) -> torch.Tensor:
    """−(1 − ε) log σ(β·margin) − ε log σ(−β·margin): logistic loss against labels flipped with probability ε."""
    return -(1 - epsilon) * F.logsigmoid(beta * margin) - epsilon * F.logsigmoid(-beta * margin)


def pair_losses(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
    loss_type: str = "sigmoid",
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
    options: LossOptions | None = None,
) -> torch.Tensor:
    """Per-pair values of one pairwise loss type (see the module text); ``aot*`` pair the batch's sorted values."""
    options = options or LossOptions()
    chosen_ratio = chosen_logps - ref_chosen_logps
    rejected_ratio = rejected_logps - ref_rejected_logps
    if options.f_divergence_type != "reverse_kl" and loss_type not in F_DIVERGENCE_LOSS_TYPES:
        raise ValueError(f"f_divergence_type={options.f_divergence_type!r} does not apply to the {loss_type} loss "
                         f"(only to {', '.join(F_DIVERGENCE_LOSS_TYPES)})")
    chosen_score = f_divergence_scores(chosen_ratio, options.f_divergence_type, options.f_alpha_divergence_coef)
    rejected_score = f_divergence_scores(rejected_ratio, options.f_divergence_type, options.f_alpha_divergence_coef)
    delta = chosen_score - rejected_score
    epsilon = options.label_smoothing

    if loss_type == "sigmoid":
        return -F.logsigmoid(beta * delta)
    if loss_type == "hinge":
        return torch.relu(1 - beta * delta)
    if loss_type in ("ipo", "sigmoid_norm"):
        # per-token scores: the summed ones grow with the answers' lengths (TRL normalises both losses so)
        mean_delta = (_per_token(chosen_score, chosen_lengths, loss_type)
                      - _per_token(rejected_score, rejected_lengths, loss_type))
        if loss_type == "ipo":
            return (mean_delta - 1 / (2 * beta)) ** 2  # IPO's regression target 1/(2τ), with τ = beta
        return -F.logsigmoid(beta * mean_delta)
    if loss_type == "exo_pair":
        if epsilon <= 0:
            raise ValueError("the exo_pair loss needs label_smoothing > 0 (its target distribution holds log ε); "
                             "the EXO paper suggests 1e-3")
        z = beta * delta
        log_q_chosen, log_q_rejected = F.logsigmoid(z), F.logsigmoid(-z)
        return (log_q_chosen.exp() * (log_q_chosen - math.log1p(-epsilon))
                + log_q_rejected.exp() * (log_q_rejected - math.log(epsilon)))
    if loss_type == "robust":
        clean, flipped = -F.logsigmoid(beta * delta), -F.logsigmoid(-beta * delta)
        return ((1 - epsilon) * clean - epsilon * flipped) / (1 - 2 * epsilon)
    if loss_type == "nca_pair":
        return (-F.logsigmoid(beta * chosen_ratio) - 0.5 * F.logsigmoid(-beta * chosen_ratio)
                - 0.5 * F.logsigmoid(-beta * rejected_ratio))
    if loss_type == "bco_pair":
        return -F.logsigmoid(beta * chosen_ratio) - F.logsigmoid(-beta * rejected_ratio)
    if loss_type == "sppo_hard":
        target = 1 / (2 * beta)
        return (chosen_ratio - target) ** 2 + (rejected_ratio + target) ** 2
    if loss_type == "aot":
        policy_margins = torch.sort(chosen_logps - rejected_logps, dim=0).values
        reference_margins = torch.sort(ref_chosen_logps - ref_rejected_logps, dim=0).values
        return _smoothed_logistic(policy_margins - reference_margins, beta, epsilon)
    if loss_type == "aot_unpaired":
        margin = torch.sort(chosen_ratio, dim=0).values - torch.sort(rejected_ratio, dim=0).values
        return _smoothed_logistic(margin, beta, epsilon)
    if loss_type == "apo_zero":
        return (1 - torch.sigmoid(beta * chosen_ratio)) + torch.sigmoid(beta * rejected_ratio)
    if loss_type == "apo_down":
        return torch.sigmoid(beta * chosen_ratio) + (1 - torch.sigmoid(beta * (chosen_ratio - rejected_ratio)))
    if loss_type == "discopop":
        z = beta * delta
        mix = torch.sigmoid(z / options.discopop_tau)
        return (1 - mix) * -F.logsigmoid(z) + mix * torch.exp(-z)
    raise ValueError(f"pairwise loss_type must be one of {', '.join(PAIRWISE_LOSS_TYPES)}, got {loss_type!r}")


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
    options: LossOptions | None = None,
    pair_weights: torch.Tensor | None = None,
    sft_chosen_logps: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted sum of the given losses, as TRL adds them: each pairwise loss is a mean over pairs;
    ``sft`` is the chosen answers' negative log-likelihood per token over the whole batch.

    ``pair_weights``: WPO's per-pair weights (:func:`wpo_pair_weights`), multiplying each pair's loss.
    ``sft_chosen_logps``: the chosen answers' plain summed log-probs when ``chosen_logps`` are LD-DPO's weighted
    ones (:func:`length_desensitized`); default ``chosen_logps``.
    """
    options = options or LossOptions()
    loss_types = [loss_types] if isinstance(loss_types, str) else list(loss_types)
    weights = list(loss_weights) if loss_weights else [1.0] * len(loss_types)
    if len(weights) != len(loss_types):
        raise ValueError(f"{len(loss_types)} loss types but {len(weights)} weights")
    if pair_weights is not None:
        refused = [t for t in loss_types if t in SORTING_LOSS_TYPES or t == "sft"]
        if refused:
            raise ValueError(f"WPO weighting (use_weighting) cannot weight the {', '.join(refused)} loss per pair: "
                             "aot losses sort the pairs, sft is one value over the batch's tokens (TRL 1.16 refuses "
                             "or fails on these too)")
    total = chosen_logps.new_zeros(())
    for loss_type, weight in zip(loss_types, weights):
        if loss_type == "sft":
            chosen = chosen_logps if sft_chosen_logps is None else sft_chosen_logps
            part = -chosen.sum() / chosen_lengths.sum().clamp(min=1)
        else:
            values = pair_losses(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=beta,
                                 loss_type=loss_type, chosen_lengths=chosen_lengths,
                                 rejected_lengths=rejected_lengths, options=options)
            part = (values * pair_weights if pair_weights is not None else values).mean()
        total = total + weight * part
    return total


# --- per-token reweighting: LD-DPO's sums and WPO's pair weights -------------------------------------------

def _answer_slots(token_rows: torch.Tensor, token_is_chosen: torch.Tensor) -> torch.Tensor:
    """Per scored token: 2·pair for a chosen token, 2·pair + 1 for a rejected one."""
    return token_rows * 2 + (~token_is_chosen.bool()).long()


def length_desensitized(
    token_logps: torch.Tensor,
    token_rows: torch.Tensor,
    token_is_chosen: torch.Tensor,
    pairs: int,
    alpha: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """LD-DPO's (chosen, rejected) sums per pair: tokens past the shorter answer's length count ``alpha`` times.

    ``token_logps`` / ``token_rows`` / ``token_is_chosen``: one entry per scored token, each answer's tokens in
    their order (what :class:`~nbtools.packing.logps.PackedLogps` holds).
    """
    slots = _answer_slots(token_rows, token_is_chosen)
    counts = torch.bincount(slots, minlength=2 * pairs)
    # each token's position in its answer: its rank among the tokens of the same slot (a stable sort keeps order)
    order = torch.argsort(slots, stable=True)
    starts = counts.cumsum(0) - counts
    ranks = torch.arange(slots.numel(), device=slots.device) - starts[slots[order]]
    position = torch.empty_like(slots)
    position[order] = ranks
    shared = torch.minimum(counts[0::2], counts[1::2])
    scale = torch.where(position < shared[token_rows], 1.0, float(alpha)).to(token_logps.dtype)
    weighted = token_logps * scale
    sums = torch.zeros(2 * pairs, dtype=token_logps.dtype, device=token_logps.device).index_add(0, slots, weighted)
    return sums[0::2], sums[1::2]


def wpo_pair_weights(
    token_logps: torch.Tensor,
    log_sum_sq_probs: torch.Tensor,
    token_rows: torch.Tensor,
    token_is_chosen: torch.Tensor,
    pairs: int,
) -> torch.Tensor:
    """WPO's weight of each pair, w_chosen·w_rejected, w = exp(mean over the answer's tokens of
    log p(token) − log Σ_v p(v)²) (the policy's own sampling distribution, so the weight does not favour
    answers it finds generically likely); no gradient."""
    with torch.no_grad():
        slots = _answer_slots(token_rows, token_is_chosen)
        counts = torch.bincount(slots, minlength=2 * pairs).clamp(min=1)
        aligned = (token_logps - log_sum_sq_probs).float()
        sums = torch.zeros(2 * pairs, dtype=aligned.dtype, device=aligned.device).index_add(0, slots, aligned)
        means = sums / counts
        return torch.exp(means[0::2] + means[1::2]).to(token_logps.dtype)



def reweighted_logps(policy, reference, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, main: torch.Tensor,
                     options: LossOptions):
    """(policy, reference chosen, reference rejected, WPO weights of the ``main`` rows or None) for the loss.

    ``policy`` / ``reference``: :class:`~nbtools.packing.logps.PackedLogps` of the two passes (``reference`` None
    when the reference sums were precomputed). With ``ld_alpha`` the ``main`` rows' sums become LD-DPO's weighted
    ones (a new ``policy`` object); other rows (mDPO image-contrast rows, whose two sides are the same answer)
    keep theirs. Unchanged values when neither ``ld_alpha`` nor ``use_weighting`` is set.
    """
    import dataclasses

    pairs = policy.chosen.shape[0]
    main = main.to(policy.chosen.device)
    pair_weights = None
    if options.use_weighting:
        log_sum_sq_probs = policy.stats.get("log_sum_sq_probs")
        if log_sum_sq_probs is None:
            raise ValueError("use_weighting needs log Σ p² of the policy's tokens: packed_logps(with_stats=True)")
        pair_weights = wpo_pair_weights(policy.token_logps, log_sum_sq_probs, policy.token_rows,
                                        policy.token_is_chosen, pairs)[main]
    if options.ld_alpha is None:
        return policy, ref_chosen, ref_rejected, pair_weights
    if reference is None:
        raise ValueError("ld_alpha reweights each answer's tokens, and precomputed reference log-probs are plain sums: "
                         "compute the reference in the step (no ref_chosen_logps in the batch)")
    chosen, rejected = length_desensitized(policy.token_logps, policy.token_rows, policy.token_is_chosen, pairs,
                                           options.ld_alpha)
    policy = dataclasses.replace(policy, chosen=torch.where(main, chosen, policy.chosen),
                                 rejected=torch.where(main, rejected, policy.rejected))
    ref_chosen_ld, ref_rejected_ld = length_desensitized(reference.token_logps, reference.token_rows,
                                                         reference.token_is_chosen, pairs, options.ld_alpha)
    ref_chosen = torch.where(main, ref_chosen_ld.to(ref_chosen.dtype), ref_chosen)
    ref_rejected = torch.where(main, ref_rejected_ld.to(ref_rejected.dtype), ref_rejected)
    return policy, ref_chosen, ref_rejected, pair_weights

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
