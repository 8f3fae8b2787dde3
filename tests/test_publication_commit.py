"""Publication has one commit point, its gate record: a crash between the table write and the gate record
serves nothing, locally and on S3; a step that fails with an exception leaves no staging behind; a gate that
withdraws a published partition records it on the instance (what the UI shows).

Real materializations of ``vqa_items[vqa_rad]`` (the bundled sample: it stages images, then publishes);
the crash is an ENOSPC raised by the storage write it names."""

import errno

import polars as pl
import pytest
from dagster import AllPartitionMapping, AssetIn, AssetKey, DagsterInstance, asset, materialize

from assets.common.io_managers import UnpublishedPartition
from assets.ingest.assets import vqa_items
from orchestration.definitions import build_resources
from storage.root import S3Settings, Storage

pytestmark = pytest.mark.timeout(300)


@asset(ins={"vqa_items": AssetIn(partition_mapping=AllPartitionMapping())})
def vqa_reader(vqa_items: pl.DataFrame) -> None:
    """Downstream work: reads every published vqa_items partition through the IO manager."""
    assert vqa_items.height > 0


def _ingest(instance):
    return materialize(
        [vqa_items, vqa_reader],
        selection=[vqa_items],
        partition_key="vqa_rad",
        instance=instance,
        resources=build_resources(),
        raise_on_error=False,
    )


def _read(instance):
    return materialize(
        [vqa_items, vqa_reader],
        selection=[vqa_reader],
        instance=instance,
        resources=build_resources(),
        raise_on_error=False,
    )


def _failure(result) -> str:
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return str(failure.step_failure_data.error)


@pytest.fixture(params=["local", "s3"])
def store(request, storage) -> Storage:
    if request.param == "local":
        return storage
    root = request.getfixturevalue("s3_env")
    return Storage(root=root, s3=S3Settings.from_env())


def _crash_on(monkeypatch, when):
    """The named storage write fails with a full disk (what the reviewer saw on a nearly full disk)."""
    real = Storage.write_gate_record

    def write_gate_record(self, table, partition, record):
        if table == "vqa_items" and when(record):
            raise OSError(errno.ENOSPC, f"no space left on the device writing the gate record of {table}")
        return real(self, table, partition, record)

    monkeypatch.setattr(Storage, "write_gate_record", write_gate_record)


def test_a_crash_between_the_table_and_its_gate_record_serves_nothing(store, monkeypatch):
    instance = DagsterInstance.ephemeral()
    _crash_on(monkeypatch, lambda record: record.get("status") == "passed")
    crashed = _ingest(instance)
    assert not crashed.success
    assert store.exists(*store.table_parts("vqa_items", "vqa_rad"))  # the table was written, then the crash
    refused = _read(instance)
    assert not refused.success
    message = _failure(refused)
    assert UnpublishedPartition.__name__ in message and "interrupted before its commit" in message

    monkeypatch.undo()
    assert _ingest(instance).success  # published again: committed, served
    assert _read(instance).success


def test_a_crash_before_the_table_write_keeps_the_previous_version_served(storage, monkeypatch):
    instance = DagsterInstance.ephemeral()
    assert _ingest(instance).success
    real = Storage.write_bytes

    def write_bytes(self, data, *parts):
        if parts[:2] == ("tables", "vqa_items"):
            raise OSError(errno.ENOSPC, "no space left on the device writing the table")
        return real(self, data, *parts)

    monkeypatch.setattr(Storage, "write_bytes", write_bytes)
    assert not _ingest(instance).success
    monkeypatch.undo()
    assert storage.read_gate_record("vqa_items", "vqa_rad")["status"] == "publishing"
    assert _read(instance).success  # the previous table, which the kept record names, is still served


def test_a_table_changed_after_publication_is_not_served(storage):
    instance = DagsterInstance.ephemeral()
    assert _ingest(instance).success
    table = storage.read_table("vqa_items", "vqa_rad")
    storage.write_table(table.head(1), "vqa_items", "vqa_rad")  # not through the gate
    refused = _read(instance)
    assert not refused.success and "the file changed after publication" in _failure(refused)


def test_staging_is_cleaned_when_the_step_fails_with_an_exception(store, monkeypatch):
    instance = DagsterInstance.ephemeral()
    real = Storage.write_quarantine

    def write_quarantine(self, df, table, partition=None):
        raise OSError(errno.ENOSPC, f"no space left on the device writing the quarantine of {table}")

    monkeypatch.setattr(Storage, "write_quarantine", write_quarantine)
    failed = _ingest(instance)
    assert not failed.success and "quarantine of vqa_items" in _failure(failed)
    assert store.list("_staging") == []  # the images staged before the failure are gone
    assert not store.exists(*store.table_parts("vqa_items", "vqa_rad"))
    monkeypatch.setattr(Storage, "write_quarantine", real)
    assert _ingest(instance).success and store.list("_staging") == []


def test_a_withdrawal_is_recorded_on_the_instance(tmp_path, monkeypatch, storage):
    """After a gate withdraws a published partition, the instance (and so the UI) says so: an observation on
    that partition marks it withdrawn, and the failed check is the latest check result."""
    import shutil

    from assets.common.profiles import SAMPLE_DATA_DIR

    data = tmp_path / "data"
    shutil.copytree(SAMPLE_DATA_DIR / "vqa_rad", data / "vqa_rad")
    monkeypatch.setenv("MEDRWR_DATA_DIR", str(data))
    instance = DagsterInstance.ephemeral()
    assert _ingest(instance).success
    [first] = instance.fetch_materializations(AssetKey("vqa_items"), limit=1).records
    # every image of the source unreadable: the contract fails on the next run
    for image in (data / "vqa_rad" / "VQA_RAD Image Folder").iterdir():
        image.write_bytes(b"not an image")
    refused = _ingest(instance)
    assert not refused.success and not storage.exists(*storage.table_parts("vqa_items", "vqa_rad"))
    [observation] = instance.fetch_observations(AssetKey("vqa_items"), limit=1).records
    event = observation.asset_observation
    assert event.partition == "vqa_rad" and event.metadata["withdrawn"].value is True
    assert event.metadata["withdrawn_by_run"].value == refused.run_id
    assert event.metadata["withdrawn_version_run"].value == first.run_id
    assert observation.storage_id > first.storage_id  # later than the materialization the UI showed


def test_the_mass_removal_guard_measures_against_the_committed_passages_only(storage):
    """kb_passages' removal guard reads the published passages as their gate record commits them: passages
    truncated behind the gate (one row left, so a 99 % removal would look like none) fail the check unless
    allow_shrink, with a message saying why."""
    from assets.knowledge.assets import KbPassagesConfig, _removal_check

    published = pl.DataFrame({"id": [f"p{i}" for i in range(100)], "text": ["x"] * 100})
    storage.publish_table(published, "kb_passages", "pubmedqa", {"status": "passed", "run_id": "r1"})
    new = published.head(1)
    assert not _removal_check(storage, "pubmedqa", new, KbPassagesConfig()).passed  # 99 % removed: refused

    storage.write_table(new, "kb_passages", "pubmedqa")  # truncated behind the gate
    check = _removal_check(storage, "pubmedqa", new, KbPassagesConfig())
    assert not check.passed
    assert "the file changed after publication" in check.metadata["published_unverified"].value
    assert "allow_shrink" in check.metadata["fix"].value
    assert _removal_check(storage, "pubmedqa", new, KbPassagesConfig(allow_shrink=True)).passed
