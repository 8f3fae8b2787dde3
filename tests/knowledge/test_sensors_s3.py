"""End to end on the moto S3 server: a new KB file in an s3:// source folder -> the KB-sources sensor requests
kb_refresh_job for that source -> the run (in-process, the requested partition) re-tags kb_text_index -> the
KB-index sensor requests retraining."""

import json

import pytest
from dagster import DagsterInstance, build_sensor_context

from assets.knowledge import sensors as kb_sensors
from assets.training import sensors as retrain_sensors
from orchestration.definitions import build_defs
from retrieval.pointers import KbPointer
from storage.root import Storage


def put(store: Storage, name: str, records: list[dict]) -> None:
    store.write_bytes("".join(json.dumps(r) + "\n" for r in records).encode(), "mycorpus", name)


@pytest.mark.slow
@pytest.mark.s3
@pytest.mark.timeout(400)
def test_new_s3_kb_file_refreshes_its_source_then_requests_retraining(s3_env, monkeypatch):
    raw_root = s3_env.rsplit("/", 1)[0] + "/raw"
    monkeypatch.setenv("MEDRWR_DATA_DIR", raw_root)
    monkeypatch.setenv("MEDRWR_KB_SENSOR_COOLDOWN_S", "0")
    raw = Storage(root=raw_root)
    put(
        raw,
        "a.jsonl",
        [
            {"id": f"a{i}", "title": "Cardiology", "content": f"Beta blockers reduce heart rate, note {i}."}
            for i in range(5)
        ],
    )
    defs = build_defs()
    instance = DagsterInstance.ephemeral()
    resources = {"sources": defs.resources["sources"]}

    def kb_tick(cursor):
        return kb_sensors.kb_sources_sensor(
            build_sensor_context(instance=instance, cursor=cursor, resources=resources)
        )

    def refresh(request):
        job = defs.resolve_job_def("kb_refresh_job")
        result = job.execute_in_process(
            instance=instance,
            partition_key=request.partition_key,
            run_config=request.run_config,
            tags=request.tags,
        )
        assert result.success
        return KbPointer.from_row(Storage(root=s3_env).read_table("kb_text_index")).tag

    first = kb_tick(None)  # the new folder on S3 becomes a partition and is refreshed
    assert list(first.dynamic_partitions_requests[0].partition_keys) == ["mycorpus"]
    instance.add_dynamic_partitions("kb_sources", ["mycorpus"])
    [req] = first.run_requests
    tag1 = refresh(req)
    index_cursor = retrain_sensors.kb_index_retrain_sensor(build_sensor_context(instance=instance)).cursor

    assert not kb_tick(first.cursor).run_requests  # unchanged
    put(
        raw,
        "b.jsonl",
        [{"id": "b1", "title": "Renal", "content": "ACE inhibitors can raise serum potassium."}],
    )
    second = kb_tick(first.cursor)
    [req2] = second.run_requests
    assert req2.partition_key == "mycorpus" and not second.dynamic_partitions_requests
    tag2 = refresh(req2)
    assert tag2 != tag1 and tag2.startswith("run-")
    assert not kb_tick(second.cursor).run_requests

    retrain = retrain_sensors.kb_index_retrain_sensor(
        build_sensor_context(instance=instance, cursor=index_cursor)
    )
    [r] = retrain.run_requests
    assert r.tags["medrwr/kb_tag"] == tag2
    assert not retrain_sensors.kb_index_retrain_sensor(
        build_sensor_context(instance=instance, cursor=retrain.cursor)
    ).run_requests
