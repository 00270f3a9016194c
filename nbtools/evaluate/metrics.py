"""Preference metrics for base vs tuned, each with a paired bootstrap 95% interval.

Every metric here is the mean of a per-pair quantity, so one bootstrap draw of pair
indices serves all metrics of both models at once: that is what makes the intervals
*paired* (the tuned-minus-base difference is measured on the same resampled pairs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .logprobs import PairLogProbs

CONFIDENCE = 0.95

# Names of the metrics, in the order tables and plots show them, with what they mean.
METRIC_HELP = {
    "preference_accuracy": "share of pairs where log p(chosen) > log p(rejected), summed over tokens",
    "preference_accuracy_normalized": "the same with log-probs divided by the answer's token count",
    "logprob_margin": "mean of log p(chosen) - log p(rejected)",
    "chosen_logprob": "mean summed log-prob of the chosen answers",
    "rejected_logprob": "mean summed log-prob of the rejected answers",
    "reward_accuracy": "DPO implicit reward: share of pairs with r(chosen) > r(rejected); 0 for the base by definition",
    "reward_margin": "DPO implicit reward: mean r(chosen) - r(rejected); 0 for the base by definition",
}
METRICS = tuple(METRIC_HELP)
# Metrics that compare the two models on the same footing (the reward ones do not: base is 0).
COMPARABLE_METRICS = METRICS[:5]


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap interval."""

    value: float
    low: float
    high: float

    def overlaps(self, other: "Estimate") -> bool:
        return not (self.high < other.low or other.high < self.low)


def per_pair_values(base: PairLogProbs, tuned: PairLogProbs, beta: float) -> dict[str, dict[str, np.ndarray]]:
    """The per-pair quantity behind each metric, for ``"base"`` and ``"tuned"``.

    The DPO implicit reward is ``beta * (log p_tuned - log p_base)``; the base model is its
    own reference, so its rewards are exactly zero.
    """
    if len(base) != len(tuned):
        raise ValueError(f"base has {len(base)} pairs but tuned has {len(tuned)}; score the same pairs with both")
    chosen_reward = beta * (tuned.chosen - base.chosen)
    rejected_reward = beta * (tuned.rejected - base.rejected)
    values = {}
    for name, scores in (("base", base), ("tuned", tuned)):
        values[name] = {
            "preference_accuracy": (scores.chosen > scores.rejected).astype(float),
            "preference_accuracy_normalized": (scores.chosen_mean > scores.rejected_mean).astype(float),
            "logprob_margin": scores.chosen - scores.rejected,
            "chosen_logprob": scores.chosen.astype(float),
            "rejected_logprob": scores.rejected.astype(float),
        }
    zeros = np.zeros(len(base))
    values["base"]["reward_accuracy"] = zeros
    values["base"]["reward_margin"] = zeros
    values["tuned"]["reward_accuracy"] = (chosen_reward > rejected_reward).astype(float)
    values["tuned"]["reward_margin"] = chosen_reward - rejected_reward
    return values


def bootstrap_indices(n_pairs: int, n_resamples: int = 2000, seed: int = 0) -> np.ndarray:
    """``(n_resamples, n_pairs)`` pair indices drawn with replacement; shared by every metric."""
    if n_pairs < 1:
        raise ValueError("cannot bootstrap zero pairs")
    return np.random.default_rng(seed).integers(0, n_pairs, size=(n_resamples, n_pairs))


def bootstrap_mean(values: np.ndarray, indices: np.ndarray, confidence: float = CONFIDENCE) -> Estimate:
    """Mean of ``values`` with a percentile bootstrap interval over the given resamples."""
    values = np.asarray(values, dtype=float)
    means = values[indices].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return Estimate(float(values.mean()), float(low), float(high))


@dataclass
class PreferenceEvaluation:
    """Base and tuned metrics (with intervals), their paired differences and warnings."""

    n_pairs: int
    beta: float
    base: dict[str, Estimate]
    tuned: dict[str, Estimate]
    difference: dict[str, Estimate]  # tuned - base, paired, for the comparable metrics
    flipped: list[dict] = field(default_factory=list)  # see flipped_pairs()
    warnings: list[str] = field(default_factory=list)
    n_resamples: int = 2000
    seed: int = 0

    @property
    def tuned_better(self) -> bool:
        """Tuned preference accuracy above base with non-overlapping 95% intervals."""
        base, tuned = self.base["preference_accuracy"], self.tuned["preference_accuracy"]
        return tuned.value > base.value and not tuned.overlaps(base)


