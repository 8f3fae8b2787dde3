"""benchmark_items: real vqa_items / text_qa_items rows and ECBench items normalised for evaluation."""

import polars as pl
import pytest

from assets.benchmark import ecbench as eb
from assets.echo.dicom import ECHO_SCHEMA
from training.evaluation.items import EVAL_ITEM_SCHEMA, BenchmarkItemsError, benchmark_items, check_items


def test_vqa_items_get_mcq_or_open_protocol(vqa_frame):
    items = benchmark_items(vqa_frame, "slake", splits=["test"])
    assert items.schema == pl.Schema(EVAL_ITEM_SCHEMA)
    raw = vqa_frame.filter(
        (pl.col("dataset") == "slake") & (pl.col("split") == "test") & (pl.col("language") == "en")
    )
    assert items.height == raw.height and items["item_id"].to_list() == sorted(raw["item_id"].to_list())
    by_id = {r["item_id"]: r for r in raw.iter_rows(named=True)}
    for it in items.iter_rows(named=True):
        src = by_id[it["item_id"]]
        assert it["image_refs"] == src["image_refs"] and len(it["image_refs"]) == 1
        assert (it["modality"], it["organ"], it["question_type"]) == (
            src["modality"],
            src["organ"],
            src["question_type"],
        )
        assert it["answer_type"] == src["answer_type"]
        if src["options"]:
            assert it["protocol"] == "mcq" and it["gold"] == src["answer_label"]
            assert it["n_options"] == len(src["options"]) and it["options"] == src["options"]
        else:  # open questions and closed ones without options are scored as open answers
            assert it["protocol"] == "open" and it["gold"] == src["answer"] and it["n_options"] is None
    assert set(items["protocol"]) == {"mcq", "open"}
    assert items.filter((pl.col("answer_type") == "closed") & (pl.col("protocol") == "open")).height >= 1


def test_text_qa_items(text_qa_frame):
    medqa = benchmark_items(text_qa_frame, "medqa")
    assert medqa.height == text_qa_frame.filter(pl.col("dataset") == "medqa").height
    assert set(medqa["protocol"]) == {"mcq"} and set(medqa["answer_type"]) == {"closed"}
    assert set(medqa["question_type"]) <= {"step1", "step2&3"}
    assert medqa["image_refs"].list.len().max() == 0 and medqa["context"].null_count() == medqa.height
    pubmed = benchmark_items(text_qa_frame, "pubmedqa", splits=["test"])
    assert (
        pubmed.height
        == text_qa_frame.filter((pl.col("dataset") == "pubmedqa") & (pl.col("split") == "test")).height
    )
    assert pubmed["context"].null_count() == 0  # the abstract is shown before the question
    assert pubmed["question_type"].null_count() == pubmed.height  # MeSH subjects are not question types
    assert set(pubmed["n_options"]) == {3}


def test_ecbench_items():
    studies = pl.DataFrame(
        [
            {
                "clip_id": f"clip_{i:04d}",
                "source": "t",
                "patient_key": f"pt_{i // 2:016x}",
                "view": ["A4C", "A2C", "PLAX", "PSAX"][i % 4],
                "ef_percent": [62.0, 47.0, 35.0, 20.0][i % 4],
                "lvidd_mm": [50.0, 61.0, 66.0, 72.0][(i // 4) % 4],
                "sex": "M",
                "keyframe_policy": "ed_es",
                "keyframe_refs": [f"{i:064x}.png", f"{i + 100:064x}.png"],
                "clip_ref": f"{i:064x}.npy",
            }
            for i in range(16)
        ],
        schema=ECHO_SCHEMA,
        strict=False,
    )
    raw = eb.build_items(studies, seed=0)
    items = benchmark_items(raw, "ecbench", splits=["test"])
    assert items.height == raw.filter(pl.col("split") == "test").height > 0
    assert set(items["protocol"]) == {"mcq"} and set(items["n_options"]) == {4}
    assert set(items["modality"]) == {"Echocardiography"} and set(items["organ"]) == {"Heart"}
    assert set(items["question_type"]) <= {"ef_category", "lv_dilation", "wall_thickness", "view"}
    assert all(len(r) == 2 for r in items["image_refs"])  # both keyframes


def test_errors_name_the_problem(vqa_frame, text_qa_frame):
    with pytest.raises(BenchmarkItemsError, match="holds"):
        benchmark_items(vqa_frame, "path_vqa")
    with pytest.raises(BenchmarkItemsError, match="available"):
        benchmark_items(vqa_frame, "slake", splits=["nonexistent"])
    bad = (
        text_qa_frame.filter(pl.col("dataset") == "medqa")
        .head(3)
        .with_columns(pl.lit("Z").alias("answer_label"))
    )
    with pytest.raises(BenchmarkItemsError, match="no gold letter"):
        benchmark_items(bad, "medqa")
    dup = pl.concat([text_qa_frame.head(2), text_qa_frame.head(1)])
    with pytest.raises(BenchmarkItemsError, match="repeat"):
        benchmark_items(dup, dup["dataset"][0])
    with pytest.raises(BenchmarkItemsError, match="unrecognised"):
        benchmark_items(pl.DataFrame({"x": [1]}), "medqa")
    with pytest.raises(BenchmarkItemsError, match="benchmark_items"):
        check_items(pl.DataFrame({"item_id": ["a"]}))
