"""The LanceDB knowledge store: incremental sync, full-text and vector indexes, version tags.

A KB table holds ``id``, ``content_hash``, a ``vector`` and the payload columns (``source``, ``title``,
``text`` for passages; image fields for image cases). :func:`sync_table` makes the table equal to a frame:
new or changed rows (by ``content_hash``) are embedded and upserted with ``merge_insert``, rows whose id
disappeared are deleted, indexes are brought up to date, and the resulting version is tagged with the run id.

Vector index: below ``vector_index_min_rows`` the table is searched exactly (flat, recall 1.0). Above it,
candidate index configurations are built and measured against exact search on a sample of queries; the
fastest one with recall@10 >= ``min_recall`` wins (STACK_NOTES: IVF_PQ defaults give recall@10 ~0.08).
The chosen search-time parameters are saved per table version (in the database's ``_search_params`` table) so
that a reader pinned to a version searches it the same way. Plain values in (a :class:`KBLocation`: URI and
object-store options); no Dagster or ``orchestration`` import.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

DISTANCE = "cosine"
PARAMS_TABLE = "_search_params"


@dataclass(frozen=True)
class KBLocation:
    """Where a LanceDB database lives: a local folder or ``s3://`` URI, and LanceDB's object-store options."""

    uri: str
    storage_options: dict[str, str] | None = None

    def connect(self):
        import lancedb

        return lancedb.connect(self.uri, storage_options=self.storage_options)


@dataclass
class SyncReport:
    """What one sync did to a KB table."""

    table: str
    rows: int
    version: int
    tag: str | None
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    embedded: int = 0
    reused: int = 0
    index: dict[str, Any] = field(default_factory=dict)
    recall_at_10: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def connect(location: KBLocation):
    """A LanceDB connection to ``location`` (local or S3)."""
    return location.connect()


def _vectors_column(vectors: np.ndarray) -> pa.FixedSizeListArray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1])


def table_vectors(table: pa.Table, column: str = "vector") -> np.ndarray:
    """A fixed-size-list vector column as a 2-D float32 array."""
    col = table[column].combine_chunks()
    if len(col) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), -1).astype(np.float32)


def read_columns(tbl, columns: list[str]) -> pl.DataFrame:
    """Selected columns of every row of a LanceDB table as polars."""
    return pl.from_arrow(tbl.search().select(columns).limit(None).to_arrow().select(columns))


# ---- search parameters per version -----------------------------------------------------------------
def save_search_params(conn, table: str, version: int, params: dict[str, Any]) -> None:
    """Record the search parameters of ``table`` valid from ``version`` on (in ``_search_params``)."""
    row = pa.table({"table": [table], "version": [int(version)], "params": [json.dumps(params, sort_keys=True)]})
    if PARAMS_TABLE not in conn.table_names():
        conn.create_table(PARAMS_TABLE, row)
        return
    conn.open_table(PARAMS_TABLE).merge_insert(["table", "version"]).when_matched_update_all() \
        .when_not_matched_insert_all().execute(row)


def load_search_params(conn, table: str, version: int | None) -> dict[str, Any]:
    """The search parameters of the newest recorded version <= ``version`` (flat search if none)."""
    if PARAMS_TABLE not in conn.table_names():
        return {"index": "flat"}
    safe = table.replace("'", "''")
    rows = conn.open_table(PARAMS_TABLE).search().where(f"table = '{safe}'").limit(None).to_arrow().to_pylist()
    eligible = [r for r in rows if version is None or r["version"] <= version]
    if not eligible:
        return {"index": "flat"}
    return json.loads(max(eligible, key=lambda r: r["version"])["params"])


# ---- vector index choice -----------------------------------------------------------------------------
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


