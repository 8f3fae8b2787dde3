"""Batched retrieval over the LanceDB knowledge store, pinned to a table version or tag.

``Retriever.search(queries, k, mode)`` answers a whole batch in one call: one embedding batch and one
vectorized LanceDB query for the dense part, full-text queries for the lexical part, reciprocal-rank
fusion for hybrid. A retriever opened with ``version=`` (a number or a tag such as ``run-<id>``) keeps
reading that version while the KB keeps changing, which makes training and evaluation reproducible.
In-process, no HTTP. No Dagster import.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .store import KBLocation, apply_search_params, load_search_params

RRF_K = 60
_FTS_UNSAFE = re.compile(r"[^\w\s]")


@dataclass(frozen=True)
class Hit:
    """One retrieved row: its id, rank score and payload."""

    id: str
    score: float
    source: str | None
    title: str | None
    text: str | None


def _sql_list(values: Sequence[str]) -> str:
    return ",".join("'" + v.replace("'", "''") + "'" for v in values)


class _Pinned:
    """A LanceDB table opened read-only at a version or tag, with its search parameters."""

    def __init__(self, tbl, params: dict[str, Any]):
        self.tbl = tbl
        self.version = tbl.version
        self.params = params

    @classmethod
    def open(cls, location: KBLocation, table: str, version: int | str | None) -> _Pinned:
        conn = location.connect()
        tbl = conn.open_table(table)
        if version is not None:
            tbl.checkout(version)
        return cls(tbl, load_search_params(conn, table, tbl.version))

    def dense(self, vectors: np.ndarray, k: int, where: str | None, columns: list[str]) -> list[list[dict]]:
        query = apply_search_params(self.tbl.search(np.asarray(vectors, dtype=np.float32)), self.params)
        if where:
            query = query.where(where, prefilter=True)
        res = query.limit(k).select([*columns, "_distance"]).to_arrow().to_pylist()
        out: list[list[dict]] = [[] for _ in range(len(vectors))]
        for row in res:
            out[row.get("query_index", 0)].append(row)
        return out


class Retriever:
    """Dense, lexical and hybrid search over the ``kb_text`` table."""

    def __init__(self, location: KBLocation, embedder: Any, table: str = "kb_text",
                 version: int | str | None = None):
        self.embedder = embedder
        self.pinned = _Pinned.open(location, table, version)

    @classmethod
    def from_table(cls, tbl, embedder: Any, params: dict[str, Any] | None = None) -> Retriever:
        """A retriever over an already-open table object (e.g. the version a writer just produced)."""
        retriever = cls.__new__(cls)
        retriever.embedder = embedder
        retriever.pinned = _Pinned(tbl, params or {"index": "flat"})
        return retriever

    @property
    def version(self) -> int:
        return self.pinned.version

    def search(self, queries: list[str], k: int = 3, mode: str = "dense",
               sources: Sequence[str] | None = None) -> list[list[Hit]]:
        """Top-``k`` hits per query. ``mode``: ``dense``, ``lexical`` (full text) or ``hybrid`` (RRF of both,
        each fetching ``max(3k, 20)`` candidates). ``sources`` restricts to those source partitions."""
        if mode not in ("dense", "lexical", "hybrid"):
            raise ValueError(f"unknown search mode {mode!r}: use 'dense', 'lexical' or 'hybrid'")
        if not queries:
            return []
        where = f"source IN ({_sql_list(sources)})" if sources else None
        depth = k if mode != "hybrid" else max(3 * k, 20)
        dense = self._dense(queries, depth, where) if mode != "lexical" else None
        lexical = self._lexical(queries, depth, where) if mode != "dense" else None
        if mode == "dense":
            return [hits[:k] for hits in dense]
        if mode == "lexical":
            return [hits[:k] for hits in lexical]
        return [rrf([d, lx], k) for d, lx in zip(dense, lexical, strict=True)]

    def _dense(self, queries: list[str], k: int, where: str | None) -> list[list[Hit]]:
        vectors = self.embedder.embed_queries(queries) if hasattr(self.embedder, "embed_queries") \
            else self.embedder.embed(queries)
        rows = self.pinned.dense(vectors, k, where, ["id", "source", "title", "text"])
        return [[Hit(r["id"], 1.0 - float(r["_distance"]), r["source"], r["title"], r["text"]) for r in hits]
                for hits in rows]

    def _lexical(self, queries: list[str], k: int, where: str | None) -> list[list[Hit]]:
        out = []
        for q in queries:
            text = " ".join(_FTS_UNSAFE.sub(" ", q).split())
            if not text:
                out.append([])
                continue
            query = self.pinned.tbl.search(text, query_type="fts")
            if where:
                query = query.where(where, prefilter=True)
            rows = query.limit(k).select(["id", "source", "title", "text", "_score"]).to_arrow().to_pylist()
            out.append([Hit(r["id"], float(r["_score"]), r["source"], r["title"], r["text"]) for r in rows])
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
    return [Hit(i, scores[i], first[i].source, first[i].title, first[i].text) for i in best]


@dataclass(frozen=True)
class ImageHit:
    """One retrieved image case."""

    id: str
    score: float
    image_ref: str
    description: str
    modality: str | None
    organ: str | None


class ImageRetriever:
    """Nearest image cases (CDIR) in the ``kb_image`` table, pinned like :class:`Retriever`."""

    def __init__(self, location: KBLocation, embedder: Any, table: str = "kb_image",
                 version: int | str | None = None):
        self.embedder = embedder
        self.pinned = _Pinned.open(location, table, version)

    def search_images(self, images: list[bytes], k: int = 1, exclude_refs: Sequence[str] = ()) -> list[list[ImageHit]]:
        """Top-``k`` cases per query image (bytes); ``exclude_refs`` drops cases with those image ids
        (a query image must not retrieve itself)."""
        if not images:
            return []
        where = f"image_ref NOT IN ({_sql_list(exclude_refs)})" if exclude_refs else None
        vectors = self.embedder.embed(images)
        rows = self.pinned.dense(vectors, k, where, ["id", "image_ref", "description", "modality", "organ"])
        return [[ImageHit(r["id"], 1.0 - float(r["_distance"]), r["image_ref"], r["description"], r["modality"],
                          r["organ"]) for r in hits] for hits in rows]
