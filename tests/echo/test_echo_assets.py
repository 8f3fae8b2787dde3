"""The echo graph in-process: echo_studies[synthetic] + ecbench, on local storage and on moto S3."""

import pytest
from dagster import DagsterInstance, materialize

from assets.benchmark import ecbench
from assets.echo import echo_studies
from orchestration.io_managers import ParquetTableIOManager
from orchestration.resources import SourcesResource, StorageResource
from orchestration.storage import Storage


def _run(root: str, instance: DagsterInstance):
    storage = StorageResource(root=root)
    resources = {"storage": storage, "sources": SourcesResource(), "table_io": ParquetTableIOManager(storage=storage)}
    instance.add_dynamic_partitions("echo_sources", ["synthetic"])
    r1 = materialize([echo_studies], partition_key="synthetic", resources=resources, instance=instance)
    r2 = materialize([echo_studies.to_source_asset(), ecbench], resources=resources, instance=instance)
    return r1, r2


def _assert_ok(r1, r2, store: Storage):
    assert r1.success and r2.success
    checks = [e.asset_check_evaluation_data for e in r1.all_events + r2.all_events
              if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert {c.check_name for c in checks} == {
        "echo_studies_no_phi", "echo_studies_contract", "ecbench_balanced_answers", "ecbench_patient_splits",
        "ecbench_image_refs", "ecbench_no_duplicates"}
    assert all(c.passed for c in checks), [c.check_name for c in checks if not c.passed]
    studies = store.read_table("echo_studies", "synthetic")
    assert studies.height == 8 and set(studies["view"]) == {"A4C", "A2C", "PLAX", "PSAX"}
    items = store.read_table("ecbench")
    assert items.height >= 8 and set(items["question_type"]) >= {"view", "ef_category"}
    version = r2.asset_materializations_for_node("ecbench")[0].metadata["version"].value
    assert store.exists("benchmarks", "ecbench", version, "manifest.json")


@pytest.mark.slow
def test_materialize_local(storage):
    with DagsterInstance.ephemeral() as instance:
        r1, r2 = _run(storage.root, instance)
        _assert_ok(r1, r2, storage)


@pytest.mark.slow
@pytest.mark.s3
def test_materialize_s3(s3_env, s3_storage):
    with DagsterInstance.ephemeral() as instance:
        r1, r2 = _run(s3_env, instance)
        _assert_ok(r1, r2, s3_storage)
