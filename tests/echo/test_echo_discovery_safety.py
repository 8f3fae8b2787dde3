"""One bad file never fails or hangs a partition (issue 20, section 5): symbolic links leading outside the
source or nowhere, named pipes, links to folders, backslashes in names, an extreme frame rate; every problem
is quarantined under the file's key and no path reaches a message, Dagster's instance or stderr."""

import io
import os

import pydicom
import pytest
from dagster import DagsterInstance, materialize
from dagster._serdes import serialize_value

from assets.echo.assets import echo_studies
from assets.echo.source import read_echo_source
from assets.echo.synth import SynthOptions, generate
from orchestration.definitions import build_resources
from quality.contracts import all_refs, with_volume
from quality.echo_contracts import check_echo_studies
from storage.sources import SourceDir

SALT = "bd8b213d08f5fb3c9f029d5879c8206e16f51e7c37bd748e919cf9a178035473"  # secrets.token_hex(32)
PHI_FOLDER = "Müller Jürgen 1953-04-02"


def _clips(folder, n=3, seed=4):
    files, _ = generate(n, n, seed=seed, options=SynthOptions(frames=4))
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def _bad_entry(kind: str, src, outside):
    outside.mkdir(parents=True, exist_ok=True)
    if kind == "link_outside":
        (outside / "secret.dcm").write_bytes((src / "clip_0000.dcm").read_bytes())
        os.symlink(outside / "secret.dcm", src / "elsewhere.dcm")
    elif kind == "broken_link":
        os.symlink(src / "gone.dcm", src / "dangling.dcm")
    elif kind == "fifo":
        os.mkfifo(src / "pipe.dcm")
    elif kind == "folder_link_outside":
        (outside / "more").mkdir(exist_ok=True)
        (outside / "more" / "x.dcm").write_bytes((src / "clip_0000.dcm").read_bytes())
        os.symlink(outside / "more", src / "linked_folder")
    else:
        raise AssertionError(kind)


def _reasons(result) -> dict[str, str]:
    return {result.key_map.get(r.item_id, r.row): r.reason for r in result.rejected}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["link_outside", "broken_link", "fifo", "folder_link_outside"])
def test_a_bad_entry_is_quarantined_and_the_rest_is_read(tmp_path, storage, kind):
    src, outside = tmp_path / PHI_FOLDER / "src", tmp_path / PHI_FOLDER / "outside"
    _clips(src)
    _bad_entry(kind, src, outside)
    result = read_echo_source(SourceDir(str(src)), storage, "site-0001", salt=SALT)
    assert result.frame.height == 3  # the good clips
    [rejected] = result.rejected
    assert rejected.item_id.startswith("f_") and rejected.reason.startswith("not read: ")
    assert str(tmp_path) not in rejected.reason and "Müller" not in rejected.reason
    assert "outside" not in str(result.frame.to_dicts()) and not any(
        "outside" in str(v) for v in result.metadata().values()
    )
    assert result.audit().passed


def test_each_bad_entry_names_its_problem(tmp_path, storage):
    src, outside = tmp_path / "src", tmp_path / "outside"
    _clips(src)
    for kind in ("link_outside", "broken_link", "fifo", "folder_link_outside"):
        _bad_entry(kind, src, outside)
    os.symlink(src / "clip_0001.dcm", src / "alias.dcm")  # a link inside the root to a clip: read
    result = read_echo_source(SourceDir(str(src)), storage, "site-0001", salt=SALT)
    reasons = _reasons(result)
    assert "leads outside the source folder" in reasons["elsewhere.dcm"]
    assert "broken symbolic link" in reasons["dangling.dcm"]
    assert "named pipe" in reasons["pipe.dcm"]
    assert "symbolic link to a folder" in reasons["linked_folder"]
    assert "duplicate SOP instance" in reasons["clip_0001.dcm"]  # alias.dcm, read through the link, was first
    assert result.frame.height == 3


def test_a_file_name_with_a_backslash_is_read_literally(tmp_path, storage):
    src = tmp_path / "src"
    files = _clips(src, n=2)
    (src / "clip_0001.dcm").rename(src / "2024\\ECHO\\clip.dcm")  # one POSIX name holding backslashes
    result = read_echo_source(SourceDir(str(src)), storage, "site-0001", salt=SALT)
    assert result.frame.height == 2 and not result.rejected
    assert "2024\\ECHO\\clip.dcm" in result.key_map.values()
    assert len(files) == 2


