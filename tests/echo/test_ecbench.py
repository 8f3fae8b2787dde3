"""ECBench logic: guideline categories, balanced answers, patient splits, versioning, check functions."""

import polars as pl
import pytest

from assets.benchmark import ecbench as eb
from assets.echo.dicom import ECHO_SCHEMA


def _studies(n: int = 40) -> pl.DataFrame:
    rows = []
    for i in range(n):
        rows.append(
            {
                "clip_id": f"clip_{i:04d}",
                "source": "t",
                "patient_key": f"pt_{i // 2:016x}",
                "view": ["A4C", "A2C", "PLAX", "PSAX"][i % 4],
                "ef_percent": [62.0, 47.0, 35.0, 20.0][i % 4],
                "edv_ml": 150.0,
                "esv_ml": 80.0,
                "lvidd_mm": [50.0, 61.0, 66.0, 72.0][(i // 4) % 4],
                "ivsd_mm": [8.0, 12.0, 15.0, 18.0][(i // 3) % 4],
                "lvpwd_mm": 8.0,
                "sex": ["M", "F", None][i % 3],
                "keyframe_policy": "ed_es",
                "keyframe_refs": [f"{i:064x}.png"],
                "clip_ref": f"{i:064x}.npy",
            }
        )
    return pl.DataFrame(rows, schema=ECHO_SCHEMA, strict=False)


@pytest.mark.parametrize(
    ("kind", "value", "sex", "expected"),
    [
        ("ef", 55, "M", "normal"),
        ("ef", 53, "F", "mildly abnormal"),
        ("ef", 53, "M", "normal"),
        ("ef", 53, None, None),
        ("ef", 35, None, "moderately abnormal"),
        ("ef", 29.9, "F", "severely abnormal"),
        ("lvidd", 58.0, "M", "normal"),
        ("lvidd", 58.0, "F", "moderately dilated"),
        ("lvidd", 70, None, "severely dilated"),
        ("wall", 10, "M", "normal"),
        ("wall", 10, "F", "mildly increased"),
        ("wall", 18, None, "severely increased"),
    ],
)
def test_guideline_categories(kind, value, sex, expected):
    assert eb.categorize(kind, value, sex) == expected


def test_items_are_balanced_split_by_patient_and_deterministic():
    studies = _studies()
    items = eb.build_items(studies, seed=1)
    assert set(items["question_type"]) == {"ef_category", "lv_dilation", "wall_thickness", "view"}
    assert all(len(o) == 4 and len(set(o)) == 4 for o in items["options"])
    for opts, label, answer in zip(items["options"], items["answer_label"], items["answer"], strict=True):
        assert opts[eb.LETTERS.index(label)] == answer
    ok, per = eb.check_balanced(items)
    assert ok, per
    assert eb.patients_in_several_splits(items) == []
    assert set(items["split"]) == {"validation", "test"}
    assert not eb.duplicate_items(items)
    assert items.equals(eb.build_items(studies, seed=1))
    assert eb.version_of(items) == eb.version_of(eb.build_items(studies, seed=1))
    assert eb.version_of(items) != eb.version_of(eb.build_items(studies, seed=2))
    assert (
        "J Am Soc Echocardiogr 2015"
        in items.filter(pl.col("question_type") == "ef_category")["explanation"][0]
    )
    m = eb.manifest(items, 1, "abc")
    assert m["items"] == items.height and sum(m["per_split"].values()) == items.height
    assert set(m["per_question_type"]) == {"ef_category", "lv_dilation", "wall_thickness", "view"}


def test_checks_fail_on_planted_problems():
    items = eb.build_items(_studies(), seed=0)
    skewed = items.with_columns(pl.lit("A").alias("answer_label"))
    assert not eb.check_balanced(skewed)[0]
    crossed = items.with_columns(
        pl.when(pl.col("item_id") == items["item_id"][0])
        .then(pl.lit("validation"))
        .otherwise(pl.lit("test"))
        .alias("split")
    )
    assert eb.patients_in_several_splits(crossed) == [items["patient_key"][0]]
    refs = set(r for rs in items["image_refs"] for r in rs)
    assert eb.unresolvable_refs(items, refs) == []
    assert eb.unresolvable_refs(items, refs - {items["image_refs"][0][0]})
    assert eb.duplicate_items(pl.concat([items, items.head(1)])) == [items["item_id"][0]]
