"""Vector index choice and the search parameters saved per table version.

Below ``IndexPolicy.min_rows`` the table is searched exactly. Above it, candidate indexes are built once
each and measured against exact search on real held-out question vectors supplied by the caller; the fastest
configuration whose recall@k is >= ``min_recall`` with 95 % confidence is kept (restoring its version, never
rebuilding it), else exact search. Trials re-run only when the table grew by ``regrow`` since the last trial
or when recall on the supplied questions is below ``min_recall`` with 95 % confidence (the two bounds give
hysteresis: a marginal measurement does not re-trigger a trial). Search parameters are saved per table version
(table ``_search_params``) so that a reader pinned to a version searches it the same way.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

DISTANCE = "cosine"
PARAMS_TABLE = "_search_params"

VECTOR_INDEX = "vector_idx"
Z_95 = 1.96


@dataclass(frozen=True)
class IndexPolicy:
    """When and how the vector index is chosen (see the module docstring)."""

    min_rows: int = 50_000
    min_recall: float = 0.95
    k: int = 10
    regrow: float = 0.2
    max_queries: int = 1000


def save_search_params(conn, table: str, version: int, params: dict[str, Any]) -> None:
    """Record the search parameters of ``table`` valid from ``version`` on (in ``_search_params``)."""
    row = pa.table(
        {"table": [table], "version": [int(version)], "params": [json.dumps(params, sort_keys=True)]}
    )
    if PARAMS_TABLE not in conn.table_names():
        conn.create_table(PARAMS_TABLE, row)
        return
    conn.open_table(PARAMS_TABLE).merge_insert(
        ["table", "version"]
    ).when_matched_update_all().when_not_matched_insert_all().execute(row)


def load_search_params(conn, table: str, version: int | None) -> dict[str, Any]:
    """The search parameters of the newest recorded version <= ``version`` (flat search if none)."""
    if PARAMS_TABLE not in conn.table_names():
        return {"index": "flat"}
    safe = table.replace("'", "''")
    rows = (
        conn.open_table(PARAMS_TABLE).search().where(f"table = '{safe}'").limit(None).to_arrow().to_pylist()
    )
    eligible = [r for r in rows if version is None or r["version"] <= version]
    if not eligible:
        return {"index": "flat"}
    return json.loads(max(eligible, key=lambda r: r["version"])["params"])


def apply_search_params(query, params: dict[str, Any]):
    """Set ``nprobes``/``ef``/``refine_factor`` on a LanceDB vector query (flat: bypass any index)."""
    query = query.distance_type(DISTANCE)
    if params.get("index", "flat") == "flat":
        return query.bypass_vector_index()
    if params.get("nprobes"):
        query = query.nprobes(int(params["nprobes"]))
    if params.get("ef"):
        query = query.ef(int(params["ef"]))
    if params.get("refine_factor"):
        query = query.refine_factor(int(params["refine_factor"]))
    return query


def _topk_ids(tbl, queries: np.ndarray, k: int, params: dict[str, Any]) -> list[list[str]]:
    res = apply_search_params(tbl.search(queries), params).limit(k).select(["id", "_distance"]).to_arrow()
    out: list[list[str]] = [[] for _ in range(len(queries))]
    qidx = res["query_index"].to_pylist() if "query_index" in res.column_names else [0] * len(res)
    for q, i in zip(qidx, res["id"].to_pylist(), strict=True):
        out[q].append(i)
    return out


def measure_recall(
    tbl, queries: np.ndarray, params: dict[str, Any], k: int = 10, exact: list[list[str]] | None = None
) -> tuple[float, float, float]:
    """``(recall@k against exact search, its standard error over the queries, seconds for the batch)`` of
    ``params`` on ``queries``."""
    exact = exact or _topk_ids(tbl, queries, k, {"index": "flat"})
    t0 = time.perf_counter()
    approx = _topk_ids(tbl, queries, k, params)
    seconds = time.perf_counter() - t0
    per_query = np.array([len(set(a) & set(e)) / max(1, len(e)) for a, e in zip(approx, exact, strict=True)])
    stderr = float(per_query.std(ddof=1) / np.sqrt(len(per_query))) if len(per_query) > 1 else 0.0
    return float(per_query.mean()), stderr, seconds


def _sub_vectors(dim: int) -> int:
    for width in (8, 4, 2, 1):  # 8 dimensions per sub-vector when the dimension allows it
        if dim % width == 0:
            return dim // width
    return 1


def index_candidates(rows: int, dim: int) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """``(build config, [search params...])`` per candidate. ``nprobes`` stays a fraction of the partitions
    (1/8 to 3/4 for IVF_HNSW_SQ, 2-10 % for IVF_PQ), so the IVF layer prunes. IVF_HNSW_SQ is also tried with
    ef 256 and ``refine_factor`` 10 (the scalar-quantized distances re-ranked on the full vectors): without
    the refine its recall@10 stopped at 0.83 on 1M rows of real MiniLM vectors whatever ``nprobes``, with it
    0.93-0.96 (BENCHMARKS.md, issue 19 §4)."""
    hnsw_parts = min(256, max(4, rows // 25_000))
    probes = sorted({max(1, math.ceil(hnsw_parts * f)) for f in (1 / 8, 1 / 4, 1 / 2, 3 / 4)})
    pq_parts = max(4, min(int(rows**0.5), rows // 256))  # sqrt(rows), at least 256 rows a partition
    pq_probes = sorted({max(1, math.ceil(pq_parts * f)) for f in (0.02, 0.05, 0.1)})
    return [
        (
            {"index": "IVF_HNSW_SQ", "num_partitions": hnsw_parts},
            [{"nprobes": p, "ef": ef} for p in probes for ef in (64, 128)]
            + [{"nprobes": p, "ef": 256, "refine_factor": 10} for p in probes],
        ),
        (
            {"index": "IVF_PQ", "num_partitions": pq_parts, "num_sub_vectors": _sub_vectors(dim)},
            [{"nprobes": p, "refine_factor": rf} for p in pq_probes for rf in (10, 20)],
        ),
    ]


def _build(tbl, config: dict[str, Any]) -> None:
    from lancedb.index import IvfHnswSq, IvfPq

    if config["index"] == "IVF_HNSW_SQ":
        cfg = IvfHnswSq(distance_type=DISTANCE, num_partitions=config["num_partitions"])
    else:
        cfg = IvfPq(
            distance_type=DISTANCE,
            num_partitions=config["num_partitions"],
            num_sub_vectors=config["num_sub_vectors"],
        )
    tbl.create_index("vector", config=cfg, replace=True)


def _has_vector_index(tbl) -> bool:
    return any(ix.name == VECTOR_INDEX for ix in tbl.list_indices())


def choose_vector_index(
    tbl,
    queries: np.ndarray,
    min_recall: float = 0.95,
    k: int = 10,
    candidates: list[tuple[dict[str, Any], list[dict[str, Any]]]] | None = None,
) -> tuple[dict[str, Any], float, list[dict[str, Any]]]:
    """Build each candidate index once, measure recall@k and batch time against exact search on ``queries``
    (real held-out question vectors, not copies of rows), and keep the fastest configuration whose recall is
    at least ``min_recall`` with 95 % confidence (mean minus 1.96 standard errors over the queries: the
    fastest barely-passing configuration is otherwise an optimistic pick) (exact search is timed too, for the
    report; whether a table is big enough for an index at all is :class:`IndexPolicy`'s ``min_rows``). The
    winner's version is restored (no rebuild); with no winner the vector index is dropped and search stays
    exact.

    Returns ``(search params, recall@k, all measurements)``; measurements carry ``build_s`` per candidate.
    """
    queries = np.asarray(queries, dtype=np.float32)
    if queries.ndim != 2 or not len(queries):
        raise ValueError("choose_vector_index needs a 2-D array of at least one query vector")
    rows = tbl.count_rows()
    exact = _topk_ids(tbl, queries, k, {"index": "flat"})
    _, _, flat_s = measure_recall(tbl, queries, {"index": "flat"}, k, exact)
    trials: list[dict[str, Any]] = [{"index": "flat", "recall": 1.0, "seconds": round(flat_s, 4)}]
    best: tuple[dict[str, Any], float, float, int] | None = None
    for config, grid in candidates or index_candidates(rows, queries.shape[1]):
        t0 = time.perf_counter()
        _build(tbl, config)
        build_s = round(time.perf_counter() - t0, 2)
        for search in grid:
            params = {**config, **search}
            recall, stderr, seconds = measure_recall(tbl, queries, params, k, exact)
            lower = recall - Z_95 * stderr
            trials.append(
                {
                    **params,
                    "recall": round(recall, 4),
                    "recall_lower_95": round(lower, 4),
                    "seconds": round(seconds, 4),
                    "build_s": build_s,
                }
            )
            if lower >= min_recall and (best is None or seconds < best[2]):
                best = (params, recall, seconds, tbl.version)
    if best is None:
        if _has_vector_index(tbl):
            tbl.drop_index(VECTOR_INDEX)
        return {"index": "flat"}, 1.0, trials
    if tbl.version != best[3]:
        tbl.restore(best[3])  # the winner was built earlier in this loop: bring its version back
    return best[0], best[1], trials


def apply_index_policy(
    tbl, rows: int, params: dict[str, Any], queries: np.ndarray | None, policy: IndexPolicy
) -> tuple[dict[str, Any], float | None, dict[str, Any]]:
    """Apply :class:`IndexPolicy`: returns ``(params to save, recall@k or None, report)``."""
    if rows < policy.min_rows:
        if _has_vector_index(tbl):
            tbl.drop_index(VECTOR_INDEX)
        return (
            {"index": "flat"},
            1.0,
            {"index": "flat", "reason": f"{rows} rows < {policy.min_rows}: exact search"},
        )
    if queries is None or not len(queries):
        recall = 1.0 if params.get("index", "flat") == "flat" else None
        return (
            params,
            recall,
            {**params, "reason": "no held-out queries supplied: index kept, recall not measured"},
        )
    queries = np.asarray(queries, dtype=np.float32)[: policy.max_queries]
    last_rows = int(params.get("trial_rows") or 0)
    reason = None
    recall: float | None = None
    if not last_rows:
        reason = "first trial"
    elif rows >= last_rows * (1 + policy.regrow):
        reason = f"grew from {last_rows} to {rows} rows (>= {policy.regrow:.0%})"
    elif params.get("index", "flat") != "flat":
        recall, stderr, _ = measure_recall(tbl, queries, params, policy.k)
        if recall + Z_95 * stderr < policy.min_recall:  # below the target with 95 % confidence
            reason = f"recall@{policy.k} fell to {recall:.3f} (+- {Z_95 * stderr:.3f}) < {policy.min_recall}"
    else:
        recall = 1.0
    if reason is None:
        return params, recall, {**params, "trialled": False, "reason": "no growth and no recall loss"}
    chosen, recall, trials = choose_vector_index(tbl, queries, policy.min_recall, policy.k)
    chosen = {**chosen, "trial_rows": rows, "trial_queries": len(queries), "trial_recall": round(recall, 4)}
    return chosen, recall, {**chosen, "trialled": True, "reason": reason, "trials": trials}
