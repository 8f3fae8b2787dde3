"""The echo graph in-process: echo_studies[synthetic] + ecbench, on local storage and on moto S3."""

import io

import pytest
from dagster import DagsterInstance, materialize

from assets.benchmark.assets import ecbench
from assets.echo.assets import echo_studies
from orchestration.definitions import build_resources
from storage.root import Storage


def _run(root: str, instance: DagsterInstance):
    resources = build_resources()
    instance.add_dynamic_partitions("echo_sources", ["synthetic"])
    r1 = materialize([echo_studies], partition_key="synthetic", resources=resources, instance=instance)
    r2 = materialize([echo_studies.to_source_asset(), ecbench], resources=resources, instance=instance)
    return r1, r2


def _assert_ok(r1, r2, store: Storage):
    assert r1.success and r2.success
    checks = [
        e.asset_check_evaluation_data
        for e in r1.all_events + r2.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert {c.check_name for c in checks} == {
        "echo_studies_no_phi",
        "echo_studies_contract",
        "ecbench_balanced_answers",
        "ecbench_patient_splits",
        "ecbench_image_refs",
        "ecbench_no_duplicates",
        "ecbench_not_empty",
    }
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


def _resources(root: str):
    return build_resources()


def _check_results(result):
    return {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


@pytest.mark.slow
def test_real_files_and_hostile_files_in_a_dynamic_partition(tmp_path, storage, monkeypatch):
    import shutil

    from pydicom.data import get_testdata_file

    from tests.echo.test_echo_ingest import REAL
    from tests.echo.test_echo_robust import _hostile

    src = tmp_path / "site_a"
    _hostile(src)
    for name in REAL:
        shutil.copy(get_testdata_file(name), src / name)
    monkeypatch.setenv("MEDRWR_SOURCE_ECHO_SITE_A", str(src))
    monkeypatch.setenv("MEDRWR_DEID_SALT", "38bc7fae041192ba7cf80fb1a52b2cb6999231b5e216fdb2da0db0e17d67b3db")
    monkeypatch.setenv("MEDRWR_RESTRICTED_ROOT", str(tmp_path / "restricted"))
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("echo_sources", ["site-a"])
        # most files here are hostile on purpose: allow any quarantined share for this partition
        result = materialize(
            [echo_studies],
            partition_key="site-a",
            resources=_resources(storage.root),
            instance=instance,
            run_config={
                "ops": {"echo_studies": {"config": {"max_quarantine_share": 1.0, "accept_full_frame": True}}}
            },
        )
    assert result.success and all(_check_results(result).values())
    studies = storage.read_table("echo_studies", "site-a")
    # good.dcm and color3d_jpeg_baseline.dcm; examples_ybr_color.dcm and examples_palette.dcm have regions
    # larger than the image and are quarantined, never clipped; the three real files without regions
    # (full frames accepted for this source) burn in their InstitutionName ("BAPTIST MED CTR"), which the
    # OCR pixel check reads: quarantined (they were published before it)
    assert studies.height == 2
    assert set(studies["n_frames"]) == {6, 120}
    quarantine = storage.read_quarantine("echo_studies", "site-a")
    assert quarantine.height == 14 and quarantine["reason"].str.contains(":").all()
    assert quarantine.filter(quarantine["reason"].str.starts_with("ultrasound region larger")).height == 2
    burned = quarantine.filter(quarantine["reason"].str.starts_with("identifier burned into the pixels"))
    assert burned.height == 3 and burned["reason"].str.contains("InstitutionName").all()
    assert not any(
        ".dcm" in v for col in ("source_file", "row", "raw", "reason") for v in quarantine[col].to_list()
    )
    keymap = (tmp_path / "restricted" / "keymaps" / "echo_studies" / "site-a.keymap.csv").read_text()
    assert "examples_ybr_color.dcm" in keymap


@pytest.mark.slow
def test_phi_check_blocks_a_leak(tmp_path, storage, monkeypatch):
    """A clip whose file name is the patient's name reaches a published place (the PNG text chunk a
    patched writer adds): the blocking PHI check fails the run."""
    import pydicom

    from assets.echo import dicom
    from assets.echo.synth import SynthOptions, generate

    files, _ = generate(2, 1, seed=3, options=SynthOptions(frames=6))
    src = tmp_path / "leaky"
    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    patient = str(pydicom.dcmread(src / "clip_0000.dcm").PatientName).split("^")[0]
    real_png = dicom.png_bytes

    def png_with_text(frame):
        from PIL import Image, PngImagePlugin

        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", f"patient {patient}")
        buf = io.BytesIO()
        Image.open(io.BytesIO(real_png(frame))).save(buf, "PNG", pnginfo=info)
        return buf.getvalue()

    monkeypatch.setattr(dicom, "png_bytes", png_with_text)
    monkeypatch.setenv("MEDRWR_SOURCE_ECHO_SITE_LEAKY", str(src))
    monkeypatch.setenv("MEDRWR_DEID_SALT", "e74a65ef16d33409adb3cb03d4ef8571aca5c18403cb90dc0bb38b3f64785dfe")
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("echo_sources", ["site-leaky"])
        result = materialize(
            [echo_studies],
            partition_key="site-leaky",
            resources=_resources(storage.root),
            instance=instance,
            raise_on_error=False,
        )
    assert not result.success
    checks = _check_results(result)
    assert checks["echo_studies_no_phi"] is False and checks["echo_studies_contract"] is True


def test_smoke_plan_runs_echo_then_ecbench():
    from orchestration.main import plan

    steps = [(s.job, s.partition) for s in plan("smoke")]
    assert ("echo_ingest_job", "synthetic") in steps and ("ecbench_job", None) in steps
    assert steps.index(("echo_ingest_job", "synthetic")) < steps.index(("ecbench_job", None))


def test_definitions_load_with_echo_jobs():
    from orchestration.definitions import defs

    assert defs.resolve_job_def("echo_ingest_job") and defs.resolve_job_def("ecbench_job")
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"echo_studies", "ecbench"} <= keys
