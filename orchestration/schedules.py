"""Schedules: weekly retraining and nightly ingest. Both are off by default (DefaultScheduleStatus.STOPPED) in
every profile, ``smoke`` included: turn them on in the UI (Automation) or with ``dagster schedule start``.

- ``weekly_retrain_schedule``: Sunday 03:00 UTC, one ``retrain_job`` run (stage 1 and stage 2, with the
  profile's run knobs); ``evaluate_after_retrain_sensor`` evaluates and promotes after it when that sensor
  runs.
- ``nightly_*_ingest_schedule``: 01:00 UTC, one run per dataset the profile plans. Dagster refuses one asset
  job over assets with different partitions definitions (VQA datasets, text-QA datasets and echo sources are
  three), so the nightly ingest is one schedule per ingest job rather than one ``ingest_job``.
"""

from dagster import DefaultScheduleStatus, RunRequest, ScheduleEvaluationContext, schedule

from assets.common.profiles import get_profile
from assets.echo.definitions import echo_ingest_job
from assets.ingest.definitions import text_qa_ingest_job, vqa_ingest_job
from assets.training.definitions import RETRAIN_ASSETS, retrain_job


@schedule(
    job=retrain_job,
    cron_schedule="0 3 * * 0",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.STOPPED,
    description="Weekly retraining (stage 1 -> stage 2); STOPPED by default.",
)
def weekly_retrain_schedule(context: ScheduleEvaluationContext):
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return RunRequest(
        run_key=f"weekly_retrain:{day}",
        run_config=get_profile().run_config("retrain_job", RETRAIN_ASSETS),
        tags={"medrwr/trigger": "weekly_retrain_schedule"},
    )


def _nightly(job, partitions: str, asset: str):
    @schedule(
        name=f"nightly_{job.name.removesuffix('_job')}_schedule",
        job=job,
        cron_schedule="0 1 * * *",
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.STOPPED,
        description=f"Nightly {asset} ingest, one run per partition the profile plans; STOPPED by default.",
    )
    def nightly(context: ScheduleEvaluationContext):
        profile = get_profile()
        day = context.scheduled_execution_time.strftime("%Y-%m-%d")
        cfg = profile.run_config(job.name, [asset])
        return [
            RunRequest(
                run_key=f"{job.name}:{day}:{key}",
                partition_key=key,
                run_config=cfg,
                tags={"medrwr/trigger": "nightly_ingest"},
            )
            for key in getattr(profile, partitions)
        ]

    return nightly


SCHEDULES = [
    weekly_retrain_schedule,
    _nightly(vqa_ingest_job, "vqa_datasets", "vqa_items"),
    _nightly(text_qa_ingest_job, "text_qa_datasets", "text_qa_items"),
    _nightly(echo_ingest_job, "echo_sources", "echo_studies"),
]
