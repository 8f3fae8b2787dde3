"""Search: incremental sync and version pinning, batched calls, full text over title + text, provenance in
every hit, fusion, and the embedder cache."""

import json

import numpy as np
import polars as pl
import pytest

from assets.knowledge.sources import passage, passages_frame, read_kb_source
from retrieval.embedders import CachedEmbedding, EmbeddingCache
from retrieval.search import Hit, Retriever, convex_fusion, rrf
from retrieval.store import passage_texts, sync_table, text_table_rows
from storage.sources import SourceDir


def embed_fn(cached):
    return lambda rows: cached.embed(passage_texts(rows))


def test_embedder_cache_second_call_embeds_nothing(embedder, storage):
    cached = CachedEmbedding(embedder, EmbeddingCache(storage.lancedb_uri("cache")))
    texts = ["aspirin and bleeding", "insulin and glucose", "aspirin and bleeding"]
    first = cached.embed(texts)
    assert (cached.stats.embedded, cached.stats.reused) == (2, 1)
    again = CachedEmbedding(embedder, EmbeddingCache(storage.lancedb_uri("cache")))
    second = again.embed(texts)
    assert (again.stats.embedded, again.stats.reused) == (0, 3)
    np.testing.assert_allclose(first, second, atol=1e-6)
    assert first.shape == (3, 384) and np.allclose(np.linalg.norm(first, axis=1), 1, atol=1e-3)


@pytest.mark.timeout(300)
def test_incremental_sync_search_modes_and_pinning(embedder, storage, sample_data, chunker):
    df, _ = read_kb_source("pubmedqa", SourceDir(str(sample_data / "pubmedqa")), chunker, limit=80)
    kg, _ = read_kb_source("slake_kg", SourceDir(str(sample_data / "slake")), chunker, limit=80)
    frame = text_table_rows(pl.concat([df, kg]))
    cached = CachedEmbedding(embedder)
    loc = storage.kb_location()
    r1 = sync_table(loc, "kb_text", frame, embed_fn(cached), embedder.identity(), run_id="one")
    assert (r1.inserted, r1.rows, r1.tag, cached.stats.embedded) == (
        frame.height,
        frame.height,
        "run-one",
        frame.height,
    )

    # search modes: a PubMedQA question finds its abstract; every hit names its source record
    data = json.loads((sample_data / "pubmedqa" / "ori_pqal.json").read_text())
    pmids = list(data)[:20]
    questions = [data[p]["QUESTION"] for p in pmids]
    retriever = Retriever(loc, embedder, version="run-one")
    for mode in ("dense", "lexical", "hybrid"):
        hits = retriever.search(questions, k=3, mode=mode)
        found = sum(p in [h.native_id for h in hs] for p, hs in zip(pmids, hits, strict=True))
        assert found >= 15, (mode, found)
        for h in (h for hs in hits for h in hs):
            assert h.source_ref and h.native_id and h.id.startswith(f"{h.source}:{h.native_id}#")
    only_kg = retriever.search(questions[:3], k=5, mode="hybrid", sources=["slake_kg"])
    assert all(h.source == "slake_kg" for hs in only_kg for h in hs)

    # change one passage, remove one: only the changed one is embedded, the removed one deleted
    changed_id, removed_id = frame["id"][0], frame["id"][1]
    frame2 = frame.filter(pl.col("id") != removed_id).with_columns(
        pl.when(pl.col("id") == changed_id)
        .then(pl.lit("Helicopter transport impairs intubation."))
        .otherwise(pl.col("text"))
        .alias("text"),
        pl.when(pl.col("id") == changed_id)
        .then(pl.lit("changed"))
        .otherwise(pl.col("content_hash"))
        .alias("content_hash"),
    )
    cached2 = CachedEmbedding(embedder)
    r2 = sync_table(loc, "kb_text", frame2, embed_fn(cached2), embedder.identity(), run_id="two")
    assert (r2.updated, r2.inserted, r2.deleted, r2.unchanged) == (1, 0, 1, frame.height - 2)
    assert cached2.stats.embedded == 1 and r2.rows == frame.height - 1

    # a reader pinned to the first tag still sees the old state
    pinned = Retriever(loc, embedder, version="run-one")
    assert (
        pinned.pinned.tbl.count_rows() == frame.height
        and pinned.pinned.tbl.count_rows(f"id = '{removed_id}'") == 1
    )
    latest = Retriever(loc, embedder)
    assert latest.pinned.tbl.count_rows(f"id = '{removed_id}'") == 0 and latest.version > pinned.version


