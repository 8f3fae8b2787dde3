"""The LanceDB knowledge store: one table per embedder, per-source incremental sync, explicit maintenance,
tag retention, and a vector index chosen by measured recall on real questions.

Tables. A KB table (``kb_text``, ``kb_image``) is stored as ``<base>__<embedder fingerprint>``; its schema
metadata (``medrwr.embedder``) records the embedder's identity (model id, weights sha256, dimension, max
sequence length or image size, dtype). A different embedder therefore builds a new table and never mixes its
vectors with another's; :func:`open_embedder_table` opens the table matching an embedder or says which exist.

Sync. :func:`sync_table` makes the rows of the given ``sources`` equal to a frame (``id``, ``source``,
``content_hash`` and payload): new or changed rows (by ``content_hash``) are embedded and upserted with
``merge_insert``; rows of those sources whose id disappeared are deleted; rows of other sources are never
touched (a source that failed to load cannot wipe its rows). The version is tagged ``run-<run id>``.

Maintenance is explicit and self-repairing: the full-text index is created if missing, and whenever
``index_stats`` shows unindexed rows in any index (or rows were deleted) the table is compacted and its indexes
updated (``optimize`` with pruning disabled). A sync that died after ``merge_insert`` leaves unindexed rows;
the next sync sees them and repairs the table. Old versions are then pruned by :class:`Retention`: expired
``run-`` tags are deleted first (the newest ``keep_tags`` and every pinned tag survive), then untagged versions
older than ``cleanup_older_than`` are removed with Lance's cleanup, which skips tagged versions (LanceDB's own
``optimize`` refuses to run at all once a tagged version is older than its window: STACK_NOTES).

Vector index. Below ``IndexPolicy.min_rows`` the table is searched exactly. Above it, candidate indexes are
built once each and measured against exact search on real held-out question vectors supplied by the caller;
the fastest configuration whose recall@k is >= ``min_recall`` with 95 % confidence is kept (restoring its
version, never rebuilding it), else exact search. Trials re-run only when the table grew by ``regrow`` since the
last trial or when recall on the supplied questions is below ``min_recall`` with 95 % confidence (the two
bounds give hysteresis: a marginal measurement does not re-trigger a trial). Search parameters are saved per table version (table
``_search_params``) so that a reader pinned to a version searches it the same way.

Writers. One writer per KB database at a time: Dagster's ``kb_writer`` pool (limit 1) is the guard in
production (its slot claim is atomic on Postgres). On SQLite, the laptop default, the claim is not atomic across
processes: two run workers can both hold a one-slot pool (measured: 2 of 8 simultaneous claims), so writers of a
local KB also take :func:`writer_lock`, an OS file lock in the database folder.

Plain values in (a :class:`KBLocation`: URI and object-store options); no Dagster or ``orchestration`` import.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from .chunking import passage_input

DISTANCE = "cosine"
PARAMS_TABLE = "_search_params"
EMBEDDER_KEY = b"medrwr.embedder"
RUN_TAG_PREFIX = "run-"
VECTOR_INDEX = "vector_idx"
Z_95 = 1.96
NO_PRUNE = timedelta(days=365 * 100)  # optimize() window that prunes nothing: pruning is prune_versions' job
TEXT_COLUMNS = ["id", "source", "native_id", "source_ref", "title", "text", "content_hash"]
TEXT_FTS_COLUMN = "search_text"
WRITER_LOCK = ".kb_writer.lock"


@dataclass(frozen=True)
class KBLocation:
    """Where a LanceDB database lives: a local folder or ``s3://`` URI, and LanceDB's object-store options."""

    uri: str
    storage_options: dict[str, str] | None = None

    def connect(self):
        import lancedb

        return lancedb.connect(self.uri, storage_options=self.storage_options)


@dataclass(frozen=True)
class Retention:
    """Which versions a sync keeps.

    ``keep_tags``: the newest N ``run-`` tags (by version) survive; ``None`` keeps every tag.
    ``pinned_tags``: tags that always survive (the caller passes those named by checkpoint and report
    manifests). Tags without the ``run-`` prefix are never deleted. ``cleanup_older_than``: untagged versions
    older than this are deleted (tagged versions never are); ``timedelta(0)`` keeps only the latest untagged one.
    """

    keep_tags: int | None = None
    pinned_tags: frozenset[str] = frozenset()
    cleanup_older_than: timedelta = timedelta(days=7)


@dataclass(frozen=True)
class IndexPolicy:
    """When and how the vector index is chosen (see the module docstring)."""

    min_rows: int = 50_000
    min_recall: float = 0.95
    k: int = 10
    regrow: float = 0.2
    max_queries: int = 1000


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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def local_root(location: KBLocation) -> Path | None:
    """The folder of a local database (``None`` for an object-store URI such as ``s3://``)."""
    uri = location.uri
    if uri.startswith("file://"):
        return Path(uri.removeprefix("file://"))
    return None if "://" in uri else Path(uri)


