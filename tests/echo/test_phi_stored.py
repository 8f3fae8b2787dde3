"""The stored-output PHI audit (issue 20, must show): after a real materialization, DAGSTER_HOME (run and
event-log databases, run snapshots, tags, compute logs) and the storage root are read back and searched for
every identifier of the source and its variants; a clean run passes, planted leaks are found."""

import sqlite3

import pydicom
import pytest
from dagster import DagsterInstance, materialize

from assets.echo.assets import echo_studies
from assets.echo.synth import SynthOptions, generate, write_manifest_csv
from orchestration.definitions import build_resources
from orchestration.phi_audit import main
from quality.phi import Identifier
from quality.phi_stored import audit_stored, folder_identifiers, stored_places


def test_stored_places_read_sqlite_blobs_and_file_names(tmp_path):
    import zlib

    home = tmp_path / "home"
    (home / "history").mkdir(parents=True)
    con = sqlite3.connect(home / "history" / "runs.db")
    con.execute("CREATE TABLE snapshots (id TEXT, snapshot_body BLOB)")
    con.execute(
        "INSERT INTO snapshots VALUES ('s1', ?)", (zlib.compress(b'{"default": "/data/Hartwell Alex"}'),)
    )
    con.commit()
    con.close()
    (home / "Hartwell_Alex.log").write_text("nothing")
    ids = {
        "a.dcm": {
            Identifier("HARTWELL^ALEX", "PatientName", "PN"),
            Identifier("HARTWELL", "PatientName", "PN"),
        }
    }
    result = audit_stored(ids, {"DAGSTER_HOME": home})
    assert ("PatientName", "DAGSTER_HOME/history/runs.db:snapshots.snapshot_body") in result.leaks
    assert ("PatientName", "DAGSTER_HOME/<withheld> (file name)") in result.leaks
    assert all("Hartwell" not in where for _, where in result.leaks)
    assert {p.where for p in stored_places(home, "h")} >= {"h/history/runs.db:snapshots.snapshot_body"}


@pytest.mark.slow
def test_dagster_home_and_storage_root_after_a_run(tmp_path, storage, monkeypatch, capsys):
    files, rows = generate(3, 2, seed=3, options=SynthOptions(frames=4))
    src = tmp_path / "site-p"
    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    (src / "labels.csv").write_bytes(write_manifest_csv(rows))
    ds = pydicom.dcmread(src / "clip_0000.dcm", stop_before_pixels=True)
    monkeypatch.setenv("MEDRWR_SOURCE_ECHO_SITE_P", str(src))
    monkeypatch.setenv("MEDRWR_DEID_SALT", "a7321117997e1ece6a2a1ceab78d3acdd71c51a2706791659f9855b4d9a21e02")
    monkeypatch.setenv("MEDRWR_RESTRICTED_ROOT", str(tmp_path / "restricted"))
    home = tmp_path / "instance_home"
    home.mkdir()
    with DagsterInstance.local_temp(str(home)) as instance:
        instance.add_dynamic_partitions("echo_sources", ["site-p"])
        result = materialize(
            [echo_studies], partition_key="site-p", resources=build_resources(), instance=instance
        )
        assert result.success
        roots = {"storage root": storage.root, "DAGSTER_HOME": home}
        ids = folder_identifiers(src)
        clean = audit_stored(ids, roots)
        assert clean.passed, clean.describe()
        assert clean.places_searched > 50

        # planted where an operator or a resource could put them: a run tag and an event-log message
        run = instance.get_run_by_id(result.run_id)
        family, given = str(ds.PatientName).split("^")[:2]
        dob = ds.PatientBirthDate
        instance.add_run_tags(result.run_id, {"note": f"{given[0]}. {family.title()}"})
        instance.report_engine_event(f"born {dob[6:]}.{dob[4:6]}.{dob[:4]}", run)
        leaky = audit_stored(ids, roots)
    attributes = {a for a, _ in leaky.leaks}
    assert {"PatientName", "PatientBirthDate"} <= attributes
    assert any("runs.db:run_tags" in where for _, where in leaky.leaks)
    code = main(["--source", str(src), "--scan", f"DAGSTER_HOME={home}"])
    out = capsys.readouterr().out
    assert code == 1 and "PatientName" in out and family not in out and family.title() not in out
