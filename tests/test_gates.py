"""Gates decide before anything is published: a failed blocking check leaves no table, no preview, no
materialization, only the quarantine and the check results; downstream work cannot read the partition; one
failed partition does not hide the others; the main command stops downstream work and names the failure."""

import io
import json

import pydicom
import pytest
from dagster import (
    AssetCheckKey,
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    EventRecordsFilter,
    materialize,
)

from assets.benchmark.assets import ecbench
from assets.common.io_managers import UnpublishedPartition
from assets.echo import dicom
from assets.echo.assets import echo_studies
from assets.echo.synth import SynthOptions, generate, write_manifest_csv
from orchestration.definitions import build_defs, build_resources
from storage.root import Storage


def _echo_source(folder):
    files, rows = generate(4, 2, seed=11, options=SynthOptions(frames=6))
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "labels.csv").write_bytes(write_manifest_csv(rows))
    ds = pydicom.dcmread(folder / "clip_0000.dcm")
    return str(ds.PatientName).split("^")[0], str(ds.PatientID)


def _leak_into_png_chunks(monkeypatch, name: str, mrn: str):
    """A regression in the PNG writer: the keyframes carry the patient's name and MRN in a text chunk."""
    from PIL import Image, PngImagePlugin

    real = dicom.png_bytes

    def png_with_text(frame):
        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", f"patient {name} mrn {mrn}")
        buf = io.BytesIO()
        Image.open(io.BytesIO(real(frame))).save(buf, "PNG", pnginfo=info)
        return buf.getvalue()

    monkeypatch.setattr(dicom, "png_bytes", png_with_text)


def _events_text(instance: DagsterInstance) -> str:
    records = instance.get_event_records(
        EventRecordsFilter(event_type=DagsterEventType.ASSET_MATERIALIZATION)
    )
    records += instance.get_event_records(
        EventRecordsFilter(event_type=DagsterEventType.ASSET_CHECK_EVALUATION)
    )
    records += instance.get_event_records(EventRecordsFilter(event_type=DagsterEventType.STEP_FAILURE))
    return "\n".join(str(r.event_log_entry) for r in records)


def _materialize_echo(instance, key):
    return materialize(
        [echo_studies],
        partition_key=key,
        resources=build_resources(),
        instance=instance,
        raise_on_error=False,
    )


@pytest.mark.slow
def test_leaky_partition_publishes_nothing_and_nothing_downstream_reads_it(tmp_path, monkeypatch, storage):
    src = tmp_path / "raw" / "site-x"
    name, mrn = _echo_source(src)
    monkeypatch.setenv("MEDRWR_SOURCE_ECHO_SITE_X", str(src))
    monkeypatch.setenv("MEDRWR_DEID_SALT", "0d2ca9efac69a4a1e1f853617e094b6c4e0a11ee4ddf1a6013a8fe94cde5fbaa")
    monkeypatch.setenv("MEDRWR_RESTRICTED_ROOT", str(tmp_path / "restricted"))
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("echo_sources", ["site-x"])
        # a clean first drop is published
        assert _materialize_echo(instance, "site-x").success
        assert storage.exists(*storage.table_parts("echo_studies", "site-x"))
        images_before = set(storage.find("images"))

        # the second run of the same source leaks the patient's name and MRN into the keyframes
        _leak_into_png_chunks(monkeypatch, name, mrn)
        result = _materialize_echo(instance, "site-x")
        assert not result.success
        [phi] = [c for c in result.get_asset_check_evaluations() if c.check_name == "echo_studies_no_phi"]
        assert not phi.passed and phi.partition == "site-x"
        # nothing of the failed run is published: the earlier version is withdrawn, nothing new is stored
        assert not storage.exists(*storage.table_parts("echo_studies", "site-x"))
        assert set(storage.find("images")) == images_before
        assert not storage.find("_staging") and not list((tmp_path / "restricted" / "staging").rglob("*.png"))
        assert storage.read_gate_record("echo_studies", "site-x")["status"] == "failed"
        mats = result.asset_materializations_for_node("echo_studies")
        assert mats == []
        # the quarantine is written, and holds no identifier either
        quarantine = storage.read_quarantine("echo_studies", "site-x")
        assert name not in quarantine.write_csv() and mrn not in quarantine.write_csv()
        # no event in the instance (what the UI shows) carries the name or the MRN
        text = _events_text(instance)
        assert name not in text and mrn not in text

        # downstream work refuses the partition instead of reading stale or leaky data
        downstream = materialize(
            [echo_studies.to_source_asset(), ecbench],
            resources=build_resources(),
            instance=instance,
            raise_on_error=False,
        )
        assert not downstream.success
        assert not storage.exists(*storage.table_parts("ecbench"))
        [failure] = [e for e in downstream.all_events if e.event_type_value == "STEP_FAILURE"]
        assert "latest gate failed" in str(failure.event_specific_data.error)
        with pytest.raises(UnpublishedPartition, match="latest gate failed"):
            build_resources()["table_io"]._refuse_failed(storage, "echo_studies", "site-x")


