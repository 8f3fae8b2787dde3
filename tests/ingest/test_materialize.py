"""The ingest group materialized in-process with real Dagster runs, on a local root and on S3 (moto)."""

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from dagster import AssetKey, DagsterInstance

from orchestration.definitions import build_defs, defs
from storage.pointers import ModelPointer
from storage.root import Storage
from training import smoke


def _run(job_name, partition, instance=None):
    instance = instance or DagsterInstance.ephemeral()
    result = (
        build_defs()
        .resolve_job_def(job_name)
        .execute_in_process(partition_key=partition, instance=instance, raise_on_error=False)
    )
    return result, instance


def _materialization(result, key):
    [mat] = [m for m in result.asset_materializations_for_node(key)]
    return mat.metadata


@pytest.mark.parametrize(
    "job,partition,asset",
    [
        ("vqa_ingest_job", "vqa_rad", "vqa_items"),
        ("vqa_ingest_job", "slake", "vqa_items"),
        ("text_qa_ingest_job", "medqa", "text_qa_items"),
        ("text_qa_ingest_job", "medmcqa", "text_qa_items"),
        ("text_qa_ingest_job", "pubmedqa", "text_qa_items"),
    ],
)
def test_ingest_partition_local(job, partition, asset):
    result, _ = _run(job, partition)
    assert result.success
    [check] = result.get_asset_check_evaluations()
    assert check.passed and check.asset_key == AssetKey(asset)
    md = _materialization(result, asset)
    stored = Storage().read_table(asset, partition)
    assert md["dagster/row_count"].value == stored.height > 0
    assert {c.name for c in md["dagster/column_schema"].schema.columns} == set(stored.columns)
    assert "count_by_split" in md and "preview" in md and md["quarantined_rows"].value == 0
    assert result.dagster_run.tags.get("dagster/partition") == partition
    # the GX validation is kept and rendered as Data Docs under the storage root, for auditors
    docs = check.metadata["data_docs"].value
    assert docs == Storage().uri("quality", "data_docs", "index.html")
    assert result.run_id in open(docs).read()
    [stored] = [r for r in Storage().find("quality", "validations") if result.run_id in r]
    validation = json.loads(Storage().read_bytes("quality", "validations", stored))
    assert validation["suite_name"] == f"{asset}.v2"


def test_code_versions_on_every_asset():
    for spec in defs.resolve_all_asset_specs():
        assert spec.code_version, f"{spec.key} has no code_version"


def test_quarantine_counts_in_metadata(tmp_path, monkeypatch, sample_data):
    root = tmp_path / "slake"
    shutil.copytree(sample_data / "slake", root)
    rows = json.loads((root / "train.json").read_text())
    en = [i for i, r in enumerate(rows) if r["q_lang"] == "en"]
    rows[en[0]]["img_name"] = "xmlab0/nowhere.jpg"
    rows[en[1]]["answer"] = ""
    (root / "train.json").write_text(json.dumps(rows))
    monkeypatch.setenv("MEDRWR_SOURCE_SLAKE", str(root))
    result, _ = _run("vqa_ingest_job", "slake")
    assert result.success  # row problems do not stop the run
    md = _materialization(result, "vqa_items")
    assert md["quarantined_rows"].value == 2
    assert md["quarantine_reasons"].value == {"empty answer": 1, "missing image file": 1}
    q = Storage().read_quarantine("vqa_items", "slake")
    assert q.height == 2 and set(q["source_file"].str.ends_with("train.json")) == {True}
    assert (
        q.filter(pl.col("reason").str.starts_with("missing image file"))["raw"]
        .str.contains("nowhere.jpg")
        .all()
    )


def test_failed_contract_blocks_the_run(monkeypatch):
    monkeypatch.setattr(Storage, "existing_images", lambda self, ids: set())  # images vanished from storage
    result, _ = _run("vqa_ingest_job", "vqa_rad")
    [check] = result.get_asset_check_evaluations()
    assert not check.passed
    assert "_image_refs_resolvable" in json.dumps(check.metadata["failed"].value)
    assert not result.success


