"""The KB-sources sensor: new or changed knowledge-base files request ``kb_refresh_job`` runs, once.

Each tick it lists what every registered ``kb_sources`` partition reads (through the ``sources`` resource:
local folders or ``s3://`` prefixes, see :mod:`assets.knowledge.watch`), discovers new corpus folders under
the data root (each becomes a new dynamic partition in the same tick), fingerprints each source (paths, sizes,
sha256 or ETag) and lets :func:`assets.common.triggers.decide` pick the sources to refresh: a change fires
exactly once, and a source refreshed less than ``MEDRWR_KB_SENSOR_COOLDOWN_S`` seconds ago (default one hour)
waits, its newest fingerprint pending in the cursor, until the cool-down ends; then it fires once.

Default status: STOPPED unless ``MEDRWR_SENSORS_RUNNING=1`` or the profile is ``full``
(:func:`assets.common.settings.sensors_running`); in ``smoke`` turn it on in the UI (Automation).
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
from assets.common.resources import SourcesResource
from assets.common.settings import env_seconds, sensors_running
from assets.common.triggers import decide
from storage.keys import InvalidPartitionKey

from .assets import kb_source_partitions
from .watch import discover_sources, fingerprint

KB_REFRESH_JOB = "kb_refresh_job"
KB_REFRESH_ASSETS = ("kb_passages", "kb_text_index")
DEFAULT_COOLDOWN_S = 3600.0


def now() -> float:
    """The sensor's clock (tests replace it to step through a cool-down)."""
    return time.time()


def evaluate_kb_sources(context: SensorEvaluationContext, sources: SourcesResource) -> SensorResult:
    registered = set(context.instance.get_dynamic_partitions(kb_source_partitions.name))
    try:
        data_root = sources.data_root_dir()
    except (
        ValueError
    ):  # full without a data dir: only the registered sources (and their overrides) are watched
        data_root = None
    new = [k for k in (discover_sources(data_root) if data_root else []) if k not in registered]
    observed, counts = {}, {}
    vanished: list[str] = []  # registered sources whose folder is gone or empty: their passages are stale
    for key in sorted(registered | set(new)):
        try:
            src = sources.source(key)
        except InvalidPartitionKey as e:  # registered through the instance API: never read, said why
            context.log.warning(f"kb source partition {key!r} is not watched: {e}")
            continue
        fp, files = fingerprint(key, src)
        if files:
            observed[key], counts[key] = fp, files
        elif key in registered:
            vanished.append(key)
    # a source already materialized when the sensor first sees it is its baseline, not a change: switching
    # the sensor on refreshes nothing until a source changes
    built = context.instance.get_materialized_partitions(AssetKey("kb_passages")) if registered else set()
    decision = decide(
        context.cursor,
        observed,
        now(),
        env_seconds("MEDRWR_KB_SENSOR_COOLDOWN_S", DEFAULT_COOLDOWN_S),
        baseline=frozenset(built),
    )
    run_config = get_profile(sources.profile).run_config(KB_REFRESH_JOB, KB_REFRESH_ASSETS)
    at = int(now())
    requests = [
        RunRequest(
            run_key=f"kb_refresh:{key}:{fp[:16]}:{at}",
            partition_key=key,
            run_config=run_config,
            tags={
                "medrwr/trigger": "kb_sources_sensor",
                "medrwr/kb_source_fingerprint": fp[:16],
                "medrwr/kb_source_files": str(counts[key]),
            },
        )
        for key, fp in decision.fire.items()
    ]
    for key, wait in decision.pending.items():
        context.log.info(f"kb source {key} changed during its cool-down; refresh requested in {wait:.0f}s")
    partitions = [kb_source_partitions.build_add_request(new)] if new else []
    if new:
        context.log.info(f"new KB source folders registered as kb_sources partitions: {new}")
    for key in vanished:
        context.log.warning(
            f"kb source {key!r} has no files any more ({sources.source_uri(key)}): it is not watched, and "
            "its published passages are still served; restore the folder, or remove the partition"
        )
    gone = f"; no files in registered source(s) {vanished} (passages still served)" if vanished else ""
    skip = None
    if not requests:
        reason = (
            f"{len(decision.pending)} source(s) pending their cool-down: "
            + ", ".join(f"{k} (refresh in {w:.0f} s)" for k, w in sorted(decision.pending.items()))
            if decision.pending
            else f"no KB source changed ({len(observed)} watched)"
        )
        skip = SkipReason(reason + gone)
    return SensorResult(
        run_requests=requests,
        cursor=decision.cursor,
        dynamic_partitions_requests=partitions,
        skip_reason=skip,
    )


@sensor(
    job_name=KB_REFRESH_JOB,
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING if sensors_running() else DefaultSensorStatus.STOPPED,
    description="New or changed KB source files (local or s3://) -> one kb_refresh_job run per changed "
    "source; new corpus folders become kb_sources partitions; cool-down MEDRWR_KB_SENSOR_COOLDOWN_S.",
)
def kb_sources_sensor(context: SensorEvaluationContext, sources: SourcesResource):
    return evaluate_kb_sources(context, sources)
