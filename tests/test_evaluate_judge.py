"""Judged win rates (no model needed): ties, intervals, position bias, the reference judge, the judges of
nbtools.judges (scoring and pairwise) and a pairwise function passed the wrong way."""

import pytest

from nbtools.evaluate.win_rate import judge_rows, win_rate
from nbtools.judges import JudgeError, PairReferenceJudge, PairwiseJudge, ReferenceJudge, VocabularyJudge, prefer
from nbtools.judges import reference_score


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
    judge = PairReferenceJudge("It is a red circle.", "It is a blue circle.")
    assert prefer(judge, "q", [], "A red circle.", "A blue circle.") == "a"
    assert prefer(judge, "q", [], "blue circle", "red circle it is") == "b"
    assert prefer(judge, "q", [], "A green circle.", "A yellow circle.") == "tie"
    # (1 + similarity to chosen - similarity to rejected) / 2; the two answers share 4 of their 5 words
    assert judge("q", [], ["It is a red circle.", "It is a blue circle."]) == pytest.approx([0.6, 0.4])
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

    result, outcomes = judge_rows(rows(40), judge=PairwiseJudge(first_wins), seed=1)
    assert len(seen) == 40  # asked once per row
    tuned_first = sum(a == "It is a red circle." for a in seen)
    assert 10 < tuned_first < 30
    assert outcomes.count("win") == tuned_first
    assert result.low < 0.5 < result.high


def test_a_scoring_judge_decides_rows_with_the_chosen_answer_as_reference():
    result, outcomes = judge_rows(rows(6), judge=VocabularyJudge(["red", "blue"]))
    assert outcomes == ["win"] * 6 and result.rate == 1.0
    _, outcomes = judge_rows(rows(3, tuned="A red one.", base="A red circle, I think."),
                             judge=VocabularyJudge(["red", "blue"]))
    assert outcomes == ["tie"] * 3  # both name the chosen colour and no other


def test_a_pairwise_function_passed_as_it_is_is_refused_with_the_fix():
    def first_wins(prompt, a, b):
        return "a"

    with pytest.raises(TypeError, match=r"judge_rows\(judge=...\): a judge is called as judge\(prompt, images, "
                                        r"answers, reference=None\).*first_wins\(prompt, a, b\) looks like a "
                                        r"pairwise judge.*fix: pass PairwiseJudge\(first_wins\)"):
        judge_rows(rows(1), judge=first_wins)
    with pytest.raises(TypeError, match="a judge is called as .* got str"):
        judge_rows(rows(1), judge="vocabulary")


def test_bad_judge_output_and_missing_references_are_explained():
    with pytest.raises(JudgeError, match="row 0: the pairwise judge <lambda> returned 'A'; it must return 'a', 'b' "
                                         "or 'tie'"):
        judge_rows(rows(1), judge=PairwiseJudge(lambda p, a, b: "A"))
    with pytest.raises(JudgeError, match="row 0: the judge ReferenceJudge\\(\\) cannot judge this prompt"):
        judge_rows([{"prompt": "q", "base": "x", "tuned": "y"}], judge=ReferenceJudge())  # no reference
    with pytest.raises(ValueError, match="row 0 has no chosen/rejected"):
        judge_rows([{"prompt": "q", "base": "x", "tuned": "y"}])
