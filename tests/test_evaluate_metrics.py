"""Preference metrics on hand-computed log-probs (no model needed)."""

import json

import numpy as np
import pytest

from nbtools.evaluate.logprobs import PairLogProbs
from nbtools.evaluate.metrics import (
    Estimate,
    bootstrap_indices,
    bootstrap_mean,
    compare_models,
    flipped_pairs,
)
from nbtools.evaluate.report import evaluation_to_dict, plot_evaluation, table_html, table_text

# Four pairs. Base prefers chosen on pairs 0 and 2; pair 3 is a tie (not a win).
BASE = PairLogProbs(
    chosen=[-1.0, -2.0, -3.0, -4.0],
    rejected=[-2.0, -1.0, -5.0, -4.0],
    chosen_tokens=[1, 4, 3, 8],
    rejected_tokens=[8, 1, 1, 1],
)
# Tuned prefers chosen everywhere.
TUNED = PairLogProbs(
    chosen=[-0.5, -1.0, -3.0, -2.0],
    rejected=[-3.0, -2.0, -6.0, -5.0],
    chosen_tokens=[1, 4, 3, 8],
    rejected_tokens=[8, 1, 1, 1],
)


def test_hand_computed_metrics():
    ev = compare_models(BASE, TUNED, beta=0.1, n_resamples=500, seed=0)
    assert ev.n_pairs == 4
    assert ev.base["preference_accuracy"].value == pytest.approx(0.5)
    assert ev.tuned["preference_accuracy"].value == pytest.approx(1.0)
    # per-token: base chosen [-1, -.5, -1, -.5] vs rejected [-.25, -1, -5, -4] -> F T T T
    assert ev.base["preference_accuracy_normalized"].value == pytest.approx(0.75)
    assert ev.base["logprob_margin"].value == pytest.approx((1 - 1 + 2 + 0) / 4)
    assert ev.tuned["logprob_margin"].value == pytest.approx((2.5 + 1 + 3 + 3) / 4)
    assert ev.base["chosen_logprob"].value == pytest.approx(-2.5)
    assert ev.tuned["rejected_logprob"].value == pytest.approx(-4.0)
    # rewards: 0.1 * [(.5+1), (1+1), (0+1), (2+1)] -> margin .1875, all positive
    assert ev.tuned["reward_margin"].value == pytest.approx(0.1875)
    assert ev.tuned["reward_accuracy"].value == pytest.approx(1.0)
    assert ev.base["reward_margin"] == Estimate(0.0, 0.0, 0.0)
    assert ev.difference["preference_accuracy"].value == pytest.approx(0.5)
    assert ev.warnings == []


def test_flipped_pairs_name_direction_and_margins():
    rows = flipped_pairs(BASE, TUNED)
    assert [(r["index"], r["direction"]) for r in rows] == [(1, "fixed"), (3, "fixed")]
    assert rows[0]["base_margin"] == pytest.approx(-1.0)
    assert rows[0]["tuned_margin"] == pytest.approx(1.0)
    # the other way round, the same pairs are broken
    assert [r["direction"] for r in flipped_pairs(TUNED, BASE)] == ["broken", "broken"]


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(7)
    values = rng.normal(0.3, 1.0, size=60)
    a = bootstrap_mean(values, bootstrap_indices(60, 1000, seed=3))
    b = bootstrap_mean(values, bootstrap_indices(60, 1000, seed=3))
    c = bootstrap_mean(values, bootstrap_indices(60, 1000, seed=4))
    assert a == b
    assert (a.low, a.high) != (c.low, c.high)
    assert a.value == pytest.approx(values.mean())
    assert a.low < a.value < a.high
    # the interval of a mean of 60 unit-variance values is about +-1.96/sqrt(60) = +-0.25
    assert 0.35 < a.high - a.low < 0.65
    constant = bootstrap_mean(np.full(10, 2.0), bootstrap_indices(10, 200))
    assert constant == Estimate(2.0, 2.0, 2.0)


def test_tuned_better_needs_non_overlapping_intervals():
    n = 80
    chosen = np.zeros(n)
    base_rejected = np.where(np.arange(n) % 2 == 0, -1.0, 1.0)  # base right on half
    strong = compare_models(
        PairLogProbs(chosen, base_rejected, np.ones(n), np.ones(n)),
        PairLogProbs(chosen, np.full(n, -1.0), np.ones(n), np.ones(n)),  # tuned right on all
        beta=0.1,
    )
    assert strong.tuned_better
    assert strong.base["preference_accuracy"].high < strong.tuned["preference_accuracy"].low
    same = compare_models(
        PairLogProbs(chosen, base_rejected, np.ones(n), np.ones(n)),
        PairLogProbs(chosen + 0.01, base_rejected, np.ones(n), np.ones(n)),
        beta=0.1,
    )
    assert not same.tuned_better


def test_falling_chosen_logprob_warns():
    n = 30
    base = PairLogProbs(np.full(n, -2.0), np.full(n, -3.0), np.ones(n), np.ones(n))
    tuned = PairLogProbs(np.full(n, -4.0) + np.linspace(0, 0.1, n), np.full(n, -9.0), np.ones(n), np.ones(n))
    ev = compare_models(base, tuned, beta=0.1)
    assert len(ev.warnings) == 1
    assert "lower log-probability" in ev.warnings[0] and "sft" in ev.warnings[0]


def test_mismatched_pair_counts_are_refused():
    with pytest.raises(ValueError, match="base has 4 pairs but tuned has 2"):
        compare_models(BASE, PairLogProbs([0, 0], [0, 0], [1, 1], [1, 1]), beta=0.1)


def test_payload_shape_table_and_plot(tmp_path):
    ev = compare_models(BASE, TUNED, beta=0.1, n_resamples=200, seed=1)
    payload = json.loads(json.dumps(evaluation_to_dict(ev, data="val.jsonl")))
    assert payload["n_pairs"] == 4 and payload["data"] == "val.jsonl"
    assert payload["base"]["preference_accuracy"] == 0.5
    assert payload["tuned"]["reward_margin"] == pytest.approx(0.1875)
    lo, hi = payload["tuned"]["ci95"]["logprob_margin"]
    assert lo <= payload["tuned"]["logprob_margin"] <= hi
    assert payload["bootstrap"] == {"n_resamples": 200, "seed": 1, "paired": True}
    text = table_text(payload)
    assert "preference_accuracy" in text and "100.0%" in text and "4 pairs" in text
    html = table_html(payload)
    assert html.count("<tr>") == 1 + 7 and "50.0%" in html
    plot_evaluation(payload, tmp_path / "plots" / "evaluation.png")
    assert (tmp_path / "plots" / "evaluation.png").stat().st_size > 5000
