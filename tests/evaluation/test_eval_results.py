"""The eval_results contract: building, scoring and validating per-item rows."""

import polars as pl
import pytest

from tests.evaluation.results_fixtures import arm, row, scored
from training.evaluation.results import (
    EVAL_RESULTS_SCHEMA,
    EvalResultsError,
    exact_match,
    normalize_answer,
    results_frame,
    token_recall,
    validate_results,
)


def test_results_frame_fills_optional_fields_and_keeps_schema_order():
    df = results_frame([row("i0", mode="direct")])
    assert df.schema == pl.Schema(EVAL_RESULTS_SCHEMA)
    assert df["cdir_case_ids"].to_list() == [[]]
    assert df["cdir_triggered"].to_list() == [False]
    assert df["correct"].to_list() == [None]  # until scored


def test_results_frame_refuses_unknown_and_missing_fields():
    with pytest.raises(EvalResultsError, match=r"record 0: unknown fields \['corect'\]"):
        results_frame([{**row("i0"), "corect": True}])
    bad = row("i7")
    del bad["gold"]
    with pytest.raises(EvalResultsError, match=r"record 0 \(item 'i7'\): missing \['gold'\]"):
        results_frame([bad])


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("The Left Lung.", "left lung"),
        ("  an  MRI, T2-weighted ", "mri t2 weighted"),
        (None, ""),
    ],
)
def test_normalize_answer(text, normal):
    assert normalize_answer(text) == normal


def test_exact_match_and_token_recall_by_hand():
    assert exact_match("The liver.", "liver")
    assert not exact_match("liver cirrhosis", "liver")
    assert not exact_match(None, "liver")
    assert not exact_match("", "")  # an empty prediction never matches
    assert token_recall("the liver", "liver") == 1.0
    assert token_recall("left", "left lung") == 0.5
    assert token_recall("no", "no no") == 0.5  # multiset: each gold token counted once per occurrence
    assert token_recall("lung left lower", "left lung") == 1.0  # order does not matter
    assert token_recall(None, "left lung") == 0.0
    with pytest.raises(EvalResultsError, match="no tokens"):
        token_recall("x", "the ...")


def test_score_predictions_letters_and_open_answers():
    df = scored(
        [
            row("m1", gold="B", prediction=" b "),
            row("m2", gold="B", prediction="C"),
            row("m3", prediction=None),
            row("o1", protocol="open", gold="left lung", prediction="Left lung."),
            row("o2", protocol="open", gold="left lung", prediction="left kidney"),
            row(
                "c1",
                mode="rwr_cdir",
                gold="A",
                prediction="A",
                prediction_before_cdir="B",
                confidence_before_cdir=0.3,
                cdir_triggered=True,
                cdir_case_ids=["k1"],
            ),
        ]
    )
    assert df["correct"].to_list() == [True, False, False, True, False, True]
    assert df["token_recall"].to_list() == [None, None, None, 1.0, 0.5, None]
    assert df["correct_before_cdir"].to_list() == [None, None, None, None, None, False]
    validate_results(df)


def test_a_missing_prediction_stays_in_the_denominator():
    df = scored(arm([True, True]) + [row("i2", prediction=None, confidence=None)])
    validate_results(df)
    assert df.height == 3 and df["correct"].to_list() == [True, True, False]


def _problem(df: pl.DataFrame, match: str) -> None:
    with pytest.raises(EvalResultsError, match=match):
        validate_results(df)


def test_validate_names_each_kind_of_bad_row():
    good = scored(arm([True, False, True]))
    validate_results(good)
    _problem(good.head(0), "no rows")
    _problem(good.drop("latency_s"), r"lacks columns \['latency_s'\]")
    _problem(good.with_columns(pl.col("n_rounds").cast(pl.Int64)), "wrong type")
    _problem(
        pl.concat([good, good.head(1)]),
        r"2 row\(s\) duplicated .*row 0 \(vqa_rad/i0/base/direct\), row 3 \(vqa_rad/i0/base/direct\)",
    )
    _problem(good.with_columns(mode=pl.lit("rag")), "unknown mode")
    _problem(good.with_columns(confidence=pl.lit(1.5)), r"confidence outside \[0, 1\]")
    _problem(good.with_columns(correct=~pl.col("correct")), "correct disagrees with the answers")
    _problem(good.with_columns(gold=pl.lit("C")), "gold letter inside 2..10 options")  # 2 options: A, B
    _problem(scored([row("r1", mode="rwr", kb_tag=None)]), "retrieval mode without kb_tag")
    _problem(
        scored([row("d1", mode="direct", cdir_triggered=True, cdir_case_ids=["k"])]),
        "CDIR fields outside mode rwr_cdir",
    )
    _problem(
        scored([row("o1", protocol="open", gold="lung", prediction="lung")]).with_columns(
            token_recall=pl.lit(None, pl.Float64)
        ),
        "open without token_recall",
    )


def test_validate_cdir_rules():
    triggered = dict(mode="rwr_cdir", cdir_triggered=True, cdir_case_ids=["k1"], prediction_before_cdir="B")
    validate_results(scored([row("c1", confidence_before_cdir=0.79, **triggered)]))
    _problem(scored([row("c1", confidence_before_cdir=0.8, **triggered)]), "triggered although")
    _problem(
        scored([row("c1", confidence_before_cdir=0.3, **{**triggered, "cdir_case_ids": []})]),
        "triggered although",
    )
    _problem(
        scored([row("c1", mode="rwr_cdir", prediction="A", prediction_before_cdir="B")]),
        "not triggered but with a first pass",
    )
    _problem(scored([row("c1", mode="rwr_cdir", cdir_lambda=None)]), "without cdir_lambda")
