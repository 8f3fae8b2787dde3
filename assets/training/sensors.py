"""The retraining sensor: a new ``kb_text_index`` materialization requests ``retrain_job``, once.

Each tick reads the latest materialization of ``kb_text_index`` from the instance; one the cursor has not
fired for requests a ``retrain_job`` run of stage 2 only (``MEDRWR_RETRAIN_STAGES=stage2``, the default: the
policy re-learns to use the new knowledge base) or of both stages (``all``). A request less than
``MEDRWR_RETRAIN_COOLDOWN_S`` seconds (default 6 hours) after the previous one waits, pending in the cursor,
and fires once when the cool-down ends, for the newest index. The first tick only records the current index
(turning the sensor on does not retrain on an index it has not seen change). Re-evaluation follows a
successful retraining: ``evaluate_after_retrain_sensor`` (evaluation domain) requests ``evaluate_job`` per
benchmark.

Default status: STOPPED unless ``MEDRWR_SENSORS_RUNNING=1`` or the profile is ``full``.
"""

import time

from dagster import (
    AssetKey,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from assets.common.profiles import get_profile
from assets.common.settings import env_seconds, retrain_stages, sensors_running
from assets.common.triggers import decide, dump_cursor

RETRAIN_JOB = "retrain_job"
KB_INDEX = AssetKey("kb_text_index")
STAGES = {
    "stage2": ("stage2_items", "stage2_checkpoint"),
    "all": ("split_use", "stage1_items", "stage1_checkpoint", "stage2_items", "stage2_checkpoint"),
}
DEFAULT_COOLDOWN_S = 6 * 3600.0


def now() -> float:
    """The sensor's clock (tests replace it to step through a cool-down)."""
    return time.time()


def retrain_assets() -> tuple[str, ...]:
    """The assets a KB-triggered retraining materializes (``MEDRWR_RETRAIN_STAGES``)."""
    return STAGES[retrain_stages()]


def evaluate_kb_index(context: SensorEvaluationContext) -> SensorResult:
    records = context.instance.fetch_materializations(KB_INDEX, limit=1, ascending=False).records
    latest = records[0] if records else None
    observed = {KB_INDEX.to_user_string(): str(latest.storage_id)} if latest else {}
    if context.cursor is None:  # first tick: the current index is the baseline, not a change
        baseline = {k: {"fired": v, "at": None, "seen": v} for k, v in observed.items()}
        return SensorResult(
            cursor=dump_cursor(baseline),
            skip_reason=SkipReason(
                f"baseline recorded: kb_text_index materialization {observed or 'none yet'}"
            ),
        )
    decision = decide(
        context.cursor, observed, now(), env_seconds("MEDRWR_RETRAIN_COOLDOWN_S", DEFAULT_COOLDOWN_S)
    )
    if not decision.fire:
        wait = decision.pending.get(KB_INDEX.to_user_string())
        reason = f"new kb_text_index waits {wait:.0f}s for the cool-down" if wait else "no new kb_text_index"
        return SensorResult(cursor=decision.cursor, skip_reason=SkipReason(reason))
    assets = retrain_assets()
    meta = latest.asset_materialization.metadata if latest.asset_materialization else {}
    tag = getattr(meta.get("lancedb_tag"), "value", "") or ""
    request = RunRequest(
        run_key=f"retrain:kb_text_index:{latest.storage_id}",
        asset_selection=[AssetKey(a) for a in assets],
        run_config=get_profile().run_config(RETRAIN_JOB, assets),
        tags={
            "medrwr/trigger": "kb_index_retrain_sensor",
            "medrwr/kb_tag": str(tag),
            "medrwr/kb_materialization": str(latest.storage_id),
            "medrwr/retrain_stages": ",".join(assets),
        },
    )
    return SensorResult(run_requests=[request], cursor=decision.cursor)


@sensor(
    job_name=RETRAIN_JOB,
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING if sensors_running() else DefaultSensorStatus.STOPPED,
    description="A new kb_text_index materialization -> one retrain_job run (MEDRWR_RETRAIN_STAGES: "
    "stage2 or all), at most one per MEDRWR_RETRAIN_COOLDOWN_S; evaluation follows a successful retraining.",
)
def kb_index_retrain_sensor(context: SensorEvaluationContext):
    return evaluate_kb_index(context)
