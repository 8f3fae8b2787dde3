"""Materialization metadata shared by every table asset: row count, schema, preview, counts, quarantine."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    MetadataValue,
    TableColumn,
    TableSchema,
)

from assets.common.records import Rejection, reason_counts
from quality.contracts import AuditTrail, ContractResult
from storage.root import Storage, project_dir


def table_schema(df: pl.DataFrame) -> TableSchema:
    return TableSchema(columns=[TableColumn(name, str(dtype)) for name, dtype in df.schema.items()])


_HASHLIKE = re.compile(r"^[0-9a-f]{16,}(\.[a-z0-9]+)?$|^[a-z_]+_[0-9a-f]{16,}$|^2\.25\.\d{20,}$")


def readable_order(df: pl.DataFrame) -> list[str]:
    """Columns in preview order: readable ones first, then those whose values are long hashes or
    content ids (``image_refs``, ``content_hash``, ``clip_ref``...), so questions stay readable."""

    def hashlike(col: str) -> bool:
        for v in df[col].head(5).to_list():
            for x in v if isinstance(v, list) else [v]:
                if isinstance(x, str) and _HASHLIKE.match(x):
                    return True
        return False

    cols = list(df.columns)
    return [c for c in cols if not hashlike(c)] + [c for c in cols if hashlike(c)]


def preview_markdown(df: pl.DataFrame, n: int = 5, width: int = 60) -> str:
    """The first ``n`` rows as a Markdown table (hash-like columns last), long cells cut to ``width``."""
    head = df.head(n).select(readable_order(df.head(n)))
    cells = [[_cell(v, width) for v in row] for row in head.iter_rows()]
    lines = ["| " + " | ".join(head.columns) + " |", "|" + "---|" * len(head.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def _cell(value: Any, width: int) -> str:
    text = ", ".join(map(str, value)) if isinstance(value, list | pl.Series) else str(value)
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def counts(df: pl.DataFrame, column: str, top: int = 30) -> dict[str, int]:
    """Rows per value of ``column``: the ``top`` most frequent values, the rest summed as ``(other)``."""
    if column not in df.columns or df.is_empty():
        return {}
    grouped = df.group_by(column).len().sort(["len", column], descending=[True, False], nulls_last=True)
    out = {str(k): int(v) for k, v in grouped.head(top).iter_rows()}
    if grouped.height > top:
        out["(other)"] = int(grouped["len"][top:].sum())
    return out


def content_version(df: pl.DataFrame) -> str:
    """A stable content hash of the table (sorted by its first column), used as the Dagster data version."""
    ordered = df.sort(df.columns[0]) if df.columns else df
    return hashlib.sha256(ordered.write_ndjson().encode()).hexdigest()[:16]


def table_metadata(df: pl.DataFrame, count_columns: tuple[str, ...] = ()) -> dict[str, Any]:
    md: dict[str, Any] = {
        "dagster/row_count": df.height,
        "dagster/column_schema": table_schema(df),
        "preview": MetadataValue.md(preview_markdown(df)),
    }
    for col in count_columns:
        md[f"count_by_{col}"] = MetadataValue.json(counts(df, col))
    return md


def quarantine_metadata(rejected: list[Rejection]) -> dict[str, Any]:
    """Quarantine counts for the materialization (the gate adds ``quarantine_path``)."""
    return {
        "quarantined_rows": len(rejected),
        "quarantine_reasons": MetadataValue.json(reason_counts(rejected)),
    }


def contract_check(check_name: str, result: ContractResult) -> AssetCheckResult:
    """A GX contract as a blocking Dagster check result (ERROR severity on failure)."""
    return AssetCheckResult(
        check_name=check_name,
        passed=result.success,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "suite": result.suite,
            "rows_validated": result.rows,
            "expectations": len(result.outcomes),
            "failed": MetadataValue.json([o.describe() for o in result.failures]),
            "report": MetadataValue.md("\n".join(f"- {o.describe()}" for o in result.outcomes)),
            **({"data_docs": MetadataValue.path(result.docs)} if result.docs else {}),
        },
    )


def audit_trail(store: Storage, context, table: str, partition: str | None) -> dict[str, Any]:
    """Keyword arguments that keep a contract's validation in the storage root's GX audit trail
    (``quality/validations`` and ``quality/data_docs``), named by table, partition and Dagster run.

    GX 1.x keeps its stores on a filesystem; for an S3 root the trail is a local mirror
    (``<project>/.medrwr/gx/<root hash>``) filled from ``<root>/quality`` first, and
    :func:`publish_audit_trail` uploads what the validation added."""
    return {
        "trail": AuditTrail(_trail_dir(store)),
        "batch": f"{table}-{partition or 'all'}",
        "run_name": context.run.run_id,
    }


def _trail_dir(store: Storage) -> str:
    if not store.is_s3:
        return store.uri("quality")
    local = project_dir() / ".medrwr" / "gx" / hashlib.sha256(store.root.encode()).hexdigest()[:12]
    mirror = Storage(root=str(local))
    for rel in store.find("quality", "validations"):  # results of earlier runs: the index lists them all
        if not mirror.exists("validations", rel):
            mirror.write_bytes(store.read_bytes("quality", "validations", rel), "validations", rel)
    return str(local)


def publish_audit_trail(store: Storage) -> int:
    """Upload the local mirror's new or changed files to ``<root>/quality`` (S3 roots; a no-op locally)."""
    if not store.is_s3:
        return 0
    mirror = Storage(root=_trail_dir(store))
    uploaded = 0
    for rel in mirror.find():
        if store.size("quality", rel) != mirror.size(rel) or rel.endswith("index.html"):
            store.write_bytes(mirror.read_bytes(rel), "quality", rel)
            uploaded += 1
    return uploaded


def check_result(name: str, passed: bool, **metadata: Any) -> AssetCheckResult:
    """An ERROR-severity check result with ``metadata`` (lists and dicts as JSON metadata)."""
    return AssetCheckResult(
        check_name=name,
        passed=passed,
        severity=AssetCheckSeverity.ERROR,
        metadata={k: MetadataValue.json(v) if isinstance(v, list | dict) else v for k, v in metadata.items()},
    )
