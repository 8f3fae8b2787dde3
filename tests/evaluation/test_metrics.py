"""Metrics on hand-made predictions with hand-computed values and intervals.

Bootstrap intervals are checked against exact values: for a 0/1 score with k of n correct, the mean of a
resample is Binomial(n, k/n) / n, so the percentile interval with many resamples is that distribution's
2.5 % and 97.5 % quantiles. For 5 of 10: P(X <= 1) = 11/1024 = 0.011 and P(X <= 2) = 56/1024 = 0.055
put the 2.5 % quantile at 2; P(X <= 7) = 968/1024 = 0.945 and P(X <= 8) = 1013/1024 = 0.989 put the
97.5 % quantile at 8: the interval is [0.2, 0.8]. For 6 of 10 (p = 0.6): P(X <= 2) = 0.012, P(X <= 3) =
0.055, P(X <= 8) = 0.954, P(X <= 9) = 0.994: [0.3, 0.9]. Each limit is at least 0.014 away from its
quantile's step, about 14 standard errors of an empirical CDF at 10,000 resamples, so a seeded run hits
the exact values. 18 of 20 (p = 0.9, P(X <= 14) = 0.011, P(X <= 15) = 0.043, P(X <= 19) = 0.878) gives the
asymmetric [0.75, 1.0], which the "basic" bootstrap would put at [0.8, 1.05].
"""

import math

import numpy as np
import polars as pl
import pytest

from tests.evaluation.results_fixtures import arm, row, scored
from training.evaluation.calibration import (
    calibration_table,
    expected_calibration_error,
    reliability_bins,
    reliability_of,
)
from training.evaluation.metrics import (
    NOT_GIVEN,
    Arm,
    MismatchedItemsError,
    bootstrap_ci,
    cdir_summary,
    compare,
    default_comparisons,
    mcq_accuracy,
    open_scores,
    paired_difference,
    retrieval_use,
)

FIVE_OF_TEN = [True] * 5 + [False] * 5
SIX_OF_TEN = [True] * 6 + [False] * 4


def tiny_bootstrap(x, n_resamples, seed, level=0.95):
    """An independent percentile bootstrap of the mean, ten lines of numpy."""
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=float)
    means = x[rng.integers(0, len(x), size=(n_resamples, len(x)))].mean(axis=1)
    return np.quantile(means, (1 - level) / 2), np.quantile(means, (1 + level) / 2)


# ---- bootstrap ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("values", "interval"),
    [
        (FIVE_OF_TEN, (0.2, 0.8)),
        (SIX_OF_TEN, (0.3, 0.9)),
        ([True] * 18 + [False] * 2, (0.75, 1.0)),
    ],
)
def test_bootstrap_matches_the_exact_binomial_interval(values, interval):
    low, high = bootstrap_ci(values, n_resamples=10_000, seed=0)
    assert (low, high) == pytest.approx(interval, abs=1e-12)


def test_bootstrap_degenerate_and_too_small():
    assert bootstrap_ci([1.0] * 7) == (1.0, 1.0)
    assert bootstrap_ci([0.0] * 3) == (0.0, 0.0)
    assert all(math.isnan(v) for v in bootstrap_ci([1.0]))
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci([1.0, float("nan")])


def test_bootstrap_agrees_with_an_independent_implementation():
    # paired differences in {-1, 0, 1}: no closed form, so compare with ten lines of numpy
    d = np.array([1] * 9 + [0] * 15 + [-1] * 6, dtype=float)
    ours = bootstrap_ci(d, n_resamples=20_000, seed=1)
    theirs = tiny_bootstrap(d, 20_000, seed=2)
    step = 1 / len(d)  # resampled means live on a grid of 1/n
    assert ours == pytest.approx(theirs, abs=step + 1e-9)
    assert ours[0] < d.mean() < ours[1]


def test_bootstrap_is_seeded_and_its_level_matters():
    d = np.array([1] * 9 + [0] * 15 + [-1] * 6, dtype=float)
    assert bootstrap_ci(d, n_resamples=2000, seed=5) == bootstrap_ci(d, n_resamples=2000, seed=5)
    w50 = np.diff(bootstrap_ci(d, n_resamples=4000, confidence_level=0.5))[0]
    w95 = np.diff(bootstrap_ci(d, n_resamples=4000, confidence_level=0.95))[0]
    assert w50 < w95


# ---- accuracy tables ------------------------------------------------------------------------------
def test_mcq_accuracy_by_hand():
    df = scored(arm(FIVE_OF_TEN) + arm(SIX_OF_TEN, mode="rwr"))
    t = mcq_accuracy(df)
    assert t.select(
        "protocol", "mode", "n", "n_correct", "accuracy", "ci_low", "ci_high", "chance"
    ).rows() == [
        ("mcq", "direct", 10, 5, 0.5, pytest.approx(0.2), pytest.approx(0.8), 0.5),
        ("mcq", "rwr", 10, 6, 0.6, pytest.approx(0.3), pytest.approx(0.9), 0.5),
    ]