def test_whole_file_error_fails_with_clear_message(tmp_path, monkeypatch):
    (tmp_path / "medqa").mkdir()
    monkeypatch.setenv("MEDRWR_SOURCE_MEDQA", str(tmp_path / "medqa"))
    result, _ = _run("text_qa_ingest_job", "medqa")
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    error = failure.event_specific_data.error
    assert error.cause.cls_name == "SourceError"
    assert (
        "no MedQA .jsonl file found" in error.cause.message
        and "point the medqa source" in error.cause.message
    )


@pytest.mark.s3
def test_ingest_on_s3_server(s3_env):
    for job, partition in (("vqa_ingest_job", "vqa_rad"), ("text_qa_ingest_job", "pubmedqa")):
        result, _ = _run(job, partition)
        assert result.success and all(c.passed for c in result.get_asset_check_evaluations())
    st = Storage()
    assert st.is_s3 and st.root == s3_env
    vqa = st.read_table("vqa_items", "vqa_rad")
    assert vqa.height > 0
    refs = {r for refs in vqa["image_refs"] for r in refs}
    assert st.existing_images(refs) == refs
    assert st.read_table("text_qa_items", "pubmedqa").height > 0
    assert st.exists("quality", "data_docs", "index.html") and len(st.find("quality", "validations")) >= 2


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_main_job_smoke(tmp_path, capsys):
    from orchestration.main import run

    assert run("smoke") == 0
    out = capsys.readouterr().out
    assert "Outputs:" in out and "dagster dev -w workspace.yaml" in out
    instance = DagsterInstance.get()
    for asset in (
        "vqa_items",
        "text_qa_items",
        "echo_studies",
        "ecbench",
        "kb_passages",
        "kb_text_index",
        "kb_image_index",
        "base_model",
        "split_use",
        "stage1_items",
        "stage1_checkpoint",
        "stage2_items",
        "stage2_checkpoint",
        "eval_results",
        "eval_report",
    ):
        assert instance.get_latest_materialization_event(AssetKey(asset)) is not None, asset
    # both GRPO stages ran through Pipes and streamed their per-step metrics into the run while training
    for stage in ("stage1_checkpoint", "stage2_checkpoint"):
        md = instance.get_latest_materialization_event(AssetKey(stage)).asset_materialization.metadata
        assert md["global_step"].value == 2 and md["last/rollout/prefix_violations"].value == 0
        run_id = instance.get_latest_materialization_event(AssetKey(stage)).run_id
        logs = [e.user_message for e in instance.all_logs(run_id)]
        assert any(m.startswith("step 1:") for m in logs) and any(m.startswith("step 2:") for m in logs)
    # stage-2 items were stratified in the trainer process (launched through Pipes) with stage 2's budgets
    event = instance.get_latest_materialization_event(AssetKey("stage2_items"))
    strat = event.asset_materialization.metadata["stratification"].value
    assert strat["device"] == "cpu" and strat["world_size"] == 1 and strat["samples"] == 2
    assert strat["rollout_settings"]["max_new_tokens_per_round"] == smoke.STAGE["max_new_tokens_per_round"]
    assert any("trajectories" in (e.user_message or "") for e in instance.all_logs(event.run_id))
    items2 = Storage().read_table("stage2_items")
    assert items2.height > 0 and items2["pass_rate"].max() < 1.0 and items2["policy_samples"].min() == 2
    stage2 = ModelPointer.from_row(Storage().read_table("stage2_checkpoint"))
    assert stage2.manifest["kb_tag"].startswith("run-")
    # every benchmark of the profile evaluated for every checkpoint and mode; the report names its lineage
    for benchmark in ("vqa_rad", "slake", "medqa", "pubmedqa", "ecbench"):
        results = Storage().read_table("eval_results", benchmark)
        modes = {"direct", "rwr", "rwr_cdir", "rag_control", "random_retriever"}
        if benchmark in ("vqa_rad", "slake", "ecbench"):  # image benchmarks add the two image controls
            modes |= {"blank_image", "shuffled_image"}
        assert set(results["mode"]) == modes, benchmark
        assert set(results["checkpoint"]) == {"base", "stage1", "stage2"}
    report = instance.get_latest_materialization_event(AssetKey("eval_report")).asset_materialization.metadata
    html = Path(report["report_html"].value).read_text()
    assert "SMOKE RUN" in report["report"].value and html.count("data:image/png;base64,") >= 4
    assert report["lineage"].value["kb_tag"] == stage2.manifest["kb_tag"]
