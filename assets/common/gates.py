"""Gates: compute, check, and only then publish.

An asset computes its table in memory and writes every side file (images, clips, manifests) through a
:class:`~storage.root.StagedStorage`, so nothing is visible under the published root yet. Its checks
run on what would be published. :func:`publish_or_refuse` then decides:

- every blocking check passed: staged files are promoted, the table is written (atomically), the gate record
  says ``passed``, and a ``MaterializeResult`` carries the metadata, data version and check results. The gate
  record, naming the table's sha256, is the one commit point (:meth:`storage.root.Storage.publish_table`):
  readers serve only the table it names, so a crash between the table and its record serves nothing;
- a blocking check failed: the staged files are discarded, any earlier published version of the partition is
  withdrawn (downstream work must never read a partition whose latest gate failed), the gate record says
  ``failed``, the check results are recorded (partitioned), an observation marks the partition
  ``withdrawn`` (the UI's latest materialization would otherwise still show the old version), and the step
  fails with a message naming the checks. No table, no preview, no materialization: only the quarantine
  (and the check results) remain.

The quarantine is written in both cases: rejected rows with reasons are an output too.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetObservation,
    BetaWarning,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    PreviewWarning,
)

from storage.root import StagedStorage, Storage

from .metadata import publish_audit_trail

# Partitioned asset checks (``AssetCheckSpec(partitions_def=...)``) are a preview feature in Dagster 1.13; we
# use them on purpose (one failed partition must not hide the others), so the preview notice is not repeated.
warnings.filterwarnings("ignore", category=PreviewWarning, message=".*partitions_def.*")
# Backfill policies on assets are beta in 1.13; every domain declares one on purpose (multi_run per partition
# for per-source ingest, single_run for whole-set assets), so that notice is not repeated either.
warnings.filterwarnings("ignore", category=BetaWarning, message=".*backfill_policy.*")


@dataclass
class Publication:
    """What an asset would publish for one partition: the table, its quarantine and its metadata."""

    table: str
    partition: str | None
    frame: pl.DataFrame
    quarantine: pl.DataFrame
    metadata: dict[str, Any] = field(default_factory=dict)
    data_version: str | None = None
    stage: StagedStorage | None = None
    quarantine_store: Storage | None = None  # where the quarantine goes (default: the published root)
    inputs: list[dict[str, Any]] | None = None  # input manifest of a root asset: path key, size, sha256/etag
    # a refused publication withdraws the previous version (default); a pointer whose previous version stays
    # valid when a candidate is refused (the promoted checkpoint) keeps it
    withdraw_previous: bool = True


def blocking_failures(checks: list[AssetCheckResult]) -> list[AssetCheckResult]:
    """The failed checks of ERROR severity (the ones that stop publication)."""
    return [c for c in checks if not c.passed and c.severity == AssetCheckSeverity.ERROR]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def publish_or_refuse(
    context: AssetExecutionContext, store: Storage, pub: Publication, checks: list[AssetCheckResult]
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """Publish ``pub`` when every blocking check in ``checks`` passed; otherwise publish nothing and fail.

    Yields the events of the asset's compute function (use ``yield from``).
    """
    label = f"{pub.table}[{pub.partition}]" if pub.partition else pub.table
    run_id = context.run.run_id
    publish_audit_trail(store)  # validation results are kept whatever the outcome
    quarantine_uri = (pub.quarantine_store or store).write_quarantine(
        pub.quarantine, pub.table, pub.partition
    )
    failed = blocking_failures(checks)
    if failed:
        if pub.stage is not None:
            pub.stage.discard()
        withdrawn = store.unpublish_table(pub.table, pub.partition) if pub.withdraw_previous else False
        names = [c.check_name for c in failed]
        refusal = {
            "status": "failed",
            "run_id": run_id,
            "at": _now(),
            "failed_checks": names,
            "withdrew_previous_version": withdrawn,
            "rows_quarantined": pub.quarantine.height,
        }
        previous = store.read_gate_record(pub.table, pub.partition) or {}
        kept = not pub.withdraw_previous and previous.get("status") == "passed"
        # a refused candidate of an asset that keeps its previous version (the promoted checkpoint): that
        # version stays published and readable, its gate record noting the refusal; otherwise the failed gate
        # is the record and nothing downstream may read the partition
        store.write_gate_record(
            pub.table, pub.partition, {**previous, "last_refusal": refusal} if kept else refusal
        )
        if withdrawn:  # the UI's latest materialization still shows the withdrawn version: say it is gone
            yield AssetObservation(
                asset_key=context.asset_key,
                partition=pub.partition,
                metadata={
                    "withdrawn": True,
                    "status": "withdrawn: its latest gate failed, nothing is served for this partition",
                    "withdrawn_by_run": run_id,
                    "failed_checks": MetadataValue.json(names),
                    "withdrawn_version_run": str(previous.get("run_id", "")),
                },
            )
        yield from checks
        raise Failure(
            description=(
                f"{label}: blocking check(s) {', '.join(names)} failed, so the candidate was refused and "
                "nothing was published"
                + (" and the previously published version was withdrawn" if withdrawn else "")
                + (
                    f"; the previously published version (run {previous.get('run_id')}) stays readable"
                    if kept
                    else ""
                )
                + f". {pub.quarantine.height} rejected rows are in the quarantine table "
                "(quarantine/"
                + f"{pub.table}). See the check results for why"
                + (
                    "."
                    if kept
                    else "; fix the source or the configuration, then materialize the partition again."
                )
            ),
            metadata={
                "failed_checks": MetadataValue.json(names),
                "withdrew_previous_version": withdrawn,
                "kept_previous_version": kept,
            },
        )
    promoted = pub.stage.promote() if pub.stage is not None else 0
    lineage = _write_input_manifest(store, pub, run_id) if pub.inputs is not None else {}
    # one commit point: the gate record naming the table's digest is written last (Storage.publish_table)
    uri = store.publish_table(
        pub.frame,
        pub.table,
        pub.partition,
        {
            "status": "passed",
            "run_id": run_id,
            "at": _now(),
            "checks": [c.check_name for c in checks],
            "rows": pub.frame.height,
            "rows_quarantined": pub.quarantine.height,
        },
    )
    metadata = {
        **pub.metadata,
        **lineage,
        "path": uri,
        "quarantine_path": quarantine_uri,
        "files_published": promoted,
    }
    yield MaterializeResult(
        metadata=metadata,
        data_version=DataVersion(pub.data_version) if pub.data_version else None,
        check_results=checks,
    )


def manifest_parts(table: str, partition: str | None, run_id: str) -> tuple[str, ...]:
    """Where the input manifest of one materialization lives under the storage root."""
    return Storage.input_manifest_parts(table, partition, run_id)


def _write_input_manifest(store: Storage, pub: Publication, run_id: str) -> dict[str, Any]:
    """Write the input manifest (every raw file read: path key, size, sha256 or S3 ETag) and return the
    metadata that points to it."""
    body = json.dumps(
        {"table": pub.table, "partition": pub.partition, "run_id": run_id, "files": pub.inputs},
        indent=1,
        sort_keys=True,
    ).encode()
    uri = store.write_bytes(body, *manifest_parts(pub.table, pub.partition, run_id))
    return {
        "input_manifest": MetadataValue.path(uri),
        "input_manifest_sha256": hashlib.sha256(body).hexdigest(),
        "input_files": len(pub.inputs),
        "input_bytes": int(sum(f.get("size", 0) for f in pub.inputs)),
    }
