"""Strict accuracy is the headline: an MCQ answer that names no option is wrong, even where the system's
forced choice (``<answer>`` appended, likeliest letter taken) would have been right. The forced-choice
accuracy and the forced rate are reported beside it; calibration pairs each confidence with the answer it
belongs to; the promotion gate compares strict accuracy."""

from __future__ import annotations

import pytest

from assets.evaluation.promotion import decide_promotion
from tests.evaluation.results_fixtures import row, scored
from training.evaluation.calibration import calibration_table
from training.evaluation.metrics import mcq_accuracy
from training.evaluation.results import EvalResultsError, validate_results

pytestmark = pytest.mark.timeout(60)


def forced(item_id: str, letter: str, confidence: float = 0.6, **kw) -> dict:
    return row(
        item_id, prediction=None, forced_prediction=letter, answer_forced=True, confidence=confidence, **kw
    )


def hand_made(**kw) -> list[dict]:
    """Gold A everywhere: answered right, answered wrong, forced right, forced wrong."""
    return [
        row("i0", prediction="A", confidence=0.9, **kw),
        row("i1", prediction="B", confidence=0.7, **kw),
        forced("i2", "A", 0.6, **kw),
        forced("i3", "B", 0.55, **kw),
    ]


def test_unparsed_answers_count_wrong_and_forced_choice_is_reported_beside():
    results = scored(hand_made())
    assert results["correct"].to_list() == [True, False, False, False]
    assert results["correct_forced"].to_list() == [True, False, True, False]
    acc = mcq_accuracy(results, n_resamples=200).row(0, named=True)
    assert acc["accuracy"] == 0.25 and acc["n_correct"] == 1  # strict: the headline
    assert acc["accuracy_forced"] == 0.5 and acc["n_forced"] == 2 and acc["forced_rate"] == 0.5


def test_a_forced_choice_never_sits_beside_a_parsed_answer():
    bad = row("i0", prediction="A", forced_prediction="B", answer_forced=True)
    with pytest.raises(EvalResultsError, match="forced_prediction beside a prediction"):
        validate_results(scored([bad]))
    # a stored frame whose strict score was computed from the forced letter is caught as well
    frame = scored(hand_made())
    frame = frame.with_columns(frame["correct_forced"].alias("correct"))
    with pytest.raises(EvalResultsError, match="whose correct disagrees"):
        validate_results(frame)


def test_calibration_pairs_each_confidence_with_the_answer_it_belongs_to():
    table = calibration_table(scored(hand_made()), protocol="mcq", n_bins=10).row(0, named=True)
    # the forced row i2's confidence 0.6 belongs to the forced letter A, which is right
    assert table["n"] == 4 and table["accuracy"] == 0.5


def test_promotion_compares_strict_accuracy():
    # the candidate answers item i0 itself and wrongly; the promoted one gave no answer there, but its forced
    # choice would have been right: strict accuracy ties (both wrong on i0), forced-choice would not
    candidate = scored([row("i0", prediction="B", checkpoint="stage2", mode="rwr")])
    promoted = scored([forced("i0", "A", checkpoint="stage1", mode="rwr")])
    d = decide_promotion(candidate, promoted, margin=0.0, min_items=1, n_resamples=100)
    assert d.difference == 0 and d.passed
