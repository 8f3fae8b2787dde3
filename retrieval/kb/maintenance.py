"""Explicit, self-repairing table maintenance: the full-text index is created if missing, and whenever
``index_stats`` shows unindexed rows in any index (or rows were deleted) the table is compacted and its
indexes updated (``optimize`` with pruning disabled). A sync that died after ``merge_insert`` leaves unindexed
rows; the next sync sees them and repairs the table. Pruning old versions is
:func:`retrieval.kb.tags.prune_versions`.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

NO_PRUNE = timedelta(days=365 * 100)  # optimize() window that prunes nothing: pruning is prune_versions' job


def unindexed_rows(tbl) -> dict[str, int]:
    """``{index name: rows not yet in it}`` from ``index_stats``."""
    out = {}
    for ix in tbl.list_indices():
        stats = tbl.index_stats(ix.name)
        out[ix.name] = int(stats.num_unindexed_rows) if stats is not None else 0
    return out


def maintain(tbl, fts_column: str | None, force: bool = False) -> dict[str, Any]:
    """Create the FTS index if missing; compact and update every index when any has unindexed rows (or
    ``force``, e.g. after deletes). Never prunes versions (see :func:`prune_versions`)."""
    from lancedb.index import FTS

    report: dict[str, Any] = {"fts_created": False, "optimized": False}
    names = {ix.name for ix in tbl.list_indices()}
    if fts_column and f"{fts_column}_idx" not in names:
        tbl.create_index(fts_column, config=FTS(), replace=True)
        report["fts_created"] = True
    before = unindexed_rows(tbl)
    report["unindexed_before"] = before
    if force or any(before.values()):
        t0 = time.perf_counter()
        tbl.optimize(cleanup_older_than=NO_PRUNE)
        report["optimize_s"] = round(time.perf_counter() - t0, 2)
        report["optimized"] = True
        report["unindexed_after"] = unindexed_rows(tbl)
    return report
