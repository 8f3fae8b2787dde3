"""Evaluation follows retraining: a run-status sensor chains ``retrain_job`` -> ``evaluate_job`` ->
``promote_job``.

Dagster starts no run after another by itself, and a retraining run and its evaluation cannot be one run (the
benchmarks are partitions of ``eval_results``). So when a ``retrain_job`` run succeeds, this sensor requests
one ``evaluate_job`` run per benchmark of the profile (tagged with the retraining run); when the last of those
succeeds, it requests ``promote_job`` once (the report, then the promotion gate). Run keys make each request
once. Every follow-up run carries the chain's pins (its KB tag and stage-2 checkpoint,
:mod:`assets.common.chain`) from the retraining run, so the whole chain reads one KB version. Default status:
STOPPED unless ``MEDRWR_SENSORS_RUNNING=1`` or the profile is ``full``.
"""

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    RunStatusSensorContext,
    SkipReason,
    run_status_sensor,
)

from assets.common.chain import RETRAIN_RUN, carried
from assets.common.profiles import get_profile
from assets.common.settings import sensors_running

RETRAIN_TAG = RETRAIN_RUN


def follow_up(
    job_name: str,
    run_id: str,
    tags: dict[str, str],
    succeeded_benchmarks: set[str],
    profile_name: str | None = None,
) -> list[RunRequest]:
    """The runs that follow a successful run of ``job_name`` (plain function of the run's facts)."""
    profile = get_profile(profile_name)
    if job_name == "retrain_job":
        cfg = profile.run_config("evaluate_job", ["eval_results"])
        return [
            RunRequest(
                run_key=f"evaluate:{run_id}:{b}",
                job_name="evaluate_job",
                partition_key=b,
                run_config=cfg,
                tags={RETRAIN_TAG: run_id, "medrwr/trigger": "evaluate_after_retrain", **carried(tags)},
            )
            for b in profile.benchmarks
        ]
    family = tags.get(RETRAIN_TAG)
    if job_name == "evaluate_job" and family and set(profile.benchmarks) <= succeeded_benchmarks:
        return [
            RunRequest(
                run_key=f"promote:{family}",
                job_name="promote_job",
                run_config=profile.run_config("promote_job", ["eval_report", "promoted_checkpoint"]),
                tags={RETRAIN_TAG: family, "medrwr/trigger": "evaluate_after_retrain", **carried(tags)},
            )
        ]
    return []


def make_evaluate_after_retrain_sensor(evaluate_job, promote_job):
    """The run-status sensor, requesting ``evaluate_job`` and ``promote_job`` (job objects, from
    definitions.py)."""

    @run_status_sensor(
        run_status=DagsterRunStatus.SUCCESS,
        name="evaluate_after_retrain_sensor",
        request_jobs=[evaluate_job, promote_job],
        default_status=DefaultSensorStatus.RUNNING if sensors_running() else DefaultSensorStatus.STOPPED,
        description="retrain_job succeeded -> evaluate_job per benchmark; "
        "all of them succeeded -> promote_job once.",
    )
    def evaluate_after_retrain_sensor(context: RunStatusSensorContext):
        run = context.dagster_run
        succeeded: set[str] = set()
        family = run.tags.get(RETRAIN_TAG)
        if run.job_name == "evaluate_job" and family:
            runs = context.instance.get_runs(
                RunsFilter(
                    job_name="evaluate_job", tags={RETRAIN_TAG: family}, statuses=[DagsterRunStatus.SUCCESS]
                )
            )
            succeeded = {r.tags.get("dagster/partition") for r in runs} - {None}
        requests = follow_up(run.job_name, run.run_id, dict(run.tags), succeeded)
        return requests or SkipReason(f"nothing follows {run.job_name} run {run.run_id}")

    return evaluate_after_retrain_sensor