class CountingEmbedder:
    """The real embedder, counting how often the retriever asks it for query vectors."""

    def __init__(self, embedder):
        self.inner, self.calls = embedder, []

    def identity(self):
        return self.inner.identity()

    def embed_queries(self, queries):
        self.calls.append(len(queries))
        return self.inner.embed_queries(queries)


def test_full_text_covers_titles_and_search_is_batched(embedder, storage):
    rows = [
        passage(
            "medquad",
            "q1",
            0,
            "What are the symptoms of Kawasaki disease ?",
            "Fever lasting five days, red eyes and a rash.",
            "medquad_qa.jsonl.gz:7",
            "CC BY 4.0",
        ),
        passage(
            "medquad",
            "q2",
            0,
            "How to prevent rabies ?",
            "Vaccinate pets and avoid wild animals.",
            "medquad_qa.jsonl.gz:9",
            "CC BY 4.0",
        ),
    ]
    frame = text_table_rows(passages_frame(rows))
    assert (
        frame["search_text"][0] == "What are the symptoms of Kawasaki disease ?. Fever lasting five days, "
        "red eyes and a rash."
    )
    sync_table(
        storage.kb_location(),
        "kb_text",
        frame,
        embed_fn(CachedEmbedding(embedder)),
        embedder.identity(),
        run_id="1",
    )
    counting = CountingEmbedder(embedder)
    retriever = Retriever(storage.kb_location(), counting)
    # "Kawasaki" and "rabies" appear only in titles, which the dense side embeds: full text must see them too
    lexical = retriever.search(["Kawasaki", "rabies"], k=1, mode="lexical")
    assert [hs[0].native_id for hs in lexical] == ["q1", "q2"]
    assert lexical[0][0].source_ref == "medquad_qa.jsonl.gz:7"
    hybrid = retriever.search(["Kawasaki disease symptoms", "rabies prevention", "fever"], k=2, mode="hybrid")
    assert counting.calls == [3] and len(hybrid) == 3 and hybrid[0][0].native_id == "q1"


def test_fusions():
    def hit(i, s):
        return Hit(i, s, None, None, None)

    a = [hit("x", 1), hit("y", 1)]
    b = [hit("y", 1), hit("z", 1)]
    assert [h.id for h in rrf([a, b], 3)] == ["y", "x", "z"]
    q = np.array([1.0, 0.0], dtype=np.float32)
    dense = [hit("d1", 0.9), hit("d2", 0.5)]
    lexical = [(hit("l1", 12.0), np.array([0.0, 1.0], dtype=np.float32)), (hit("d2", 6.0), None)]
    fused = convex_fusion(dense, lexical, q, 3, alpha=0.5)
    # d1: 0.5*1 + 0; d2: 0.5*(0.5/0.9) + 0.5*0.5; l1: cosine 0 -> 0 + 0.5*1
    assert [h.id for h in fused] == ["d2", "d1", "l1"]
    assert fused[0].score == pytest.approx(0.5 * 0.5 / 0.9 + 0.25)
    assert [h.id for h in convex_fusion(dense, lexical, q, 1, alpha=1.0)] == ["d1"]
    # d1 also matches the query's terms (BM25 12 from the restricted full-text query): now first
    assert convex_fusion(dense, lexical, q, 1, alpha=0.5, dense_bm25={"d1": 12.0})[0].id == "d1"
