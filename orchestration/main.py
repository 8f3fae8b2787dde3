"""The main job: materialize every asset of a profile into the project's Dagster instance.

    python -m orchestration.main [--profile smoke]

Runs each job once per partition the profile names, in graph order, recorded in the Dagster instance at
``$DAGSTER_HOME`` (default ``<project>/.medrwr/dagster_home``), so that ``dagster dev -w workspace.yaml``
shows the runs, materializations and checks afterwards. A job whose upstream failed is not run (Dagster's
blocking checks stop steps inside one run only; this runner carries the stop across runs). Exits non-zero
naming every failed and skipped step.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

from assets.common.profiles import ENV_PROFILE, get_profile
from storage.root import default_storage_root

from . import ui
from .instance import ensure_dagster_home


@dataclass(frozen=True)
class Step:
    """One run of the main job: a job and its partition key."""

    job: str
    partition: str | None = None

    @property
    def label(self) -> str:
        return f"{self.job}[{self.partition}]" if self.partition else self.job


def plan(profile_name: str | None) -> list[Step]:
    """The steps of the main job, in the order it runs them."""
    profile = get_profile(profile_name)
    steps: list[Step] = []
    steps += [Step("vqa_ingest_job", ds) for ds in profile.vqa_datasets]
    steps += [Step("text_qa_ingest_job", ds) for ds in profile.text_qa_datasets]
    steps += [Step("echo_ingest_job", key) for key in profile.echo_sources]
    steps += [Step("ecbench_job")] if profile.echo_sources else []
    steps += [Step("kb_passages_job", source) for source in profile.kb_sources]
    steps += [Step("kb_index_job")]
    steps += [Step("training_job")]
    steps += [Step("evaluate_job", b) for b in profile.benchmarks]
    steps += [Step("eval_report_job")]
    return steps


def register_dynamic_partitions(instance, profile_name: str | None) -> None:
    """Add the profile's echo and KB sources to their dynamic partitions in ``instance`` (idempotent).

    Every echo key is checked as an opaque site code (:func:`storage.keys.validate_site_key`) before any
    is added: a refused key never reaches the instance's tables."""
    from storage.keys import validate_partition_key, validate_site_key

    profile = get_profile(profile_name)
    for k in profile.echo_sources:
        validate_site_key(k)
    for partitions_name, keys in (("echo_sources", profile.echo_sources), ("kb_sources", profile.kb_sources)):
        new_keys = [
            validate_partition_key(k) for k in keys if not instance.has_dynamic_partition(partitions_name, k)
        ]
        if new_keys:
            instance.add_dynamic_partitions(partitions_name, new_keys)


def upstream_assets(defs, job_name: str) -> set:
    """Every asset upstream (transitively) of the assets ``job_name`` materializes."""
    graph = defs.resolve_asset_graph()
    selected = defs.resolve_job_def(job_name).asset_layer.selected_asset_keys
    seen, todo = set(), list(selected)
    while todo:
        for parent in graph.get(todo.pop()).parent_keys:
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen - set(selected)


def run(profile_name: str | None = None) -> int:
    """Run the plan of ``profile_name``; returns the process exit code."""
    home = ensure_dagster_home()
    if profile_name:  # the flag wins: plan and data reads come from the same profile
        if os.environ.get(ENV_PROFILE) not in (None, "", profile_name):
            print(
                f"note: --profile {profile_name} overrides {ENV_PROFILE}={os.environ[ENV_PROFILE]}",
                file=sys.stderr,
            )
        os.environ[ENV_PROFILE] = profile_name
    profile = get_profile(profile_name)
    settings = ui.run_settings(profile.name)
    ui.record_run_settings(
        home, settings
    )  # `make ui` starts the UI with these, so it writes where these runs did
    from dagster import DagsterInstance

    from .definitions import build_defs

    defs = build_defs()
    instance = DagsterInstance.get()
    register_dynamic_partitions(instance, profile.name)
    failed: list[str] = []
    skipped: list[str] = []
    failed_assets: set = set()
    log_level = os.environ.get("MEDRWR_LOG_LEVEL", "WARNING")
    for step in plan(profile.name):
        job = defs.resolve_job_def(step.job)
        blocked_by = upstream_assets(defs, step.job) & failed_assets
        if blocked_by:
            names = ", ".join(sorted(k.to_user_string() for k in blocked_by))
            print(f"==> {step.label}\n    SKIPPED: upstream {names} failed", flush=True)
            skipped.append(f"{step.label} (upstream {names} failed)")
            continue
        print(f"==> {step.label}", flush=True)
        result = job.execute_in_process(
            instance=instance,
            partition_key=step.partition,
            raise_on_error=False,
            tags={"medrwr/profile": profile.name, "medrwr/main": "1"},
            # the console shows warnings and errors; the full event log is in the instance (the UI)
            run_config={
                **profile.run_config(
                    step.job, [k.to_user_string() for k in job.asset_layer.selected_asset_keys]
                ),
                "loggers": {"console": {"config": {"log_level": log_level}}},
            },
        )
        print(f"    {'ok' if result.success else 'FAILED'} (run {result.run_id})", flush=True)
        if not result.success:
            failed.append(step.label)
            failed_assets |= set(job.asset_layer.selected_asset_keys)
    print()
    print(f"Profile:        {profile.name}")
    print(f"Outputs:        {default_storage_root()}  (tables/, quarantine/, images/, lancedb/)")
    print(f"Dagster home:   {home}")
    print("UI:             " + ui.ui_hint(home, settings))
    if failed or skipped:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        if skipped:
            print(f"NOT RUN (upstream failed): {', '.join(skipped)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None, help="smoke (default) or full; overrides MEDRWR_PROFILE")
    args = parser.parse_args(argv)
    return run(args.profile)


if __name__ == "__main__":
    sys.exit(main())
