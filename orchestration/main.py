"""The main job: materialize every asset of a profile into the project's Dagster instance.

    python -m orchestration.main [--profile smoke]

Runs each job once per partition the profile names, in graph order, recorded in the Dagster instance at
``$DAGSTER_HOME`` (default ``<project>/.medrwr/dagster_home``), so that ``dagster dev -w workspace.yaml``
shows the runs, materializations and checks afterwards. Exits non-zero when any run fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from .profiles import get_profile
from .storage import default_storage_root, project_dir

DAGSTER_YAML = Path(__file__).with_name("dagster.yaml")


def ensure_dagster_home() -> Path:
    """``$DAGSTER_HOME``, defaulting to ``<project>/.medrwr/dagster_home`` with our ``dagster.yaml``."""
    home = Path(os.environ.get("DAGSTER_HOME") or project_dir() / ".medrwr" / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copyfile(DAGSTER_YAML, home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def plan(profile_name: str | None) -> list[tuple[str, str | None]]:
    """``(job name, partition key)`` in the order the main job runs them."""
    profile = get_profile(profile_name)
    steps: list[tuple[str, str | None]] = []
    steps += [("vqa_ingest_job", ds) for ds in profile.vqa_datasets]
    steps += [("text_qa_ingest_job", ds) for ds in profile.text_qa_datasets]
    steps += [("echo_ingest_job", key) for key in profile.echo_sources]
    steps += [("ecbench_job", None)] if profile.echo_sources else []
    steps += [("kb_passages_job", source) for source in profile.kb_sources]
    steps += [("kb_index_job", None)]
    return steps


def register_dynamic_partitions(instance, profile_name: str | None) -> None:
    """Add the profile's echo and KB sources to their dynamic partitions in ``instance`` (idempotent)."""
    profile = get_profile(profile_name)
    for partitions_name, keys in (("echo_sources", profile.echo_sources), ("kb_sources", profile.kb_sources)):
        new_keys = [k for k in keys if not instance.has_dynamic_partition(partitions_name, k)]
        if new_keys:
            instance.add_dynamic_partitions(partitions_name, new_keys)


def run(profile_name: str | None = None) -> int:
    home = ensure_dagster_home()
    os.environ.setdefault("MEDRWR_PROFILE", profile_name or "smoke")
    from dagster import DagsterInstance

    from .definitions import defs

    instance = DagsterInstance.get()
    register_dynamic_partitions(instance, profile_name)
    failed = []
    for job_name, partition in plan(profile_name):
        job = defs.resolve_job_def(job_name)
        label = f"{job_name}[{partition}]" if partition else job_name
        print(f"==> {label}", flush=True)
        result = job.execute_in_process(
            instance=instance, partition_key=partition, raise_on_error=False,
            # the console shows warnings and errors; the full event log is in the instance (the UI)
            run_config={"loggers": {"console": {"config": {"log_level": os.environ.get("MEDRWR_LOG_LEVEL", "WARNING")}}}},
        )
        status = "ok" if result.success else "FAILED"
        print(f"    {status} (run {result.run_id})", flush=True)
        if not result.success:
            failed.append(label)
    print()
    print(f"Profile:        {get_profile(profile_name).name}")
    print(f"Outputs:        {default_storage_root()}  (tables/, quarantine/, images/, lancedb/)")
    print(f"Dagster home:   {home}")
    print("UI:             DAGSTER_HOME=" + str(home) + " .venv/bin/dagster dev -w workspace.yaml  "
          "-> http://127.0.0.1:3000")
    if failed:
        print(f"FAILED runs: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None, help="smoke (default) or full")
    args = parser.parse_args(argv)
    return run(args.profile)


if __name__ == "__main__":
    sys.exit(main())