def measure_recall(tbl, queries: np.ndarray, params: dict[str, Any], k: int = 10,
                   exact: list[list[str]] | None = None) -> tuple[float, float]:
    """``(recall@k against exact search, seconds for the batch)`` of ``params`` on ``queries``."""
    exact = exact or _topk_ids(tbl, queries, k, {"index": "flat"})
    t0 = time.perf_counter()
    approx = _topk_ids(tbl, queries, k, params)
    seconds = time.perf_counter() - t0
    hits = sum(len(set(a) & set(e)) for a, e in zip(approx, exact, strict=True))
    return hits / max(1, sum(len(e) for e in exact)), seconds


def index_candidates(rows: int, dim: int) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """``(build config, [search params...])`` tried in order, cheapest search first."""
    parts = max(1, int(rows**0.5))
    return [
        ({"index": "IVF_HNSW_SQ", "num_partitions": max(1, rows // 100_000 + 1)},
         [{"ef": ef, "nprobes": max(1, rows // 100_000 + 1)} for ef in (64, 128, 256)]),
        ({"index": "IVF_PQ", "num_partitions": parts, "num_sub_vectors": max(1, dim // 4)},
         [{"nprobes": max(1, parts * f // 100), "refine_factor": 10} for f in (5, 10, 20)]),
    ]


def _build(tbl, config: dict[str, Any]) -> None:
    from lancedb.index import IvfHnswSq, IvfPq

    if config["index"] == "IVF_HNSW_SQ":
        cfg = IvfHnswSq(distance_type=DISTANCE, num_partitions=config["num_partitions"])
    else:
        cfg = IvfPq(distance_type=DISTANCE, num_partitions=config["num_partitions"],
                    num_sub_vectors=config["num_sub_vectors"])
    tbl.create_index("vector", config=cfg, replace=True)


def choose_vector_index(tbl, sample_queries: int = 200, min_recall: float = 0.95, k: int = 10,
                        seed: int = 0) -> tuple[dict[str, Any], float, list[dict[str, Any]]]:
    """Build each candidate index, measure recall@k and time against exact search on sampled rows,
    keep the fastest configuration with recall >= ``min_recall`` (flat search if none reaches it).

    Returns ``(search params, recall@k, all measurements)``.
    """
    rows = tbl.count_rows()
    sample = tbl.search().select(["vector"]).limit(None).to_arrow() if rows <= 200_000 else \
        tbl.search().select(["vector"]).limit(200_000).to_arrow()
    vecs = table_vectors(sample)
    rng = np.random.default_rng(seed)
    queries = vecs[rng.choice(len(vecs), min(sample_queries, len(vecs)), replace=False)]
    queries = queries + rng.normal(0, 0.02, queries.shape).astype(np.float32)  # near, not identical, to rows
    exact = _topk_ids(tbl, queries, k, {"index": "flat"})
    _, flat_s = measure_recall(tbl, queries, {"index": "flat"}, k, exact)
    trials: list[dict[str, Any]] = [{"index": "flat", "recall": 1.0, "seconds": flat_s}]
    best: tuple[dict[str, Any], float, float] | None = None
    for config, grid in index_candidates(rows, vecs.shape[1]):
        _build(tbl, config)
        for search in grid:
            params = {**config, **search}
            recall, seconds = measure_recall(tbl, queries, params, k, exact)
            trials.append({**params, "recall": round(recall, 4), "seconds": round(seconds, 4)})
            if recall >= min_recall:
                if best is None or seconds < best[2]:
                    best = (params, recall, seconds)
                break  # larger ef/nprobes only get slower
    if best is None:
        tbl.drop_index("vector_idx")
        return {"index": "flat"}, 1.0, trials
    if best[0]["index"] != trials[-1]["index"]:
        _build(tbl, best[0])
    return best[0], best[1], trials


# ---- sync ------------------------------------------------------------------------------------------
def sync_table(location: KBLocation, table: str, frame: pl.DataFrame, embed: Callable[[pl.DataFrame], np.ndarray],
               run_id: str | None = None, fts_column: str | None = "text",
               vector_index_min_rows: int = 50_000, min_recall: float = 0.95) -> SyncReport:
    """Make LanceDB table ``table`` equal to ``frame`` (which has ``id`` and ``content_hash``).

    ``embed(rows)`` is called once with only the new or changed rows and returns their vectors.
    Returns a :class:`SyncReport`; the new version is tagged ``run-<run_id>`` when ``run_id`` is given.
    """
    if frame.is_empty():
        raise ValueError(f"{table}: no rows to index; materialize at least one source partition first")
    if frame["id"].n_unique() != frame.height:
        raise ValueError(f"{table}: duplicate ids in the input frame; deduplicate the passages first")
    conn = location.connect()
    exists = table in conn.table_names()
    tbl = conn.open_table(table) if exists else None
    if tbl is not None:
        current = read_columns(tbl, ["id", "content_hash"])
    else:
        current = pl.DataFrame(schema={"id": pl.Utf8, "content_hash": pl.Utf8})
    joined = frame.join(current.rename({"content_hash": "_old_hash"}), on="id", how="left")
    changed = joined.filter(pl.col("_old_hash").is_null() | (pl.col("_old_hash") != pl.col("content_hash")))
    report = SyncReport(table=table, rows=0, version=0, tag=None,
                        inserted=int(changed["_old_hash"].is_null().sum()),
                        updated=int(changed["_old_hash"].is_not_null().sum()),
                        unchanged=frame.height - changed.height)
    removed = current.filter(~pl.col("id").is_in(frame["id"].implode()))["id"].to_list()
    report.deleted = len(removed)
    changed = changed.drop("_old_hash")

    if changed.height:
        vectors = embed(changed)
        data = changed.to_arrow().append_column("vector", _vectors_column(vectors))
        if tbl is None:
            tbl = conn.create_table(table, data)
        else:
            tbl.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(data)
    for start in range(0, len(removed), 1000):
        quoted = ",".join("'" + i.replace("'", "''") + "'" for i in removed[start : start + 1000])
        tbl.delete(f"id IN ({quoted})")

    indices = {ix.name: ix for ix in tbl.list_indices()}
    if fts_column and f"{fts_column}_idx" not in indices:
        from lancedb.index import FTS

        tbl.create_index(fts_column, config=FTS(), replace=True)
    elif changed.height or removed:
        tbl.optimize()  # folds new rows into the FTS and vector indexes, compacts fragments
    report.rows = tbl.count_rows()
    params = load_search_params(conn, table, None)
    if report.rows >= vector_index_min_rows and (params.get("index") == "flat" or "vector_idx" not in indices):
        params, recall, trials = choose_vector_index(tbl, min_recall=min_recall)
        report.index = {**params, "trials": trials}
        report.recall_at_10 = round(recall, 4)
    else:
        report.index = params
        if params.get("index", "flat") == "flat":
            report.recall_at_10 = 1.0
        else:
            vecs = table_vectors(tbl.search().select(["vector"]).limit(200).to_arrow())
            report.recall_at_10 = round(measure_recall(tbl, vecs + 0.02, params)[0], 4)
    report.version = tbl.version
    save_search_params(conn, table, report.version, {k: v for k, v in params.items() if k != "trials"})
    if run_id:
        report.tag = f"run-{run_id}"
        if report.tag not in tbl.tags.list():
            tbl.tags.create(report.tag, report.version)
    return report


# ---- publication: tags and rollback -------------------------------------------------------------------
def tag_version(location: KBLocation, table: str, tag: str, version: int) -> str:
    """Tag ``version`` of ``table`` as ``tag`` (idempotent): the tag is what readers pin to."""
    tbl = location.connect().open_table(table)
    if tag not in tbl.tags.list():
        tbl.tags.create(tag, version)
    return tag


def restore_version(location: KBLocation, table: str, version: int | None) -> bool:
    """Make ``version`` the latest version of ``table`` again (a failed check rolls back a sync). With no
    previous version (the table was new) the table is dropped. Returns True when a version was restored."""
    conn = location.connect()
    if table not in conn.table_names():
        return False
    if version is None:
        conn.drop_table(table)
        return False
    tbl = conn.open_table(table)
    tbl.checkout(version)
    tbl.restore()
    return True
