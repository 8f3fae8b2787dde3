"""Knowledge base: passages, embedder cache, incremental sync, search modes, version pinning, index choice."""

import json

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from assets.knowledge.sources import chunk_words, deduplicate, passage, read_kb_source
from orchestration.sources import SourceDir
from retrieval.embedders import CachedEmbedding, EmbeddingCache, TextEmbedder, passage_input
from retrieval.search import Retriever, rrf
from retrieval.store import choose_vector_index, sync_table


@pytest.fixture(scope="module")
def embedder():
    return TextEmbedder()


def embed_fn(cached):
    return lambda rows: cached.embed([passage_input(t, x) for t, x in zip(rows["title"], rows["text"], strict=True)])


def test_chunking_respects_word_bounds():
    text = " ".join(f"Sentence number {i} has exactly seven words." for i in range(100))
    chunks = chunk_words(text)
    sizes = [len(c.split()) for c in chunks]
    assert all(100 <= s <= 300 for s in sizes), sizes
    assert " ".join(chunks).split() == text.split()
    assert chunk_words("short text.") == ["short text."]


def test_ids_stable_across_runs_and_dedupe(sample_data):
    src = SourceDir(str(sample_data / "medquad"))
    a, ra = read_kb_source("medquad", src, limit=200)
    b, _ = read_kb_source("medquad", src, limit=200)
    assert a.equals(b) and a["id"].n_unique() == a.height
    assert all(r.reason.startswith(("exact duplicate", "near duplicate")) for r in ra.rejected)
    base = "the liver is the largest solid organ in the body and it filters blood from the gut " * 3
    rows = [passage("x", "1", 0, None, base, "f:1", "l"), passage("x", "2", 0, None, base.upper() + "!", "f:2", "l"),
            passage("x", "3", 0, None, base + " indeed", "f:3", "l"),
            passage("x", "4", 0, None, "a completely different passage about kidney stones and their treatment "
                    "with lithotripsy in adults", "f:4", "l")]
    kept, dups = deduplicate(rows)
    assert [r["id"] for r in kept] == ["x:1#0", "x:4#0"]
    assert [d.reason.split(":")[0] for d in dups] == ["exact duplicate", "near duplicate"]


def test_pubmedqa_one_passage_per_pmid_without_question(sample_data):
    df, _ = read_kb_source("pubmedqa", SourceDir(str(sample_data / "pubmedqa")))
    data = json.loads((sample_data / "pubmedqa" / "ori_pqal.json").read_text())
    assert sorted(df["id"]) == sorted(f"pubmedqa:{p}#0" for p in data)
    assert df["title"].is_null().all()


def test_medrag_jsonl_and_parquet(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.jsonl").write_text(json.dumps({"id": "d1", "title": "T", "content": "Aspirin inhibits COX."})
                                            + "\n{bad\n")
    pl.DataFrame({"id": ["d2"], "title": ["U"], "content": ["Insulin lowers glucose."]}).write_parquet(
        tmp_path / "c" / "b.parquet")
    df, result = read_kb_source("textbooks", SourceDir(str(tmp_path / "c")))
    assert sorted(df["id"]) == ["textbooks:d1#0", "textbooks:d2#0"]
    assert len(result.rejected) == 1 and "malformed JSON" in result.rejected[0].reason


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


def test_incremental_sync_search_modes_and_pinning(embedder, storage, sample_data):
    df, _ = read_kb_source("pubmedqa", SourceDir(str(sample_data / "pubmedqa")), limit=80)
    kg, _ = read_kb_source("slake_kg", SourceDir(str(sample_data / "slake")), limit=80)
    frame = pl.concat([df, kg]).select("id", "source", "title", "text", "content_hash")
    cached = CachedEmbedding(embedder)
    r1 = sync_table(storage.kb_location(), "kb_text", frame, embed_fn(cached), run_id="one")
    assert (r1.inserted, r1.rows, r1.tag, cached.stats.embedded) == (160, 160, "run-one", 160)

    # search modes: a PubMedQA question finds its abstract
    data = json.loads((sample_data / "pubmedqa" / "ori_pqal.json").read_text())
    pmids = list(data)[:20]
    questions = [data[p]["QUESTION"] for p in pmids]
    retriever = Retriever(storage.kb_location(), embedder, version="run-one")
    for mode in ("dense", "lexical", "hybrid"):
        hits = retriever.search(questions, k=3, mode=mode)
        found = sum(f"pubmedqa:{p}#0" in [h.id for h in hs] for p, hs in zip(pmids, hits, strict=True))
        assert found >= 15, (mode, found)
    only_kg = retriever.search(questions[:3], k=5, mode="hybrid", sources=["slake_kg"])
    assert all(h.source == "slake_kg" for hs in only_kg for h in hs)

    # change one passage, remove one: only the changed one is embedded, the removed one deleted
    changed_id, removed_id = frame["id"][0], frame["id"][1]
    frame2 = frame.filter(pl.col("id") != removed_id).with_columns(
        pl.when(pl.col("id") == changed_id).then(pl.lit("Helicopter transport impairs intubation.")).otherwise(
            pl.col("text")).alias("text"),
        pl.when(pl.col("id") == changed_id).then(pl.lit("changed")).otherwise(pl.col("content_hash"))
        .alias("content_hash"))
    cached2 = CachedEmbedding(embedder)
    r2 = sync_table(storage.kb_location(), "kb_text", frame2, embed_fn(cached2), run_id="two")
    assert (r2.updated, r2.inserted, r2.deleted, r2.unchanged) == (1, 0, 1, 158)
    assert cached2.stats.embedded == 1 and r2.rows == 159

    # a reader pinned to the first tag still sees the old state
    pinned = Retriever(storage.kb_location(), embedder, version="run-one")
    assert pinned.pinned.tbl.count_rows() == 160 and pinned.pinned.tbl.count_rows(f"id = '{removed_id}'") == 1
    latest = Retriever(storage.kb_location(), embedder)
    assert latest.pinned.tbl.count_rows(f"id = '{removed_id}'") == 0 and latest.version > pinned.version


def test_rrf_fuses_rankings():
    from retrieval.search import Hit

    a = [Hit("x", 1, None, None, None), Hit("y", 1, None, None, None)]
    b = [Hit("y", 1, None, None, None), Hit("z", 1, None, None, None)]
    assert [h.id for h in rrf([a, b], 3)] == ["y", "x", "z"]


@pytest.mark.slow
def test_vector_index_chosen_by_measured_recall(storage):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(50, 64))
    vecs = (centers[rng.integers(0, 50, 6000)] + rng.normal(scale=0.5, size=(6000, 64))).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    table = pa.table({"id": [f"r{i}" for i in range(6000)],
                      "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.ravel()), 64)})
    tbl = storage.kb_location().connect().create_table("synthetic", table)
    params, recall, trials = choose_vector_index(tbl, sample_queries=100)
    assert recall >= 0.95
    assert any(t["index"] != "flat" and t["recall"] < 1.0 for t in trials) or params["index"] != "flat"
    assert params["index"] in ("flat", "IVF_HNSW_SQ", "IVF_PQ")


