"""The UI starts with the run settings the main command recorded: resolved, round-tripped, secrets left out,
a conflicting shell refused, and the printed command runs as printed."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from orchestration import ui
from orchestration.instance import ensure_dagster_home


def test_run_settings_are_resolved_and_keep_secrets_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEDRWR_RESTRICTED_ROOT", "restricted")  # relative: resolved against this folder
    monkeypatch.setenv("MEDRWR_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("MEDRWR_TEXT_EMBEDDER", "BAAI/bge-m3")
    monkeypatch.setenv("MEDRWR_SOURCE_PATH_VQA", "data/pathvqa")
    monkeypatch.setenv("MEDRWR_DEID_SALT", "not-to-be-written")
    monkeypatch.setenv("MEDRWR_LOG_LEVEL", "INFO")
    settings = ui.run_settings("full")
    assert settings["MEDRWR_STORAGE_ROOT"] == os.environ["MEDRWR_STORAGE_ROOT"]
    assert settings["MEDRWR_RESTRICTED_ROOT"] == str(tmp_path / "restricted")
    assert settings["MEDRWR_SOURCE_PATH_VQA"] == str(tmp_path / "data" / "pathvqa")
    assert settings["MEDRWR_PROJECT_DIR"] == os.environ["MEDRWR_PROJECT_DIR"]
    assert settings["MEDRWR_PROFILE"] == "full"
    assert settings["MEDRWR_S3_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    assert settings["MEDRWR_TEXT_EMBEDDER"] == "BAAI/bge-m3"
    assert "MEDRWR_DEID_SALT" not in settings and "MEDRWR_LOG_LEVEL" not in settings
    with pytest.raises(ValueError, match="secret"):
        ui.record_run_settings(tmp_path, {**settings, "MEDRWR_DEID_SALT": "x"})


def test_default_roots_are_spelled_out(monkeypatch):
    monkeypatch.delenv("MEDRWR_STORAGE_ROOT")
    project = Path(os.environ["MEDRWR_PROJECT_DIR"])
    settings = ui.run_settings()
    assert settings["MEDRWR_STORAGE_ROOT"] == str(project / ".medrwr" / "storage")
    assert settings["MEDRWR_RESTRICTED_ROOT"] == str(project / ".medrwr" / "restricted")
    assert settings["MEDRWR_PROFILE"] == "smoke"


def test_recorded_settings_round_trip(tmp_path):
    settings = {
        "MEDRWR_STORAGE_ROOT": "/data/with space/and'quote",
        "MEDRWR_PROFILE": "smoke",
        "MEDRWR_S3_ENDPOINT_URL": "http://h:1/?a=b&c=$d",
        "MEDRWR_DATA_DIR": "",
    }
    path = ui.record_run_settings(tmp_path, settings)
    assert path == tmp_path / ui.SETTINGS_FILE
    assert ui.load_run_settings(tmp_path) == settings
    sourced = subprocess.run(
        ["bash", "-c", f'set -a; . {shlex.quote(str(path))}; printf %s "$MEDRWR_STORAGE_ROOT"'],
        capture_output=True,
        text=True,
        check=True,
        env={},
    )
    assert sourced.stdout == settings["MEDRWR_STORAGE_ROOT"]  # the file is also valid shell
    assert ui.load_run_settings(tmp_path / "nowhere") is None
    path.write_text("MEDRWR_STORAGE_ROOT=/a /b\n")
    with pytest.raises(ValueError, match=r"medrwr.env:1: expected NAME=value"):
        ui.load_run_settings(tmp_path)


def test_ui_environment_uses_the_recorded_settings_and_refuses_a_conflicting_shell(tmp_path):
    recorded = {
        "MEDRWR_STORAGE_ROOT": "s3://bucket/pipeline",
        "MEDRWR_RESTRICTED_ROOT": str(tmp_path / "r"),
        "MEDRWR_PROFILE": "full",
        "MEDRWR_PROJECT_DIR": str(tmp_path),
    }
    shell = {"PATH": "/usr/bin", "MEDRWR_TEXT_EMBEDDER": "", "MEDRWR_DEID_SALT": "secret"}
    env = ui.ui_environment(tmp_path / "home", recorded, shell)
    assert env["DAGSTER_HOME"] == str(tmp_path / "home") and env["PATH"] == "/usr/bin"
    assert {k: env[k] for k in recorded} == recorded and env["MEDRWR_DEID_SALT"] == "secret"
    # the same folder spelt relatively is not a conflict
    assert ui.ui_environment(tmp_path, recorded, {"MEDRWR_RESTRICTED_ROOT": os.path.relpath(tmp_path / "r")})
    with pytest.raises(ui.SettingsConflict) as err:
        ui.ui_environment(
            tmp_path,
            recorded,
            {
                "MEDRWR_STORAGE_ROOT": "/local/root",
                "MEDRWR_PROFILE": "full",
                "MEDRWR_IMAGE_EMBEDDER": "ViT-B-32",
            },
        )
    message = str(err.value)
    assert "MEDRWR_STORAGE_ROOT: '/local/root' in this shell" in message and "s3://bucket/pipeline" in message
    assert (
        "MEDRWR_IMAGE_EMBEDDER: 'ViT-B-32' in this shell, but the runs in" in message
        and "the default" in message
    )
    assert "MEDRWR_PROFILE" not in message  # same value: no conflict
    # sensor settings say when the automation runs, not where runs write: accepted and passed through
    sensors = {
        "MEDRWR_SENSORS_RUNNING": "1",
        "MEDRWR_KB_SENSOR_COOLDOWN_S": "0",
        "MEDRWR_RETRAIN_COOLDOWN_S": "5",
    }
    env = ui.ui_environment(tmp_path / "home", recorded, {**shell, **sensors})
    assert {k: env[k] for k in sensors} == sensors


def test_launch_spec_records_the_current_settings_when_none_are(tmp_path):
    home = ensure_dagster_home()
    assert ui.load_run_settings(home) is None
    command, env = ui.launch_spec(home, "127.0.0.1", 3123)
    assert command[1:] == ["dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", "3123"]
    assert (ui.REPO_DIR / "workspace.yaml").exists() and Path(command[0]).name == "dagster"
    assert ui.load_run_settings(home) == ui.run_settings()
    assert env["MEDRWR_STORAGE_ROOT"] == os.environ["MEDRWR_STORAGE_ROOT"] and env["DAGSTER_HOME"] == str(
        home
    )


@pytest.mark.timeout(120)
def test_printed_command_runs_as_printed(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDRWR_DEID_SALT", "do-not-print-me")
    home = ensure_dagster_home()
    settings = ui.run_settings("smoke")
    hint = ui.ui_hint(home, settings)
    assert hint.startswith("make ui") and "do-not-print-me" not in hint
    assert "MEDRWR_DEID_SALT is set here and not recorded" in hint
    line = ui.command_line(home, settings)
    assert f"MEDRWR_STORAGE_ROOT={shlex.quote(settings['MEDRWR_STORAGE_ROOT'])}" in line
    assert "dagster dev -w workspace.yaml" in line
    # from another folder, the line (with --help) reaches dagster dev in the repository
    result = subprocess.run(
        ["bash", "-c", line + " --help"], cwd=tmp_path, capture_output=True, text=True, timeout=100
    )
    assert result.returncode == 0 and "--workspace" in result.stdout, result.stderr


def test_ui_command_line_entry_point(tmp_path, monkeypatch, capsys):
    home = ensure_dagster_home()
    ui.record_run_settings(home, {**ui.run_settings(), "MEDRWR_STORAGE_ROOT": str(tmp_path / "recorded")})
    assert ui.main(["--print"]) == 2  # the shell's MEDRWR_STORAGE_ROOT (the test's) differs from the recorded
    assert "MEDRWR_STORAGE_ROOT: " in capsys.readouterr().err
    monkeypatch.delenv("MEDRWR_STORAGE_ROOT")
    assert ui.main(["--print", "--port", "3999"]) == 0
    printed = capsys.readouterr().out
    assert f"MEDRWR_STORAGE_ROOT={tmp_path / 'recorded'} " in printed and printed.rstrip().endswith("-p 3999")


def test_local_instance_shows_no_first_visit_dialog(tmp_path):
    """Dagster's "Join the Dagster community" dialog covers the launch dialog on a browser's first visit; the
    instance the main command creates turns it off with the documented ``nux: {enabled: false}`` setting."""
    from dagster import DagsterInstance

    home = ensure_dagster_home()
    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.nux_enabled is False