@contextmanager
def writer_lock(location: KBLocation, timeout_s: float = 3600.0,
                log: Callable[[str], None] | None = None) -> Iterator[Path | None]:
    """Hold the database's writer lock (a ``filelock`` OS lock on ``<db>/.kb_writer.lock``) for the block.

    Local databases only: for an object-store URI nothing is locked here (``None`` is yielded) and the
    ``kb_writer`` pool on a Postgres-backed instance is the guard (module docstring). The OS drops the lock when
    its process dies, so a killed writer never leaves it held. ``log`` gets one line after release with the
    wall-clock times (``time.time()``) the lock was held from and to, both taken while it was held.
    """
    root = local_root(location)
    if root is None:
        yield None
        return
    from filelock import FileLock, Timeout

    root.mkdir(parents=True, exist_ok=True)
    path = root / WRITER_LOCK
    lock = FileLock(str(path), timeout=timeout_s)
    asked = time.time()
    try:
        lock.acquire()
    except Timeout as exc:
        raise TimeoutError(f"{path}: another writer of this knowledge base has held its lock for over "
                           f"{timeout_s:.0f} s; find that run (lsof {path}) and let it finish or stop it, "
                           "then retry") from exc
    held_from = time.time()
    try:
        yield path
    finally:
        held_to = time.time()
        lock.release()
        if log is not None:
            log(f"kb writer lock {path} held from {held_from:.6f} to {held_to:.6f} "
                f"(waited {held_from - asked:.3f} s)")


class EmbedderTableMissing(LookupError):
    """No table of a KB was built with the asked-for embedder."""


def connect(location: KBLocation):
    """A LanceDB connection to ``location`` (local or S3)."""
    return location.connect()


def _sql_list(values: Sequence[str]) -> str:
    return ",".join("'" + str(v).replace("'", "''") + "'" for v in values)


def _vectors_column(vectors: np.ndarray) -> pa.FixedSizeListArray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1])


def table_vectors(table: pa.Table, column: str = "vector") -> np.ndarray:
    """A fixed-size-list vector column as a 2-D float32 array."""
    col = table[column].combine_chunks()
    if len(col) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), -1).astype(np.float32)


def read_columns(tbl, columns: list[str], where: str | None = None) -> pl.DataFrame:
    """Selected columns of every row (matching ``where``) of a LanceDB table as polars."""
    query = tbl.search().select(columns)
    if where:
        query = query.where(where)
    return pl.from_arrow(query.limit(None).to_arrow().select(columns))