def test_chance_is_the_mean_of_one_over_options():
    df = scored([row("a", n_options=2), row("b", n_options=4)])
    assert mcq_accuracy(df)["chance"].to_list() == [0.375]


def test_breakdown_counts_items_without_the_field():
    organs = ["chest", "chest", None, "head"]
    df = scored([row(f"i{i}", organ=o, prediction="A" if i != 1 else "B") for i, o in enumerate(organs)])
    t = mcq_accuracy(df, by="organ")
    assert t.select("organ", "n", "accuracy").rows() == [
        (NOT_GIVEN, 1, 1.0),
        ("chest", 2, 0.5),
        ("head", 1, 1.0),
    ]
    assert t["n"].sum() == len(organs)
    with pytest.raises(ValueError, match="breakdown 'colour'"):
        mcq_accuracy(df, by="colour")


def test_protocols_are_never_mixed():
    df = scored(
        arm(FIVE_OF_TEN)
        + [
            row("o1", protocol="open", gold="left lung", prediction="left lung"),
            row("o2", protocol="open", gold="left lung", prediction="lung"),
            row("o3", protocol="open", gold="the liver", prediction=None, confidence=None),
        ]
    )
    mcq, opn = mcq_accuracy(df), open_scores(df)
    assert mcq["protocol"].to_list() == ["mcq"] and mcq["n"].to_list() == [10]
    assert opn["protocol"].to_list() == ["open"] and opn["n"].to_list() == [3]
    r = opn.row(0, named=True)
    assert r["exact_match"] == pytest.approx(1 / 3)
    assert r["token_recall"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert r["judge_model"] is None and r["judge_accuracy"] is None
    assert mcq_accuracy(df.filter(pl.col("protocol") == "open")).is_empty()


def test_open_scores_refuse_a_partly_judged_group():
    df = scored([row(f"o{i}", protocol="open", gold="lung", prediction="lung") for i in range(3)])
    judged = df.with_columns(
        judge_model=pl.Series(["judge@1", None, None]), judge_correct=pl.Series([True, None, None])
    )
    with pytest.raises(ValueError, match="judged by"):
        open_scores(judged)
    fully = df.with_columns(judge_model=pl.lit("judge@1"), judge_correct=pl.Series([True, False, True]))
    assert open_scores(fully)["judge_accuracy"].to_list() == [pytest.approx(2 / 3)]


# ---- paired differences ---------------------------------------------------------------------------
def test_paired_difference_exact_interval():
    # A right on all ten, B on five: per-item differences are five 1s and five 0s -> the 5-of-10 interval
    a = scored(arm([True] * 10, mode="rwr"))
    b = scored(arm(FIVE_OF_TEN, mode="direct"))
    d = paired_difference(a, b, n_resamples=10_000, seed=0)
    assert (d.n, d.mean_a, d.mean_b, d.difference) == (10, 1.0, 0.5, 0.5)
    assert (d.ci_low, d.ci_high) == pytest.approx((0.2, 0.8))
    assert d.excludes_zero


def test_paired_difference_is_matched_by_item_not_by_position():
    a = scored(arm(FIVE_OF_TEN, mode="rwr"))
    b = scored(arm(FIVE_OF_TEN, mode="direct")).reverse()
    d = paired_difference(a, b)
    assert (d.difference, d.ci_low, d.ci_high) == (0.0, 0.0, 0.0)  # same answers on every item
    assert not d.excludes_zero


def test_paired_difference_refuses_mismatched_items():
    a = scored(arm(FIVE_OF_TEN, mode="rwr"))
    b = scored(arm(FIVE_OF_TEN, mode="direct")).filter(pl.col("item_id") != "i3")
    with pytest.raises(MismatchedItemsError, match=r"1 item\(s\) only in A \(e.g. \['i3'\]\), 0 only in B"):
        paired_difference(a, b)
    with pytest.raises(MismatchedItemsError, match="more than once"):
        paired_difference(pl.concat([a, a]), a)


def test_compare_names_the_benchmark_with_mismatched_arms():
    df = scored(arm(FIVE_OF_TEN, mode="rwr") + arm(FIVE_OF_TEN[:9], mode="direct"))
    with pytest.raises(MismatchedItemsError, match=r"vqa_rad \(mcq\), base/rwr vs base/direct"):
        compare(df, [(Arm("base", "rwr"), Arm("base", "direct"))], protocol="mcq")


def test_default_comparisons_and_compare_table():
    df = scored(
        arm([True] * 10, mode="rwr")
        + arm(FIVE_OF_TEN, mode="direct")
        + arm([True] * 10, mode="rwr", checkpoint="stage2")
        + arm(SIX_OF_TEN, mode="direct", checkpoint="stage1")
    )
    pairs = default_comparisons(df)
    assert [(str(a), str(b)) for a, b in pairs] == [
        ("base/rwr", "base/direct"),
        ("stage1/direct", "base/direct"),
        ("stage2/rwr", "base/rwr"),
    ]
    t = compare(df, pairs, protocol="mcq")
    assert t.select("a", "b", "n", "difference", "excludes_zero").rows() == [
        ("base/rwr", "base/direct", 10, 0.5, True),
        ("stage1/direct", "base/direct", 10, pytest.approx(0.1), False),
        ("stage2/rwr", "base/rwr", 10, 0.0, False),
    ]
    assert compare(df, pairs, protocol="open").is_empty()


# ---- calibration ----------------------------------------------------------------------------------
def test_ece_known_values():
    # bin [0.9, 1.0): 4 items, mean conf 0.9, accuracy 3/4 -> gap 0.15, weight 4/6
    # bin [0.3, 0.4): 2 items, mean conf 0.3, accuracy 1/2 -> gap 0.20, weight 2/6
    ece = expected_calibration_error([0.9, 0.9, 0.9, 0.9, 0.3, 0.3], [1, 1, 1, 0, 0, 1])
    assert ece == pytest.approx(4 / 6 * 0.15 + 2 / 6 * 0.20)  # 0.1666...
    assert expected_calibration_error([0.5] * 4, [1, 0, 1, 0]) == pytest.approx(0.0)
    assert expected_calibration_error([1.0, 1.0], [0, 0]) == pytest.approx(1.0)
    assert expected_calibration_error([0.25, 0.75], [0, 1], n_bins=2) == pytest.approx(0.25)
    assert math.isnan(expected_calibration_error([], []))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error([1.2], [1])


def test_reliability_bins_edges():
    bins = reliability_of([0.0, 0.05, 1.0, 0.95, 0.5], [0, 0, 1, 0, 1], n_bins=10)
    assert bins.height == 10
    assert bins.filter(pl.col("n") > 0).select("bin", "n", "accuracy").rows() == [
        (0, 2, 0.0),
        (5, 1, 1.0),
        (9, 2, 0.5),  # 1.0 falls in the last bin
    ]
    assert bins["bin_low"][3] == pytest.approx(0.3) and bins["bin_high"][3] == pytest.approx(0.4)


def test_calibration_table_counts_items_without_confidence():
    df = scored(
        [
            row("a", confidence=0.9),
            row("b", confidence=0.9, prediction="B"),
            row("c", prediction=None, confidence=None),
        ]
    )
    t = calibration_table(df, protocol="mcq")
    r = t.row(0, named=True)
    assert (r["n"], r["n_without_confidence"], r["accuracy"], r["ece"]) == (2, 1, 0.5, pytest.approx(0.4))
    bins = reliability_bins(df, protocol="mcq")
    assert bins["n"].sum() == 2 and set(bins["mode"]) == {"direct"}


# ---- retrieval use and CDIR -----------------------------------------------------------------------
def test_retrieval_use_by_hand():
    df = scored(
        [
            row("a", mode="rwr", queries=["q1", "q2"], retrieved_ids=list("abcdef"), n_rounds=3),
            row("b", mode="rwr", queries=[], retrieved_ids=[], n_rounds=1),
        ]
    )
    r = retrieval_use(df).row(0, named=True)
    assert (
        r["n"],
        r["queries_per_item"],
        r["share_with_query"],
        r["passages_per_item"],
        r["rounds_mean"],
        r["rounds_max"],
    ) == (2, 1.0, 0.5, 3.0, 2.0, 3)


def test_cdir_summary_by_hand():
    cdir = dict(mode="rwr_cdir", cdir_triggered=True, cdir_case_ids=["k"])
    df = scored(
        [
            row(
                "t1",
                prediction="A",
                prediction_before_cdir="B",
                confidence=0.7,
                confidence_before_cdir=0.4,
                **cdir,
            ),
            row(
                "t2",
                prediction="B",
                prediction_before_cdir="B",
                confidence=0.5,
                confidence_before_cdir=0.6,
                **cdir,
            ),
            row("n1", mode="rwr_cdir", prediction="A", confidence=0.9),
            row("n2", mode="rwr_cdir", prediction="B", confidence=0.85),
            row("x", mode="rwr"),  # other modes are not part of the summary
        ]
    )
    r = cdir_summary(df).row(0, named=True)
    assert r == {
        "benchmark": "vqa_rad",
        "checkpoint": "base",
        "protocol": "mcq",
        "n": 4,
        "cdir_lambda": 0.8,
        "n_triggered": 2,
        "trigger_rate": 0.5,
        "accuracy_before": 0.25,
        "accuracy_after": 0.5,  # first pass: only n1; final: t1 and n1
        "triggered_accuracy_before": 0.0,
        "triggered_accuracy_after": 0.5,
        "confidence_change_mean": pytest.approx((0.3 - 0.1) / 2),
        "n_answer_changed": 1,
    }
    assert cdir_summary(df.filter(pl.col("mode") != "rwr_cdir")).is_empty()