def _with_frame_time(data: bytes, ms: float) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.FrameTime = ms
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_an_extreme_frame_time_quarantines_that_file_not_the_partition(tmp_path, storage):
    src = tmp_path / "src"
    _clips(src, n=5)
    (src / "clip_0002.dcm").write_bytes(_with_frame_time((src / "clip_0002.dcm").read_bytes(), 0.5))
    result = read_echo_source(SourceDir(str(src)), storage, "site-0001", salt=SALT)
    assert result.frame.height == 4
    assert _reasons(result)["clip_0002.dcm"].startswith("implausible frame rate: 2000 Hz from FrameTime")
    df = result.frame
    contract = with_volume(
        check_echo_studies(df, storage.existing_images(all_refs(df["keyframe_refs"]))), df.height, 1, 0.25
    )
    assert contract.success, contract.failures


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_no_source_path_reaches_dagster_home_or_stderr(tmp_path, storage, monkeypatch, capfd):
    """A partition whose folder is named after a patient, holding every kind of bad entry, materializes (the
    good clips are published, the bad entries quarantined) and nothing under DAGSTER_HOME (run snapshots,
    run config, tags, event log, any file) nor stderr/stdout names the folder."""
    src, outside = tmp_path / PHI_FOLDER / "echo", tmp_path / "elsewhere"
    _clips(src, n=6)
    for kind in ("link_outside", "broken_link", "fifo", "folder_link_outside"):
        _bad_entry(kind, src, outside)
    (src / "clip_0003.dcm").write_bytes(_with_frame_time((src / "clip_0003.dcm").read_bytes(), 0.5))
    (src / "clip_0004.dcm").rename(src / "a\\b.dcm")
    monkeypatch.setenv("MEDRWR_SOURCE_ECHO_SITE_0042", str(src))
    monkeypatch.setenv("MEDRWR_DEID_SALT", SALT)
    monkeypatch.setenv("MEDRWR_RESTRICTED_ROOT", str(tmp_path / "restricted"))
    home = tmp_path / "dagster_home_disk"
    home.mkdir()
    with DagsterInstance.local_temp(tempdir=str(home)) as instance:
        instance.add_dynamic_partitions("echo_sources", ["site-0042"])
        result = materialize(
            [echo_studies],
            partition_key="site-0042",
            resources=build_resources(),
            instance=instance,
            run_config={"ops": {"echo_studies": {"config": {"max_quarantine_share": 0.6}}}},
        )
        assert result.success
        texts = []
        for run in instance.get_runs():
            texts.append(serialize_value(run))
            texts.append(serialize_value(instance.get_job_snapshot(run.job_snapshot_id)))
            texts.append(
                serialize_value(instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id))
            )
            texts += [serialize_value(e) for e in instance.all_logs(run.run_id)]
    studies = storage.read_table("echo_studies", "site-0042")
    assert studies.height == 5  # 6 clips, one with a 2000 Hz frame time
    quarantine = storage.read_quarantine("echo_studies", "site-0042")
    assert quarantine.height == 5  # 4 bad entries, 1 frame rate
    out, err = capfd.readouterr()
    texts += [out, err, str(quarantine.to_dicts())]
    texts += [p.read_bytes().decode("utf-8", "replace") for p in home.rglob("*") if p.is_file()]
    from pathlib import Path

    texts += [str(p) for p in home.rglob("*")] + [str(p) for p in Path(storage.root).rglob("*")]
    for text in texts:
        for needle in (PHI_FOLDER, "Müller", "Jürgen", "M\\u00fcller", str(outside)):
            assert needle not in text


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_manifest_that_is_a_pipe_fails_the_run_without_hanging_or_naming_the_folder(
    tmp_path, storage, monkeypatch
):
    src = tmp_path / PHI_FOLDER
    _clips(src, n=2)
    os.mkfifo(src / "labels.csv")
    monkeypatch.setenv("MEDRWR_SOURCE_ECHO_SITE_0043", str(src))
    monkeypatch.setenv("MEDRWR_DEID_SALT", SALT)
    monkeypatch.setenv("MEDRWR_RESTRICTED_ROOT", str(tmp_path / "restricted"))
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("echo_sources", ["site-0043"])
        result = materialize(
            [echo_studies],
            partition_key="site-0043",
            resources=build_resources(),
            instance=instance,
            raise_on_error=False,
        )
        logs = [serialize_value(e) for run in instance.get_runs() for e in instance.all_logs(run.run_id)]
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "not a regular file (a named pipe)" in str(failure.event_specific_data.error)
    assert not any(PHI_FOLDER in text or "M\\u00fcller" in text for text in logs)
