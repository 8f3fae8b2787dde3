"""VQA readers on the real releases (../shared/data, else the bundled samples) and on layout fixtures."""

import hashlib
import json
import shutil

import polars as pl
import pytest

from assets.common.images import ImageIngestor
from assets.common.records import SourceError
from assets.ingest.readers.common import LETTERS
from assets.ingest.readers.vqa_rad import read_vqa_rad_miccai19
from assets.ingest.readers.vqa_row import VQA_SCHEMA, two_option_form
from assets.ingest.vqa import read_vqa
from quality.contracts import all_refs, check_vqa_items
from storage.sources import SourceDir

from .layouts import (
    write_medxpertqa,
    write_mmmu,
    write_omnimedvqa,
    write_path_vqa_parquet,
    write_path_vqa_pickle,
    write_pmc_vqa,
)


def _read(dataset, root, storage):
    images = ImageIngestor(storage)
    df, result = read_vqa(dataset, SourceDir(str(root)), images)
    assert df.schema == pl.Schema(VQA_SCHEMA)
    return df, result, images


def _contract_ok(df, storage):
    res = check_vqa_items(df, storage.existing_images(all_refs(df["image_refs"])))
    assert res.success, res.summary()


def test_vqa_rad_official_real(real_data, storage):
    df, result, images = _read("vqa_rad", real_data / "vqa_rad", storage)
    raw = json.loads((real_data / "vqa_rad" / "VQA_RAD Dataset Public.json").read_text())
    assert df.height + len(result.rejected) == len(raw)
    n_test = sum(str(r["phrase_type"]).startswith("test") for r in raw)
    assert df.filter(pl.col("split") == "test").height == n_test
    if len(raw) == 2248:  # the full release
        assert n_test == 451 and not result.rejected
    # items sharing an image keep one stored image; byte-identical files are one image too
    # (the full release holds 315 files of which two are the same bytes: 314 stored images)
    folder = real_data / "vqa_rad" / "VQA_RAD Image Folder"
    distinct = {hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in {r["image_name"] for r in raw}}
    assert len(images.stored_ids) == len(distinct)
    assert set(df["answer_type"]) == {"closed", "open"}
    _contract_ok(df, storage)


def test_vqa_rad_miccai19_real(real_data, storage):
    images = ImageIngestor(storage)
    result = read_vqa_rad_miccai19(SourceDir(str(real_data / "vqa_rad")), images, "miccai19_format/")
    train = json.loads((real_data / "vqa_rad" / "miccai19_format" / "trainset.json").read_text())
    test = json.loads((real_data / "vqa_rad" / "miccai19_format" / "testset.json").read_text())
    assert len(result.rows) + len(result.rejected) == len(train) + len(test)
    assert sum(r["split"] == "test" for r in result.rows) == len(test) - sum(
        "test" in r.row for r in result.rejected
    )
    assert not result.rejected


def test_slake_real_english_only(real_data, storage):
    df, result, images = _read("slake", real_data / "slake", storage)
    raw = {
        s: json.loads((real_data / "slake" / f"{s}.json").read_text()) for s in ("train", "validate", "test")
    }
    n_en = {s: sum(r["q_lang"] == "en" for r in rows) for s, rows in raw.items()}
    assert df.height + len(result.rejected) == sum(n_en.values())
    assert set(df["language"]) == {"en"}
    assert set(df["modality"].drop_nulls()) <= {"CT", "MRI", "X-Ray"}
    if n_en == {"train": 4919, "validate": 1053, "test": 1061}:  # the full release
        assert len(images.stored_ids) <= 642
        # the one English row with an empty answer is quarantined, not dropped
        assert [r.reason for r in result.rejected] == ["empty answer"]
    _contract_ok(df, storage)


def test_two_option_form_is_deterministic_and_balanced():
    ids = [f"x:{i}" for i in range(400)]
    forms = [two_option_form(i, "yes") for i in ids]
    assert forms == [two_option_form(i, "Yes.") for i in ids]
    share_a = sum(label == "A" for _, label in forms) / len(forms)
    assert 0.4 < share_a < 0.6
    assert two_option_form("x", "left") is None
    options, label = two_option_form("x:1", "no")
    assert options[LETTERS.index(label)] == "No"


def test_closed_yes_no_get_two_options(real_data, storage):
    df, _, _ = _read("vqa_rad", real_data / "vqa_rad", storage)
    closed_yn = df.filter(
        (pl.col("answer_type") == "closed") & pl.col("answer").str.to_lowercase().is_in(["yes", "no"])
    )
    assert closed_yn.height > 0
    assert all(sorted(o) == ["No", "Yes"] for o in closed_yn["options"])
    open_rows = df.filter(pl.col("answer_type") == "open")
    assert (
        all(len(o) == 0 for o in open_rows["options"])
        and open_rows["answer_label"].null_count() == open_rows.height
    )


@pytest.mark.parametrize("writer", [write_path_vqa_parquet, write_path_vqa_pickle])
def test_path_vqa_layouts(writer, tmp_path, storage):
    df, result, images = _read("path_vqa", writer(tmp_path / "pathvqa"), storage)
    assert df.height >= 4 and not result.rejected
    assert set(df["split"]) <= {"train", "validation", "test"}
    _contract_ok(df, storage)


def test_path_vqa_parquet_shares_images(tmp_path, storage):
    _, _, images = _read("path_vqa", write_path_vqa_parquet(tmp_path / "p"), storage)
    assert len(images.stored_ids) == 2  # one image shared by five rows across splits + one other


