"""The code location loads, validates, and its graph matches the reviewed snapshot.

A change to assets, partitions, checks or jobs shows up as a diff of tests/snapshots/definitions.json;
regenerate it with UPDATE_SNAPSHOTS=1 and review the diff.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from orchestration.definitions import defs

SNAPSHOT = Path(__file__).with_name("snapshots") / "definitions.json"


def graph_snapshot() -> dict:
    repo = defs.get_repository_def()
    assets = {}
    for spec in sorted(defs.resolve_all_asset_specs(), key=lambda s: s.key.to_user_string()):
        pdef = spec.partitions_def
        assets[spec.key.to_user_string()] = {
            "group": spec.group_name,
            "deps": sorted(d.asset_key.to_user_string() for d in spec.deps),
            "partitions": (getattr(pdef, "name", None) or sorted(pdef.get_partition_keys()))
            if pdef
            else None,
            "code_version": spec.code_version,
        }
    graph = defs.resolve_asset_graph()
    checks = sorted(
        f"{key.asset_key.to_user_string()}:{key.name}:"
        f"{'blocking' if graph.get_check_spec(key).blocking else 'non-blocking'}"
        f"{':partitioned' if graph.get_check_spec(key).partitions_def else ''}"
        for key in graph.asset_check_keys
    )
    return {
        "assets": assets,
        "checks": checks,
        "jobs": sorted(j.name for j in repo.get_all_jobs() if not j.name.startswith("__")),
        "schedules": sorted(s.name for s in repo.schedule_defs),
        "sensors": sorted(s.name for s in repo.sensor_defs),
    }


def test_graph_matches_snapshot():
    current = graph_snapshot()
    if os.environ.get("UPDATE_SNAPSHOTS") == "1" or not SNAPSHOT.exists():
        SNAPSHOT.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    assert current == json.loads(SNAPSHOT.read_text())


def test_definitions_validate_cli():
    dagster = Path(sys.executable).with_name("dagster")
    out = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "All code locations passed validation" in out.stdout + out.stderr
