"""The whole smoke graph with every byte on ``s3://`` (the moto server), then a new knowledge-base file lands.

The main command (``orchestration.main.run("smoke")``) runs ingest -> echo -> ECBench -> KB -> both GRPO
stages (through Pipes) -> evaluation -> report with the storage root on the moto S3 server; nothing is
written under the local project folder's storage. Then a new KB corpus file appears in an ``s3://`` source
folder: the KB-sources sensor adds its partition and requests ``kb_refresh_job``; that run re-tags
``kb_text_index``; the KB-index sensor then requests retraining (stage 2) pinned to the new tag.
"""

import json
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, build_sensor_context

from assets.knowledge import sensors as kb_sensors
from assets.training import sensors as retrain_sensors
from orchestration.definitions import build_defs
from retrieval.pointers import KbPointer
from storage.pointers import ModelPointer
from storage.root import Storage


@pytest.mark.slow
@pytest.mark.s3
@pytest.mark.timeout(2400)
def test_smoke_graph_on_s3_then_a_new_kb_file_requests_retraining(s3_env, tmp_path, monkeypatch):
    from orchestration.main import run

    monkeypatch.setenv("MEDRWR_RESTRICTED_ROOT", str(tmp_path / "restricted"))
    assert run("smoke") == 0
    store = Storage(root=s3_env)
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
        "stage1_checkpoint",
        "stage2_checkpoint",
        "eval_results",
        "eval_report",
    ):
        assert instance.get_latest_materialization_event(AssetKey(asset)) is not None, asset
    report = instance.get_latest_materialization_event(AssetKey("eval_report")).asset_materialization.metadata
    html_uri = report["report_html"].value
    assert html_uri.startswith(s3_env + "/reports/")
    html = store.read_bytes(*html_uri[len(s3_env) + 1 :].split("/")).decode()
    assert html.count("data:image/png;base64,") >= 4
    stage2 = ModelPointer.from_row(store.read_table("stage2_checkpoint"))
    assert stage2.path.startswith(s3_env) and stage2.manifest["kb_tag"].startswith("run-")
    local = Path(tmp_path / "project" / "storage")
    assert not (local / "tables").exists(), "a table was written to the local storage folder"

    # a new KB corpus lands in an s3:// source folder -> sensor tick -> kb_refresh -> retraining requested
    raw_root = s3_env.rsplit("/", 1)[0] + "/raw"
    monkeypatch.setenv("MEDRWR_DATA_DIR", raw_root)
    monkeypatch.setenv("MEDRWR_KB_SENSOR_COOLDOWN_S", "0")
    Storage(root=raw_root).write_bytes(
        b"".join(
            json.dumps(
                {
                    "id": f"n{i}",
                    "title": "Cardiology",
                    "content": f"Beta blockers lower the resting heart rate, note {i}.",
                }
            ).encode()
            + b"\n"
            for i in range(5)
        ),
        "newcorpus",
        "part.jsonl",
    )
    defs = build_defs()
    index_cursor = retrain_sensors.kb_index_retrain_sensor(build_sensor_context(instance=instance)).cursor
    tick = kb_sensors.kb_sources_sensor(
        build_sensor_context(instance=instance, cursor=None, resources={"sources": defs.resources["sources"]})
    )
    assert "newcorpus" in list(tick.dynamic_partitions_requests[0].partition_keys)
    instance.add_dynamic_partitions("kb_sources", ["newcorpus"])
    [request] = [r for r in tick.run_requests if r.partition_key == "newcorpus"]
    before = KbPointer.from_row(store.read_table("kb_text_index")).tag
    result = defs.resolve_job_def("kb_refresh_job").execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        run_config=request.run_config,
        tags=request.tags,
    )
    assert result.success
    after = KbPointer.from_row(store.read_table("kb_text_index")).tag
    assert after != before
    retrain = retrain_sensors.kb_index_retrain_sensor(
        build_sensor_context(instance=instance, cursor=index_cursor)
    )
    [r] = retrain.run_requests
    assert retrain_sensors.kb_index_retrain_sensor.job_name == "retrain_job"
    assert AssetKey("stage2_checkpoint") in r.asset_selection and r.tags["medrwr/kb_tag"] == after