def compare_models(
    base: PairLogProbs,
    tuned: PairLogProbs,
    beta: float,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> PreferenceEvaluation:
    """All metrics for both models on the same pairs; deterministic for a given ``seed``."""
    values = per_pair_values(base, tuned, beta)
    indices = bootstrap_indices(len(base), n_resamples, seed)
    result = {side: {m: bootstrap_mean(values[side][m], indices, confidence) for m in METRICS} for side in values}
    difference = {
        m: bootstrap_mean(values["tuned"][m] - values["base"][m], indices, confidence) for m in COMPARABLE_METRICS
    }
    evaluation = PreferenceEvaluation(
        n_pairs=len(base),
        beta=beta,
        base=result["base"],
        tuned=result["tuned"],
        difference=difference,
        flipped=flipped_pairs(base, tuned),
        n_resamples=n_resamples,
        seed=seed,
    )
    warning = falling_chosen_warning(difference["chosen_logprob"], result["base"], result["tuned"])
    if warning:
        evaluation.warnings.append(warning)
    return evaluation


def falling_chosen_warning(
    chosen_difference: Estimate, base: dict[str, Estimate], tuned: dict[str, Estimate]
) -> Optional[str]:
    """Warn when tuning lowered the chosen answers' log-prob beyond doubt.

    DPO only optimises the *gap* between chosen and rejected, so it can widen the gap by
    pushing both down; the model then drifts away from answers it was told are good.
    """
    if chosen_difference.high >= 0:
        return None
    return (
        f"The tuned model gives the chosen answers a lower log-probability than the base model "
        f"({tuned['chosen_logprob'].value:.2f} vs {base['chosen_logprob'].value:.2f}; difference "
        f"{chosen_difference.value:.2f}, 95% CI [{chosen_difference.low:.2f}, {chosen_difference.high:.2f}]). "
        "DPO widened the margin partly by pushing good answers down, a known failure mode. "
        "Check the answers in the model lab; if they degrade, lower the learning rate, raise beta, "
        "train fewer epochs, or add an SFT term (loss_type ['sigmoid', 'sft'])."
    )


def verdicts(scores: PairLogProbs) -> np.ndarray:
    """Per pair: does the model prefer the chosen answer (summed log-probs)?"""
    return scores.chosen > scores.rejected


def flipped_pairs(base: PairLogProbs, tuned: PairLogProbs) -> list[dict]:
    """Pairs whose verdict changed: ``"fixed"`` (tuned now prefers chosen) or ``"broken"``."""
    base_ok, tuned_ok = verdicts(base), verdicts(tuned)
    rows = []
    for index in np.flatnonzero(base_ok != tuned_ok):
        rows.append(
            {
                "index": int(index),
                "direction": "fixed" if tuned_ok[index] else "broken",
                "base_margin": float(base.chosen[index] - base.rejected[index]),
                "tuned_margin": float(tuned.chosen[index] - tuned.rejected[index]),
            }
        )
    return rows


def interval_headline(what: str, base: float, base_ci, tuned: float, tuned_ci, better: str, same: str) -> str:
    """``what: base v [lo, hi] -> tuned v [lo, hi]`` and whether the two 95% intervals separate (``better``: how
    the tuned model is better, e.g. "is better"; ``same``: the overlap's reading), for every base-vs-tuned headline."""
    line = (f"{what}: base {base:.2f} [{base_ci[0]:.2f}, {base_ci[1]:.2f}] -> tuned {tuned:.2f} "
            f"[{tuned_ci[0]:.2f}, {tuned_ci[1]:.2f}]")
    if tuned_ci[0] > base_ci[1]:
        return line + f"\nthe 95% intervals do not overlap: the tuned model {better} beyond sampling noise"
    if base_ci[0] > tuned_ci[1]:
        return line + f"\nthe 95% intervals do not overlap: the tuned model {better.replace('better', 'WORSE')} than " \
                      "the base model"
    return line + f"\nthe 95% intervals overlap: {same} beyond sampling noise"

