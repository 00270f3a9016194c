"""Judged win rates (no model needed): ties, intervals, position bias, the reference judge."""

import pytest

from nbtools.evaluate.judge import judge_rows, reference_judge, reference_score, win_rate


def rows(n, tuned="It is a red circle.", base="It is a blue circle."):
    return [{"prompt": "What colour is the shape?", "base": base, "tuned": tuned,
             "chosen": "It is a red circle.", "rejected": "It is a blue circle."} for _ in range(n)]


def test_win_rate_counts_ties_half_with_a_seeded_interval():
    result = win_rate(["win"] * 6 + ["loss"] * 2 + ["tie"] * 2, n_resamples=1000, seed=0)
    assert (result.wins, result.losses, result.ties, result.n) == (6, 2, 2, 10)
    assert result.rate == pytest.approx(0.7)
    assert result.low < 0.7 < result.high
    assert result == win_rate(["win"] * 6 + ["loss"] * 2 + ["tie"] * 2, n_resamples=1000, seed=0)
    assert result.to_dict()["ci95"] == [result.low, result.high]
    with pytest.raises(ValueError, match="'win', 'loss' or 'tie'; got \\['draw'\\]"):
        win_rate(["win", "draw"])


def test_reference_judge_prefers_the_answer_closer_to_chosen():
    judge = reference_judge("It is a red circle.", "It is a blue circle.")
    assert judge("q", "A red circle.", "A blue circle.") == "a"
    assert judge("q", "blue circle", "red circle it is") == "b"
    assert judge("q", "A green circle.", "A yellow circle.") == "tie"
    assert reference_score("It is a red circle.", "It is a red circle.", "It is a blue circle.") > 0


def test_reference_judge_win_rate_over_rows():
    result, outcomes = judge_rows(rows(8))
    assert outcomes == ["win"] * 8 and result.rate == 1.0
    result, outcomes = judge_rows(rows(4, tuned="It is a blue circle.", base="It is a red circle."))
    assert outcomes == ["loss"] * 4 and result.rate == 0.0


def test_custom_judge_sees_answers_in_random_order():
    """A judge that always picks the first answer must not hand the tuned model a win."""
    seen = []

    def first_wins(prompt, a, b):
        seen.append(a)
        return "a"

    result, outcomes = judge_rows(rows(40), judge=first_wins, seed=1)
    tuned_first = sum(a == "It is a red circle." for a in seen)
    assert 10 < tuned_first < 30
    assert outcomes.count("win") == tuned_first
    assert result.low < 0.5 < result.high


def test_bad_judge_output_and_missing_references_are_explained():
    with pytest.raises(ValueError, match="judge returned 'A' for row 0"):
        judge_rows(rows(1), judge=lambda p, a, b: "A")
    with pytest.raises(ValueError, match="row 0 has no chosen/rejected"):
        judge_rows([{"prompt": "q", "base": "x", "tuned": "y"}])