def with_search_text(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` (``title``, ``text``) plus ``search_text`` = what the dense side embeds (:func:`passage_input`:
    title and text), the column the full-text index covers."""
    title = pl.col("title")
    return frame.with_columns(
        pl.when(title.is_not_null() & (title != "")).then(pl.concat_str([title, pl.lit(". "), pl.col("text")]))
        .otherwise(pl.col("text")).alias(TEXT_FTS_COLUMN))


def text_table_rows(passages: pl.DataFrame) -> pl.DataFrame:
    """The ``kb_text`` rows of a passages frame: ids, provenance (``native_id``, ``source_ref``), payload and
    ``search_text`` (:func:`with_search_text`), for the FTS index."""
    return with_search_text(passages.select(TEXT_COLUMNS))


# ---- one table per embedder ---------------------------------------------------------------------------
def embedder_table(base: str, fingerprint: str) -> str:
    """Physical table name of KB ``base`` built by the embedder with ``fingerprint``."""
    return f"{base}__{fingerprint}"


def identity_fingerprint(identity: dict[str, Any]) -> str:
    from .embedders import fingerprint

    return fingerprint(identity)


def table_embedder(tbl) -> dict[str, Any] | None:
    """The embedder identity recorded in a table's schema metadata (``None`` if absent)."""
    raw = (tbl.schema.metadata or {}).get(EMBEDDER_KEY)
    return json.loads(raw) if raw else None


def embedder_tables(conn, base: str) -> dict[str, dict[str, Any] | None]:
    """``{physical name: embedder identity}`` of every table built for KB ``base``."""
    return {name: table_embedder(conn.open_table(name)) for name in conn.table_names()
            if name.startswith(f"{base}__")}


def open_embedder_table(conn, base: str, identity: dict[str, Any]):
    """The table of KB ``base`` built with the embedder ``identity``; :class:`EmbedderTableMissing` naming the
    tables that do exist (and their embedders) when there is none."""
    name = embedder_table(base, identity_fingerprint(identity))
    if name not in conn.table_names():
        built = embedder_tables(conn, base)
        listing = "; ".join(f"{n}: {_describe(i)}" for n, i in sorted(built.items())) or "none"
        raise EmbedderTableMissing(
            f"no {base!r} table for embedder {_describe(identity)} (would be {name!r}). Tables built: {listing}. "
            f"Build the KB with this embedder (materialize the index asset) or open it with the embedder that "
            f"built one of those tables.")
    tbl = conn.open_table(name)
    recorded = table_embedder(tbl)
    if recorded != identity:
        raise EmbedderTableMissing(f"table {name!r} records embedder {_describe(recorded)}, not {_describe(identity)}")
    return tbl


def _describe(identity: dict[str, Any] | None) -> str:
    if not identity:
        return "(no embedder recorded)"
    keys = ("model_id", "dim", "max_seq_length", "image_size", "dtype", "weights_sha256")
    return "{" + ", ".join(f"{k}={identity[k]}" for k in keys if identity.get(k) is not None) + "}"


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
                   exact: list[list[str]] | None = None) -> tuple[float, float, float]:
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
    (1/8 to 3/4 for IVF_HNSW_SQ, 2-10 % for IVF_PQ), so the IVF layer prunes."""
    hnsw_parts = min(256, max(4, rows // 25_000))
    probes = sorted({max(1, math.ceil(hnsw_parts * f)) for f in (1 / 8, 1 / 4, 1 / 2, 3 / 4)})
    pq_parts = max(4, min(int(rows**0.5), rows // 256))  # sqrt(rows), at least 256 rows a partition
    pq_probes = sorted({max(1, math.ceil(pq_parts * f)) for f in (0.02, 0.05, 0.1)})
    return [
        ({"index": "IVF_HNSW_SQ", "num_partitions": hnsw_parts},
         [{"nprobes": p, "ef": ef} for p in probes for ef in (64, 128)]),
        ({"index": "IVF_PQ", "num_partitions": pq_parts, "num_sub_vectors": _sub_vectors(dim)},
         [{"nprobes": p, "refine_factor": rf} for p in pq_probes for rf in (10, 20)]),
    ]


def _build(tbl, config: dict[str, Any]) -> None:
    from lancedb.index import IvfHnswSq, IvfPq

    if config["index"] == "IVF_HNSW_SQ":
        cfg = IvfHnswSq(distance_type=DISTANCE, num_partitions=config["num_partitions"])
    else:
        cfg = IvfPq(distance_type=DISTANCE, num_partitions=config["num_partitions"],
                    num_sub_vectors=config["num_sub_vectors"])
    tbl.create_index("vector", config=cfg, replace=True)


def _has_vector_index(tbl) -> bool:
    return any(ix.name == VECTOR_INDEX for ix in tbl.list_indices())


def choose_vector_index(tbl, queries: np.ndarray, min_recall: float = 0.95, k: int = 10,
                        candidates: list[tuple[dict[str, Any], list[dict[str, Any]]]] | None = None,
                        ) -> tuple[dict[str, Any], float, list[dict[str, Any]]]:
    """Build each candidate index once, measure recall@k and batch time against exact search on ``queries``
    (real held-out question vectors, not copies of rows), and keep the fastest configuration whose recall is
    at least ``min_recall`` with 95 % confidence (mean minus 1.96 standard errors over the queries: the
    fastest barely-passing configuration is otherwise an optimistic pick) (exact search is timed too, for the report; whether a table is big enough for an index at
    all is :class:`IndexPolicy`'s ``min_rows``). The winner's version is restored (no rebuild); with no winner
    the vector index is dropped and search stays exact.

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
            trials.append({**params, "recall": round(recall, 4), "recall_lower_95": round(lower, 4),
                           "seconds": round(seconds, 4), "build_s": build_s})
            if lower >= min_recall and (best is None or seconds < best[2]):
                best = (params, recall, seconds, tbl.version)
    if best is None:
        if _has_vector_index(tbl):
            tbl.drop_index(VECTOR_INDEX)
        return {"index": "flat"}, 1.0, trials
    if tbl.version != best[3]:
        tbl.restore(best[3])  # the winner was built earlier in this loop: bring its version back
    return best[0], best[1], trials


def _vector_index(tbl, rows: int, params: dict[str, Any], queries: np.ndarray | None,
                  policy: IndexPolicy) -> tuple[dict[str, Any], float | None, dict[str, Any]]:
    """Apply :class:`IndexPolicy`: returns ``(params to save, recall@k or None, report)``."""
    if rows < policy.min_rows:
        if _has_vector_index(tbl):
            tbl.drop_index(VECTOR_INDEX)
        return {"index": "flat"}, 1.0, {"index": "flat", "reason": f"{rows} rows < {policy.min_rows}: exact search"}
    if queries is None or not len(queries):
        recall = 1.0 if params.get("index", "flat") == "flat" else None
        return params, recall, {**params, "reason": "no held-out queries supplied: index kept, recall not measured"}
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


# ---- maintenance and retention -------------------------------------------------------------------------
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


def prune_versions(tbl, retention: Retention) -> dict[str, Any]:
    """Delete expired ``run-`` tags (all but the newest ``keep_tags`` and the pinned ones), then remove
    untagged versions older than ``cleanup_older_than`` (Lance cleanup, tagged versions skipped)."""
    tags = {name: int(info["version"]) for name, info in tbl.tags.list().items()}
    managed = sorted((n for n in tags if n.startswith(RUN_TAG_PREFIX)), key=lambda n: (-tags[n], n))
    keep = set(managed if retention.keep_tags is None else managed[: retention.keep_tags])
    expired = [n for n in managed if n not in keep and n not in retention.pinned_tags]
    for name in expired:
        tbl.tags.delete(name)
    stats = tbl.to_lance().cleanup_old_versions(older_than=retention.cleanup_older_than,
                                                error_if_tagged_old_versions=False)
    return {"tags_deleted": expired, "tags_kept": sorted(set(tags) - set(expired)),
            "pinned_missing": sorted(set(retention.pinned_tags) - set(tags)),
            "versions_removed": int(stats.old_versions), "bytes_removed": int(stats.bytes_removed)}


# ---- sync ------------------------------------------------------------------------------------------
def sync_table(location: KBLocation, table: str, frame: pl.DataFrame, embed: Callable[[pl.DataFrame], np.ndarray],
               embedder: dict[str, Any], run_id: str | None = None, sources: Sequence[str] | None = None,
               fts_column: str | None = TEXT_FTS_COLUMN, index_policy: IndexPolicy | None = None,
               recall_queries: np.ndarray | None = None, retention: Retention | None = None) -> SyncReport:
    """Make the rows of ``sources`` in KB ``table`` (for the embedder ``embedder``, an identity dict) equal to
    ``frame`` (``id``, ``source``, ``content_hash`` and payload columns).

    ``sources``: the sources ``frame`` is complete for (default: those present in it); rows of other sources
    are left alone, and a source listed here with no rows in ``frame`` has its rows deleted. ``embed(rows)`` is
    called once with only the new or changed rows and returns their vectors. ``recall_queries``: embedded real
    held-out questions for the vector-index trial (see :class:`IndexPolicy`). The new version is tagged
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
    where = f"source IN ({_sql_list(scope)})"
    current = read_columns(tbl, ["id", "content_hash"], where) if tbl is not None else \
        pl.DataFrame(schema={"id": pl.Utf8, "content_hash": pl.Utf8})
    joined = frame.join(current.rename({"content_hash": "_old_hash"}), on="id", how="left")
    changed = joined.filter(pl.col("_old_hash").is_null() | (pl.col("_old_hash") != pl.col("content_hash")))
    report = SyncReport(table=name, base_table=table, embedder_fingerprint=fp, rows=0, version=0, tag=None,
                        sources=scope, inserted=int(changed["_old_hash"].is_null().sum()),
                        updated=int(changed["_old_hash"].is_not_null().sum()),
                        unchanged=frame.height - changed.height)
    removed = current.filter(~pl.col("id").is_in(frame["id"].implode()))["id"].to_list()
    report.deleted = len(removed)
    changed = changed.drop("_old_hash")

    if changed.height:
        vectors = np.asarray(embed(changed), dtype=np.float32)
        if vectors.shape != (changed.height, embedder["dim"]):
            raise ValueError(f"{table}: embed returned {vectors.shape}, expected ({changed.height}, {embedder['dim']})")
        data = changed.to_arrow().append_column("vector", _vectors_column(vectors))
        if tbl is None:
            data = data.replace_schema_metadata({EMBEDDER_KEY: json.dumps(embedder, sort_keys=True)})
            tbl = conn.create_table(name, data)
        else:
            tbl.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(data)
    if tbl is None:
        raise ValueError(f"{table}: nothing to create for embedder {fp}")
    for start in range(0, len(removed), 1000):
        tbl.delete(f"id IN ({_sql_list(removed[start : start + 1000])})")

    report.maintenance = maintain(tbl, fts_column, force=bool(removed))
    report.rows = tbl.count_rows()
    if not report.rows:
        raise ValueError(f"{table}: the sync left the table empty")
    params, recall, report.index = _vector_index(tbl, report.rows, load_search_params(conn, name, None),
                                                 recall_queries, policy)
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

def passage_texts(rows: pl.DataFrame) -> list[str]:
    """What each ``kb_text`` row is embedded as (title and text, :func:`passage_input`)."""
    return [passage_input(t, x) for t, x in zip(rows["title"], rows["text"], strict=True)]
