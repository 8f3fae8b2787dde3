"""Transient S3 errors (503 SlowDown injected by a proxy in front of the moto server) are retried with
backoff by every client the pipeline uses (s3fs, polars' object store, LanceDB), and nothing is lost."""

import uuid

import boto3
import pytest
from dagster import DagsterInstance

from orchestration.definitions import build_defs
from retrieval.pointers import KbPointer
from storage.root import Storage
from tests.faults.flaky_proxy import FlakyProxy


@pytest.mark.s3
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ingest_and_kb_survive_injected_s3_errors(moto_server, monkeypatch):
    bucket = f"flaky-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    with FlakyProxy(moto_server, every=4, max_failures=400) as proxy:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("AWS_REGION", "us-east-1")
        monkeypatch.setenv("MEDRWR_S3_ENDPOINT_URL", proxy.url)
        monkeypatch.setenv("MEDRWR_STORAGE_ROOT", f"s3://{bucket}/pipeline")
        defs = build_defs()
        instance = DagsterInstance.ephemeral()
        instance.add_dynamic_partitions("kb_sources", ["pubmedqa"])
        for job, partition, config in (
            ("vqa_ingest_job", "vqa_rad", None),
            ("kb_passages_job", "pubmedqa", {"ops": {"kb_passages": {"config": {"max_records": 40}}}}),
        ):
            result = defs.resolve_job_def(job).execute_in_process(
                partition_key=partition, instance=instance, run_config=config, raise_on_error=False
            )
            assert result.success, job
        job = defs.resolve_implicit_global_asset_job_def().get_subset(
            asset_selection={
                a.key for a in defs.resolve_all_asset_specs() if a.key.to_user_string() == "kb_text_index"
            }
        )
        assert job.execute_in_process(instance=instance, raise_on_error=False).success
        assert proxy.failures > 20  # errors really were injected, and retried
    # read back through the server directly: every table and image is whole
    direct = Storage(root=f"s3://{bucket}/pipeline")
    monkeypatch.setenv("MEDRWR_S3_ENDPOINT_URL", moto_server)
    direct = Storage(root=f"s3://{bucket}/pipeline")
    vqa = direct.read_table("vqa_items", "vqa_rad")
    refs = {r for refs in vqa["image_refs"] for r in refs}
    assert vqa.height > 0 and direct.existing_images(refs) == refs
    passages = direct.read_table("kb_passages", "pubmedqa")
    assert (
        passages["native_id"].n_unique() == 40
    )  # every one of the 40 records read, chunked to fit the embedder
    pointer = KbPointer.from_row(direct.read_table("kb_text_index"))
    tbl = direct.kb_location().connect().open_table(pointer.physical_table)
    assert tbl.count_rows() == passages.height and pointer.tag in tbl.tags.list()
