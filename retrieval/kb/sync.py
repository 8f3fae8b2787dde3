"""Per-source incremental sync of a KB table.

:func:`sync_table` makes the rows of the given ``sources`` equal to a frame (``id``, ``source``,
``content_hash`` and payload): new or changed rows (by ``content_hash``) are embedded and upserted with
``merge_insert``; rows of those sources whose id disappeared are deleted; rows of other sources are never
touched (a source that failed to load cannot wipe its rows). Then maintenance, the vector-index policy, the
``run-<run id>`` tag and retention.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from .connection import KBLocation
from .index_choice import (
    PARAMS_TABLE,
    IndexPolicy,
    apply_index_policy,
    load_search_params,
    save_search_params,
)
from .maintenance import maintain
from .naming import EMBEDDER_KEY, embedder_table, identity_fingerprint, open_embedder_table
from .rows import TEXT_FTS_COLUMN, read_columns, sql_list, vectors_column
from .tags import RUN_TAG_PREFIX, Retention, prune_versions


@dataclass
class SyncReport:
    """What one sync did to a KB table."""

    table: str
    base_table: str
    embedder_fingerprint: str
    rows: int
    version: int
    tag: str | None
    sources: list[str] = field(default_factory=list)
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    embedded: int = 0
    reused: int = 0
    maintenance: dict[str, Any] = field(default_factory=dict)
    pruned: dict[str, Any] = field(default_factory=dict)
    index: dict[str, Any] = field(default_factory=dict)
    recall_at_10: float | None = None


def sync_table(
    location: KBLocation,
    table: str,
    frame: pl.DataFrame,
    embed: Callable[[pl.DataFrame], np.ndarray],
    embedder: dict[str, Any],
    run_id: str | None = None,
    sources: Sequence[str] | None = None,
    fts_column: str | None = TEXT_FTS_COLUMN,
    index_policy: IndexPolicy | None = None,
    recall_queries: np.ndarray | None = None,
    retention: Retention | None = None,
) -> SyncReport:
    """Make the rows of ``sources`` in KB ``table`` (for the embedder ``embedder``, an identity dict) equal to
    ``frame`` (``id``, ``source``, ``content_hash`` and payload columns).

    ``sources``: the sources ``frame`` is complete for (default: those present in it); rows of other sources
    are left alone, and a source listed here with no rows in ``frame`` has its rows deleted. ``embed(rows)``
    is called once with only the new or changed rows and returns their vectors. ``recall_queries``: embedded
    real held-out questions for the vector-index trial (see :class:`IndexPolicy`). The new version is tagged
    ``run-<run_id>`` and old versions pruned by ``retention`` (default :class:`Retention`: every tag kept).
    """
    policy = index_policy or IndexPolicy()
    if frame.is_empty():
        raise ValueError(f"{table}: no rows to index; materialize at least one source partition first")
    if frame["id"].n_unique() != frame.height:
        raise ValueError(f"{table}: duplicate ids in the input frame; deduplicate the passages first")
    present = sorted(set(frame["source"].to_list()))
    scope = sorted(set(sources)) if sources is not None else present
    if stray := sorted(set(present) - set(scope)):
        raise ValueError(f"{table}: frame has rows of sources {stray} not in sources={scope}")
    fp = identity_fingerprint(embedder)
    name = embedder_table(table, fp)
    conn = location.connect()
    tbl = open_embedder_table(conn, table, embedder) if name in conn.table_names() else None
    where = f"source IN ({sql_list(scope)})"
    current = (
        read_columns(tbl, ["id", "content_hash"], where)
        if tbl is not None
        else pl.DataFrame(schema={"id": pl.Utf8, "content_hash": pl.Utf8})
    )
    joined = frame.join(current.rename({"content_hash": "_old_hash"}), on="id", how="left")
    changed = joined.filter(pl.col("_old_hash").is_null() | (pl.col("_old_hash") != pl.col("content_hash")))
    report = SyncReport(
        table=name,
        base_table=table,
        embedder_fingerprint=fp,
        rows=0,
        version=0,
        tag=None,
        sources=scope,
        inserted=int(changed["_old_hash"].is_null().sum()),
        updated=int(changed["_old_hash"].is_not_null().sum()),
        unchanged=frame.height - changed.height,
    )
    removed = current.filter(~pl.col("id").is_in(frame["id"].implode()))["id"].to_list()
    report.deleted = len(removed)
    changed = changed.drop("_old_hash")

    if changed.height:
        vectors = np.asarray(embed(changed), dtype=np.float32)
        if vectors.shape != (changed.height, embedder["dim"]):
            raise ValueError(
                f"{table}: embed returned {vectors.shape}, expected ({changed.height}, {embedder['dim']})"
            )
        data = changed.to_arrow().append_column("vector", vectors_column(vectors))
        if tbl is None:
            data = data.replace_schema_metadata({EMBEDDER_KEY: json.dumps(embedder, sort_keys=True)})
            tbl = conn.create_table(name, data)
        else:
            tbl.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(data)
    if tbl is None:
        raise ValueError(f"{table}: nothing to create for embedder {fp}")
    for start in range(0, len(removed), 1000):
        tbl.delete(f"id IN ({sql_list(removed[start : start + 1000])})")

    report.maintenance = maintain(tbl, fts_column, force=bool(removed))
    report.rows = tbl.count_rows()
    if not report.rows:
        raise ValueError(f"{table}: the sync left the table empty")
    params, recall, report.index = apply_index_policy(
        tbl, report.rows, load_search_params(conn, name, None), recall_queries, policy
    )
    report.recall_at_10 = None if recall is None else round(recall, 4)
    report.version = tbl.version
    save_search_params(conn, name, report.version, params)
    if run_id:
        report.tag = f"{RUN_TAG_PREFIX}{run_id}"
        if report.tag not in tbl.tags.list():
            tbl.tags.create(report.tag, report.version)
    retention = retention or Retention()
    report.pruned = prune_versions(tbl, retention)
    prune_versions(conn.open_table(PARAMS_TABLE), Retention(cleanup_older_than=retention.cleanup_older_than))
    return report
