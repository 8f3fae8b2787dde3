"""Batched retrieval over the LanceDB knowledge store, on the table of the caller's embedder, pinned to a
table version or tag.

``Retriever.search(queries, k, mode)`` answers a whole batch in one call: one embedding batch and one
vectorized LanceDB query for the dense part, one full-text query per question for the lexical part (over
``search_text``: title and text, what the dense side embeds), and a fusion of both for hybrid. A retriever
opens ``<table>__<embedder fingerprint>`` (:func:`retrieval.kb.naming.open_embedder_table`), so it can never
search vectors of another embedder; with ``version=`` (a number or a tag such as ``run-<id>``) it keeps
reading that version while the KB keeps changing, and without it the newest *tagged* (checked) version,
never the latest one, which may be a sync in progress (:func:`newest_tagged_version`). Every hit carries
``source_ref`` and ``native_id`` so a result traces back to its source record. In-process, no HTTP. No
Dagster import.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .kb.connection import KBLocation
from .kb.index_choice import apply_search_params, load_search_params
from .kb.naming import open_embedder_table
from .pointers import KbPointer

RRF_K = 60
HYBRID_ALPHA = 0.6
_FTS_UNSAFE = re.compile(r"[^\w\s]")


@dataclass(frozen=True)
class Hit:
    """One retrieved row: its id, rank score, payload and provenance (``native_id`` in its source,
    ``source_ref`` = file and row of the source record)."""

    id: str
    score: float
    source: str | None
    title: str | None
    text: str | None
    native_id: str | None = None
    source_ref: str | None = None


def _sql_list(values: Sequence[str]) -> str:
    return ",".join("'" + v.replace("'", "''") + "'" for v in values)


class NoTaggedVersion(LookupError):
    """A table with no tagged (checked and published) version, opened without ``version=``."""


def newest_tagged_version(tbl) -> int:
    """The newest version of ``tbl`` that carries a tag. Only a version whose checks passed is tagged (the
    index assets tag after their gate; :func:`retrieval.kb.sync.sync_table` after its sync): the versions
    after it may be a sync in progress (rows merged, the deleted ones not yet deleted) or one whose checks
    failed. :class:`NoTaggedVersion` when there is none."""
    tags = tbl.tags.list()
    if not tags:
        raise NoTaggedVersion(
            f"table {tbl.name!r} has no tagged version yet: no sync of it has passed its checks (the "
            "kb_text_index / kb_image_index assets tag a version once it has). Materialize the index, or "
            "pass version= (a tag, or a version number to read an unchecked version deliberately)"
        )
    return max(int(info["version"]) for info in tags.values())


class _Pinned:
    """A LanceDB table opened read-only at a version or tag, with its search parameters."""

    def __init__(self, tbl, params: dict[str, Any]):
        self.tbl = tbl
        self.version = tbl.version
        self.params = params
        self.columns = set(tbl.schema.names)

    @classmethod
    def open(
        cls, location: KBLocation, table: str, identity: dict[str, Any], version: int | str | None
    ) -> _Pinned:
        conn = location.connect()
        tbl = open_embedder_table(conn, table, identity)
        tbl.checkout(newest_tagged_version(tbl) if version is None else version)
        return cls(tbl, load_search_params(conn, tbl.name, tbl.version))

    def present(self, columns: Sequence[str]) -> list[str]:
        return [c for c in columns if c in self.columns]

    def dense(self, vectors: np.ndarray, k: int, where: str | None, columns: list[str]) -> list[list[dict]]:
        query = apply_search_params(self.tbl.search(np.asarray(vectors, dtype=np.float32)), self.params)
        if where:
            query = query.where(where, prefilter=True)
        res = query.limit(k).select([*self.present(columns), "_distance"]).to_arrow().to_pylist()
        out: list[list[dict]] = [[] for _ in range(len(vectors))]
        for row in res:
            out[row.get("query_index", 0)].append(row)
        return out


HIT_COLUMNS = ["id", "source", "title", "text", "native_id", "source_ref"]


def _hit(row: dict[str, Any], score: float) -> Hit:
    return Hit(
        row["id"],
        score,
        row.get("source"),
        row.get("title"),
        row.get("text"),
        row.get("native_id"),
        row.get("source_ref"),
    )


class Retriever:
    """Dense, lexical and hybrid search over the ``kb_text`` table built by ``embedder``.

    ``fusion`` (hybrid): ``"convex"`` (default): ``alpha * dense + (1 - alpha) * lexical`` on scores
    normalized per query (cosine min-max over the candidates, BM25 divided by the best), each candidate scored
    on both sides (cosine from its vector, BM25 by a full-text query restricted to the dense candidates);
    ``alpha`` 0.6 was chosen on half of each benchmark in ``benchmarks/kb_quality.py`` (BENCHMARKS.md); or
    ``"rrf"``: reciprocal-rank fusion (worse than dense at recall@1 on MedQuAD).
    """

    def __init__(
        self,
        location: KBLocation,
        embedder: Any,
        table: str = "kb_text",
        version: int | str | None = None,
        fusion: str = "convex",
        alpha: float = HYBRID_ALPHA,
    ):
        self.embedder = embedder
        self.pinned = _Pinned.open(location, table, embedder.identity(), version)
        self._set_fusion(fusion, alpha)

    @classmethod
    def from_pointer(
        cls,
        pointer: KbPointer,
        location: KBLocation,
        embedder: Any,
        fusion: str = "convex",
        alpha: float = HYBRID_ALPHA,
    ) -> Retriever:
        """A retriever pinned to the tag a published KB pointer names, over ``location`` (the reader's view of
        the pointer's database, e.g. ``Storage.kb_location(pointer.db)``). Refuses
        (:class:`retrieval.pointers.EmbedderMismatch`) an embedder other than the one that built the index."""
        pointer.check_embedder(embedder.identity())
        return cls(location, embedder, table=pointer.table, version=pointer.tag, fusion=fusion, alpha=alpha)

    @classmethod
    def from_table(
        cls,
        tbl,
        embedder: Any,
        params: dict[str, Any] | None = None,
        fusion: str = "convex",
        alpha: float = HYBRID_ALPHA,
    ) -> Retriever:
        """A retriever over an already-open table object (e.g. the version a writer just produced)."""
        retriever = cls.__new__(cls)
        retriever.embedder = embedder
        retriever.pinned = _Pinned(tbl, params or {"index": "flat"})
        retriever._set_fusion(fusion, alpha)
        return retriever

    def _set_fusion(self, fusion: str, alpha: float) -> None:
        if fusion not in ("convex", "rrf"):
            raise ValueError(f"unknown fusion {fusion!r}: use 'convex' or 'rrf'")
        self.fusion, self.alpha = fusion, alpha

    @property
    def version(self) -> int:
        return self.pinned.version

    @property
    def table(self) -> str:
        return self.pinned.tbl.name

    def search(
        self, queries: list[str], k: int = 3, mode: str = "dense", sources: Sequence[str] | None = None
    ) -> list[list[Hit]]:
        """Top-``k`` hits per query. ``mode``: ``dense``, ``lexical`` (full text over title + text) or
        ``hybrid`` (fusion of both, each fetching ``max(3k, 20)`` candidates). ``sources`` restricts to those
        source partitions."""
        if mode not in ("dense", "lexical", "hybrid"):
            raise ValueError(f"unknown search mode {mode!r}: use 'dense', 'lexical' or 'hybrid'")
        if not queries:
            return []
        where = f"source IN ({_sql_list(sources)})" if sources else None
        depth = k if mode != "hybrid" else max(3 * k, 20)
        vectors = self._embed(queries) if mode != "lexical" else None
        dense = self._dense(vectors, depth, where) if vectors is not None else None
        lexical = (
            self._lexical(queries, depth, where, with_vectors=mode == "hybrid") if mode != "dense" else None
        )
        if mode == "dense":
            return [hits[:k] for hits in dense]
        if mode == "lexical":
            return [[h for h, _ in hits[:k]] for hits in lexical]
        if self.fusion == "rrf":
            return [rrf([d, [h for h, _ in lx]], k) for d, lx in zip(dense, lexical, strict=True)]
        out = []
        for q, d, lx, v in zip(queries, dense, lexical, vectors, strict=True):
            missing = sorted({h.id for h in d} - {h.id for h, _ in lx})
            out.append(convex_fusion(d, lx, v, k, self.alpha, self._bm25_of(q, missing, where)))
        return out

    def _embed(self, queries: list[str]) -> np.ndarray:
        vectors = (
            self.embedder.embed_queries(queries)
            if hasattr(self.embedder, "embed_queries")
            else self.embedder.embed(queries)
        )
        return np.asarray(vectors, dtype=np.float32)

    def _dense(self, vectors: np.ndarray, k: int, where: str | None) -> list[list[Hit]]:
        rows = self.pinned.dense(vectors, k, where, HIT_COLUMNS)
        return [[_hit(r, 1.0 - float(r["_distance"])) for r in hits] for hits in rows]

    def _bm25_of(self, query: str, ids: list[str], where: str | None) -> dict[str, float]:
        """BM25 of ``query`` for the rows ``ids`` only (dense candidates the full-text top list missed)."""
        text = " ".join(_FTS_UNSAFE.sub(" ", query).split())
        if not text or not ids:
            return {}
        cond = f"id IN ({_sql_list(ids)})" + (f" AND {where}" if where else "")
        rows = (
            self.pinned.tbl.search(text, query_type="fts")
            .where(cond, prefilter=True)
            .limit(len(ids))
            .select(["id", "_score"])
            .to_arrow()
            .to_pylist()
        )
        return {r["id"]: float(r["_score"]) for r in rows}

    def _lexical(
        self, queries: list[str], k: int, where: str | None, with_vectors: bool = False
    ) -> list[list[tuple[Hit, np.ndarray | None]]]:
        columns = [*self.pinned.present(HIT_COLUMNS), *(["vector"] if with_vectors else []), "_score"]
        out = []
        for q in queries:
            text = " ".join(_FTS_UNSAFE.sub(" ", q).split())
            if not text:
                out.append([])
                continue
            query = self.pinned.tbl.search(text, query_type="fts")
            if where:
                query = query.where(where, prefilter=True)
            rows = query.limit(k).select(columns).to_arrow().to_pylist()
            out.append(
                [
                    (
                        _hit(r, float(r["_score"])),
                        np.asarray(r["vector"], dtype=np.float32) if with_vectors else None,
                    )
                    for r in rows
                ]
            )
        return out


def rrf(rankings: Sequence[Sequence[Hit]], k: int, c: int = RRF_K) -> list[Hit]:
    """Reciprocal-rank fusion: score(d) = sum over rankings of 1 / (c + rank of d), rank from 1."""
    scores: dict[str, float] = {}
    first: dict[str, Hit] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.id] = scores.get(hit.id, 0.0) + 1.0 / (c + rank)
            first.setdefault(hit.id, hit)
    best = sorted(scores, key=lambda i: (-scores[i], i))[:k]
    return [replace(first[i], score=scores[i]) for i in best]


def convex_fusion(
    dense: Sequence[Hit],
    lexical: Sequence[tuple[Hit, np.ndarray | None]],
    query: np.ndarray,
    k: int,
    alpha: float = HYBRID_ALPHA,
    dense_bm25: dict[str, float] | None = None,
) -> list[Hit]:
    """``alpha * cosine' + (1 - alpha) * bm25'`` over the union of candidates: cosine' is min-max normalized
    over the candidates (a lexical-only candidate's cosine computed from its vector), bm25' is BM25 / the best
    BM25 among the candidates (a dense-only candidate's BM25 from ``dense_bm25``, 0 when it matches no term).
    Scoring every candidate on both sides is what kept hybrid at or above the better single mode on the
    benchmarks of BENCHMARKS.md (with BM25 only for the full-text list it lost to dense on PubMedQA)."""
    cosine: dict[str, float] = {h.id: h.score for h in dense}
    hits: dict[str, Hit] = {h.id: h for h in dense}
    raw_bm25 = {**(dense_bm25 or {}), **{h.id: h.score for h, _ in lexical}}
    best_bm25 = max(raw_bm25.values(), default=0.0)
    bm25 = {i: s / best_bm25 if best_bm25 > 0 else 0.0 for i, s in raw_bm25.items()}
    for h, vec in lexical:
        if h.id not in cosine:
            cosine[h.id] = float(np.dot(vec, query)) if vec is not None else min(cosine.values(), default=0.0)
            hits[h.id] = h
    if not cosine:
        return []
    lo, hi = min(cosine.values()), max(cosine.values())
    span = hi - lo if hi > lo else 1.0
    fused = {i: alpha * (c - lo) / span + (1 - alpha) * bm25.get(i, 0.0) for i, c in cosine.items()}
    best = sorted(fused, key=lambda i: (-fused[i], i))[:k]
    return [replace(hits[i], score=fused[i]) for i in best]


@dataclass(frozen=True)
class ImageHit:
    """One retrieved image case."""

    id: str
    score: float
    image_ref: str
    description: str
    modality: str | None
    organ: str | None
    source: str | None = None


class ImageRetriever:
    """Nearest image cases (CDIR) in the ``kb_image`` table built by ``embedder``, pinned like
    :class:`Retriever`."""

    def __init__(
        self, location: KBLocation, embedder: Any, table: str = "kb_image", version: int | str | None = None
    ):
        self.embedder = embedder
        self.pinned = _Pinned.open(location, table, embedder.identity(), version)

    @classmethod
    def from_pointer(cls, pointer: KbPointer, location: KBLocation, embedder: Any) -> ImageRetriever:
        """An image retriever pinned to a published KB pointer's tag (see :meth:`Retriever.from_pointer`)."""
        pointer.check_embedder(embedder.identity())
        return cls(location, embedder, table=pointer.table, version=pointer.tag)

    @property
    def version(self) -> int:
        return self.pinned.version

    def search_images(
        self, images: list[bytes], k: int = 1, exclude_refs: Sequence[str] = ()
    ) -> list[list[ImageHit]]:
        """Top-``k`` cases per query image (bytes), one embedding batch and one vectorized query;
        ``exclude_refs`` drops cases with those image ids (a query image must not retrieve itself)."""
        if not images:
            return []
        where = f"image_ref NOT IN ({_sql_list(exclude_refs)})" if exclude_refs else None
        vectors = self.embedder.embed(images)
        rows = self.pinned.dense(
            vectors, k, where, ["id", "source", "image_ref", "description", "modality", "organ"]
        )
        return [
            [
                ImageHit(
                    r["id"],
                    1.0 - float(r["_distance"]),
                    r["image_ref"],
                    r["description"],
                    r["modality"],
                    r["organ"],
                    r.get("source"),
                )
                for r in hits
            ]
            for hits in rows
        ]