def test_path_vqa_pickle_refuses_objects(tmp_path, storage):
    import pickle

    root = write_path_vqa_pickle(tmp_path / "p")
    (root / "split/qas/train/train_qa.pkl").write_bytes(pickle.dumps([{"image": pl.Utf8}]))
    with pytest.raises(SourceError, match="refusing to load"):
        _read("path_vqa", root, storage)


def test_pmc_vqa(tmp_path, storage):
    df, result, _ = _read("pmc_vqa", write_pmc_vqa(tmp_path / "pmc"), storage)
    assert df.height == 6 and not result.rejected
    row = df.row(0, named=True)
    assert (
        row["options"] == ["CT", "MRI", "PET", "Ultrasound"]
        and row["answer"] == row["options"][LETTERS.index(row["answer_label"])]
    )
    _contract_ok(df, storage)


def test_pmc_vqa_answer_letter_outside_options_is_quarantined(tmp_path, storage):
    df, result, _ = _read("pmc_vqa", write_pmc_vqa(tmp_path / "pmc", bad_label=True), storage)
    assert df.height == 4
    assert len(result.rejected) == 2
    assert all("answer letter outside the options" in r.reason for r in result.rejected)
    assert all(r.source_file.endswith(".csv") and r.row == "line 4" for r in result.rejected)


def test_omnimedvqa(tmp_path, storage):
    df, result, _ = _read("omnimedvqa", write_omnimedvqa(tmp_path / "omni"), storage)
    assert df.height == 2 and len(result.rejected) == 1  # "No" is not among the options
    assert "answer not among the options" in result.rejected[0].reason
    assert set(df["split"]) == {"test"} and set(df["modality"]) == {"CT"}
    _contract_ok(df, storage)


def test_mmmu_hm(tmp_path, storage):
    df, result, _ = _read("mmmu_hm", write_mmmu(tmp_path / "mmmu"), storage)
    assert df.height == 3 and not result.rejected
    by_id = {r["item_id"]: r for r in df.iter_rows(named=True)}
    mcq = by_id["mmmu_hm:validation_Clinical_Medicine_0"]
    assert mcq["answer"] == "Effusion" and mcq["answer_label"] == "B" and mcq["split"] == "validation"
    assert len(by_id["mmmu_hm:validation_Clinical_Medicine_1"]["image_refs"]) == 2
    assert by_id["mmmu_hm:validation_Clinical_Medicine_2"]["answer_type"] == "open"
    _contract_ok(df, storage)


def test_medxpertqa_mm(tmp_path, storage):
    df, result, _ = _read("medxpertqa_mm", write_medxpertqa(tmp_path / "mx"), storage)
    assert df.height == 4 and not result.rejected
    assert set(df["split"]) == {"validation", "test"}
    assert all(len(o) == 5 for o in df["options"]) and set(df["answer"]) == {"HCM"}
    _contract_ok(df, storage)


# ---- bad input --------------------------------------------------------------------------------------
def _copy_slake(real_data, tmp_path):
    dst = tmp_path / "slake"
    shutil.copytree(real_data / "slake", dst, ignore=shutil.ignore_patterns("KG_mvqa-kg"))
    return dst


def test_malformed_json_names_file_and_line(tmp_path, storage, sample_data):
    root = _copy_slake(sample_data, tmp_path)
    (root / "validate.json").write_text('[{"qid": 1,\n "question": }]')
    with pytest.raises(SourceError) as e:
        _read("slake", root, storage)
    msg = str(e.value)
    assert "validate.json" in msg and "line 2" in msg and "fix the file" in msg


def test_missing_annotation_file_is_a_clear_error(tmp_path, storage):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no SLAKE split file.*point the slake source"):
        _read("slake", tmp_path / "empty", storage)


def test_row_problems_go_to_quarantine(tmp_path, storage, sample_data):
    root = _copy_slake(sample_data, tmp_path)
    rows = json.loads((root / "train.json").read_text())
    en = [r for r in rows if r["q_lang"] == "en"]
    en[0]["img_name"] = "xmlab99999/source.jpg"  # missing image file
    en[1]["question"] = "   "  # empty question
    en[2]["split"] = "x"
    dup = dict(en[3])  # duplicate id
    broken = next(p for p in (root / "imgs").iterdir())
    (broken / "source.jpg").write_bytes((broken / "source.jpg").read_bytes()[:300])  # truncated image
    (root / "train.json").write_text(json.dumps(rows + [dup]))
    df, result, _ = _read("slake", root, storage)
    reasons = [r.reason for r in result.rejected]
    assert any(r.startswith("missing image file") and "xmlab99999" in r for r in reasons)
    assert "empty question" in reasons
    assert any(r.startswith("duplicate item id") for r in reasons)
    assert any(r.startswith("undecodable image") and broken.name in r for r in reasons)
    assert df.height > 0 and df["item_id"].is_unique().all()
    _contract_ok(df, storage)


def test_undecodable_image_bytes(tmp_path, storage):
    root = write_pmc_vqa(tmp_path / "pmc")
    (root / "images" / "PMCtrain0_F1.jpg").write_bytes(b"not an image at all")
    df, result, _ = _read("pmc_vqa", root, storage)
    assert [r.row for r in result.rejected] == ["line 2"]
    assert "undecodable image" in result.rejected[0].reason