def test_fully_quarantined_partition_fails_its_contract(tmp_path, monkeypatch, sample_data):
    folder = tmp_path / "mcq"
    folder.mkdir()
    (folder / "items.csv").write_text("q,a,b,ans\nWhat?,x,y,Z\nWhy?,x,y,Q\n")
    (folder / "mcq_mapping.yaml").write_text(
        "files: [items.csv]\nquestion: q\noptions: [a, b]\nanswer: ans\nlicense: CC0-1.0\nsplit: null\n"
        "default_split: test\n"
    )
    monkeypatch.setenv("MEDRWR_SOURCE_MCQ_CUSTOM", str(folder))
    result = (
        build_defs()
        .resolve_job_def("text_qa_ingest_job")
        .execute_in_process(
            partition_key="mcq_custom", instance=DagsterInstance.ephemeral(), raise_on_error=False
        )
    )
    assert not result.success
    [check] = result.get_asset_check_evaluations()
    failed = json.dumps(check.metadata["failed"].value)
    assert not check.passed and "rows_kept>=1" in failed and "quarantined_share" in failed
    store = Storage()
    assert not store.exists(*store.table_parts("text_qa_items", "mcq_custom"))
    assert store.read_quarantine("text_qa_items", "mcq_custom").height == 2


def test_checks_are_partitioned(tmp_path, monkeypatch, sample_data):
    """One failed partition is recorded against that partition only; the others keep their result."""
    folder = tmp_path / "pubmedqa"
    folder.mkdir()
    (folder / "ori_pqal.json").write_text(
        json.dumps({"1": {"QUESTION": "Q?", "CONTEXTS": ["c"], "final_decision": "perhaps"}})
    )
    monkeypatch.setenv("MEDRWR_SOURCE_PUBMEDQA", str(folder))
    defs = build_defs()
    with DagsterInstance.ephemeral() as instance:
        job = defs.resolve_job_def("text_qa_ingest_job")
        assert job.execute_in_process(partition_key="medqa", instance=instance).success
        assert not job.execute_in_process(
            partition_key="pubmedqa", instance=instance, raise_on_error=False
        ).success
        history = instance.event_log_storage.get_asset_check_execution_history(
            AssetCheckKey(AssetKey("text_qa_items"), "text_qa_items_contract"), limit=10
        )
        by_partition = {r.partition: r.status.value for r in history}
        assert by_partition == {"medqa": "SUCCEEDED", "pubmedqa": "FAILED"}


@pytest.mark.slow
def test_main_command_stops_downstream_of_a_failed_upstream(tmp_path, monkeypatch, capsys):
    from orchestration.main import run

    empty = tmp_path / "empty_slake"
    empty.mkdir()
    monkeypatch.setenv("MEDRWR_SOURCE_SLAKE", str(empty))
    assert run("smoke") == 1
    captured = capsys.readouterr()
    assert "vqa_ingest_job[slake]" in captured.err
    assert "NOT RUN (upstream failed): kb_index_job (upstream vqa_items failed)" in captured.err
    assert "ecbench_job" not in captured.err  # unrelated work still ran
    assert not Storage().exists(*Storage.table_parts("kb_image_cases"))


def test_a_refused_candidate_keeps_the_previous_version_readable(monkeypatch, tmp_path):
    """An asset that keeps its previous version when a candidate is refused (the promoted checkpoint): after
    the refusal the old pointer is still served, and the failure says the candidate was refused and why."""
    import polars as pl
    from dagster import AssetCheckSpec, AssetExecutionContext, Config, asset

    from assets.common.gates import Publication, publish_or_refuse
    from assets.common.metadata import check_result
    from assets.common.records import quarantine_frame
    from assets.common.resources import StorageResource

    class Candidate(Config):
        value: int
        passes: bool

    @asset(
        io_manager_key="table_io",
        check_specs=[AssetCheckSpec("no_worse", asset="kept_pointer", blocking=True)],
    )
    def kept_pointer(context: AssetExecutionContext, config: Candidate, storage: StorageResource):
        frame = pl.DataFrame({"value": [config.value]})
        pub = Publication(
            "kept_pointer",
            None,
            frame,
            quarantine_frame([], "kept_pointer", None),
            metadata={},
            data_version=str(config.value),
            withdraw_previous=False,
        )
        yield from publish_or_refuse(
            context, storage.get(), pub, [check_result("no_worse", config.passes, value=config.value)]
        )

    @asset(io_manager_key="table_io")
    def reader(kept_pointer: pl.DataFrame) -> pl.DataFrame:
        return kept_pointer

    monkeypatch.setenv("MEDRWR_STORAGE_ROOT", str(tmp_path / "storage"))
    instance = DagsterInstance.ephemeral()
    resources = build_resources()

    def run(value: int, passes: bool):
        config = {"ops": {"kept_pointer": {"config": {"value": value, "passes": passes}}}}
        return materialize(
            [kept_pointer], resources=resources, instance=instance, run_config=config, raise_on_error=False
        )

    assert run(1, True).success
    refused = run(2, False)
    assert not refused.success
    failure = [e for e in refused.all_events if e.event_type == DagsterEventType.STEP_FAILURE][0]
    message = failure.step_failure_data.user_failure_data.description
    assert "the candidate was refused" in message and "stays readable" in message
    store = Storage(root=str(tmp_path / "storage"))
    record = store.read_gate_record("kept_pointer")
    assert record["status"] == "passed" and record["last_refusal"]["failed_checks"] == ["no_worse"]
    downstream = materialize(
        [kept_pointer.to_source_asset(), reader], resources=resources, instance=instance, selection=[reader]
    )
    assert downstream.success and downstream.output_for_node("reader")["value"].to_list() == [1]
