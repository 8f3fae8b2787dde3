"""Text-QA readers on the real releases and on generic-MCQ fixtures."""

import json

import polars as pl
import pytest

from assets.common.records import SourceError
from assets.ingest.readers.text_qa_row import TEXT_QA_SCHEMA
from assets.ingest.text_qa import read_text_qa
from quality.contracts import check_text_qa_items
from storage.sources import SourceDir


def _read(dataset, root):
    df, result = read_text_qa(dataset, SourceDir(str(root)))
    assert df.schema == pl.Schema(TEXT_QA_SCHEMA)
    res = check_text_qa_items(df)
    assert res.success, res.summary()
    return df, result


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_medqa_real(real_data):
    raw = _lines(real_data / "medqa_us" / "phrases_no_exclude_test.jsonl")
    df, result = _read("medqa", real_data / "medqa_us")
    assert df.height + len(result.rejected) == len(raw)
    assert set(df["split"]) == {"test"} and all(len(o) == 4 for o in df["options"])
    first = df.filter(pl.col("question") == raw[0]["question"].strip()).row(0, named=True)
    assert first["answer_label"] == raw[0]["answer_idx"] and first["answer"] == raw[0]["answer"]


def test_medmcqa_real_cop_is_one_based(real_data):
    raw = _lines(real_data / "medmcqa" / "dev.json")
    df, result = _read("medmcqa", real_data / "medmcqa")
    assert df.height == len(raw) and not result.rejected
    r0 = df.filter(pl.col("item_id") == f"medmcqa:{raw[0]['id']}").row(0, named=True)
    assert r0["answer_label"] == "ABCD"[raw[0]["cop"] - 1] and r0["answer"] == raw[0]["opa"]
    assert df["explanation"].is_not_null().sum() == sum(bool(r.get("exp")) for r in raw)
    assert set(df["split"]) == {"validation"}


def test_pubmedqa_real(real_data):
    data = json.loads((real_data / "pubmedqa" / "ori_pqal.json").read_text())
    test_ids = json.loads((real_data / "pubmedqa" / "test_ground_truth.json").read_text())
    df, result = _read("pubmedqa", real_data / "pubmedqa")
    assert df.height == len(data) and not result.rejected
    assert df.filter(pl.col("split") == "test").height == len(set(test_ids) & set(data))
    pmid, rec = next(iter(data.items()))
    row = df.filter(pl.col("item_id") == f"pubmedqa:{pmid}").row(0, named=True)
    assert row["options"] == ["yes", "no", "maybe"] and row["answer"] == rec["final_decision"]
    assert row["context"].startswith(rec["CONTEXTS"][0][:40]) and row["explanation"] == rec["LONG_ANSWER"]


def _mapping(root, **kw):
    base = {
        "files": ["items.csv"],
        "question": "stem",
        "options": ["a", "b", "c"],
        "answer": "key",
        "license": "CC-BY-4.0",
        "explanation": "why",
        "split": "part",
        "id": "qid",
    }
    base.update(kw)
    import yaml

    (root / "mcq_mapping.yaml").write_text(yaml.safe_dump(base))


def test_generic_csv_with_quarantine(tmp_path):
    root = tmp_path / "mcq"
    root.mkdir()
    (root / "items.csv").write_text(
        "qid,stem,a,b,c,key,why,part\n"
        "1,Which vitamin deficiency causes scurvy?,Vitamin C,Vitamin D,Vitamin K,A,Collagen synthesis,train\n"
        "2,Most common site of ectopic pregnancy?,Ovary,Ampulla,Cervix,B,,test\n"
        "3,Bad letter row?,x,y,z,F,,train\n"
        "1,Duplicate id row?,x,y,z,A,,train\n"
        "4,,x,y,z,A,,train\n"
    )
    _mapping(root)
    df, result = _read("mcq_custom", root)
    assert df["item_id"].to_list() == ["mcq_custom:1", "mcq_custom:2"]
    assert df.row(0, named=True)["explanation"] == "Collagen synthesis"
    reasons = sorted(r.reason.split(":")[0] for r in result.rejected)
    assert reasons == ["answer letter outside the options", "duplicate item id", "empty question"]
    assert {r.row for r in result.rejected if "letter" in r.reason} == {"line 4"}


def test_generic_jsonl_text_answers(tmp_path):
    root = tmp_path / "mcq"
    root.mkdir()
    recs = [
        {
            "q": "Drug of choice for absence seizures?",
            "choices": ["Ethosuximide", "Phenytoin"],
            "ans": "Ethosuximide",
        },
        {"q": "Broken?", "choices": "not json", "ans": "x"},
    ]
    (root / "items.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n{oops\n")
    _mapping(
        root,
        files=["items.jsonl"],
        question="q",
        options="choices",
        answer="ans",
        answer_format="text",
        explanation=None,
        split=None,
        id=None,
        default_split="train",
    )
    df, result = _read("mcq_custom", root)
    assert df.height == 1 and df.row(0, named=True)["answer_label"] == "A"
    assert len(result.rejected) == 2 and any("malformed JSON line" in r.reason for r in result.rejected)


def test_generic_missing_mapping_and_columns(tmp_path):
    root = tmp_path / "mcq"
    root.mkdir()
    with pytest.raises(SourceError, match="mcq_mapping.yaml: MCQ column mapping not found"):
        read_text_qa("mcq_custom", SourceDir(str(root)))
    (root / "items.csv").write_text("qid,question\n1,x\n")
    _mapping(root)
    with pytest.raises(
        SourceError,
        match=r"mcq_mapping.yaml: invalid MCQ mapping: items.csv: declared column\(s\) "
        r"absent from the file's header: 'stem' \(question\), 'key' \(answer\)",
    ):
        read_text_qa("mcq_custom", SourceDir(str(root)))


def test_medqa_malformed_line_is_quarantined(tmp_path, sample_data):
    root = tmp_path / "medqa"
    root.mkdir()
    lines = (sample_data / "medqa_us" / "phrases_no_exclude_test.jsonl").read_text().splitlines()[:5]
    bad = json.loads(lines[1])
    bad["answer_idx"] = "E"
    (root / "x_test.jsonl").write_text("\n".join([lines[0], json.dumps(bad), "{not json", lines[2]]) + "\n")
    df, result = _read("medqa", root)
    assert df.height == 2
    assert sorted(r.row for r in result.rejected) == ["line 2", "line 3"]
