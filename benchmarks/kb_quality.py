"""PubMedQA retrieval quality (dense / lexical / hybrid) and embedding throughput, run by hand.

    HF_HUB_OFFLINE=1 python benchmarks/kb_quality.py --data /work/shared/data --out /tmp/kbbench

The KB holds the 1,000 PubMedQA abstracts plus SLAKE KG sentences, MedMCQA explanations and MedQuAD
answers (``--medquad-records``); each question should retrieve its own abstract (``pubmedqa:<pmid>#0``).
"""

import argparse
import json
import time
from pathlib import Path

import polars as pl

from assets.knowledge.sources import read_kb_source
from orchestration.sources import SourceDir
from orchestration.storage import Storage
from retrieval.embedders import CachedEmbedding, TextEmbedder, passage_input
from retrieval.search import Retriever
from retrieval.store import sync_table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--medquad-records", type=int, default=500)
    args = ap.parse_args()
    data = Path(args.data)
    frames = [read_kb_source("pubmedqa", SourceDir(str(data / "pubmedqa")))[0],
              read_kb_source("slake_kg", SourceDir(str(data / "slake")))[0],
              read_kb_source("medmcqa_exp", SourceDir(str(data / "medmcqa")), limit=2000)[0],
              read_kb_source("medquad", SourceDir(str(data / "medquad")), limit=args.medquad_records)[0]]
    frame = pl.concat(frames).select("id", "source", "title", "text", "content_hash")
    storage = Storage(root=args.out)
    storage.delete()
    embedder = TextEmbedder()
    texts = [passage_input(t, x) for t, x in zip(frame["title"], frame["text"], strict=True)]

    # (c) throughput: direct sentence-transformers vs the pipeline (cache + sync) on the same texts
    sample = texts[:512]
    embedder.embed(texts[:32])  # warm-up: the first call pays thread-pool and allocator start-up
    t0 = time.perf_counter()
    embedder.model.encode(sample, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
    direct = len(sample) / (time.perf_counter() - t0)
    cached = CachedEmbedding(embedder)
    t0 = time.perf_counter()
    sync_table(Storage(root=args.out + "_tp").kb_location(), "kb_text", frame.head(512),
               lambda rows: cached.embed([passage_input(t, x) for t, x in zip(rows["title"], rows["text"], strict=True)]))
    pipeline = 512 / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    report = sync_table(storage.kb_location(), "kb_text", frame, lambda rows: embedder.embed(
        [passage_input(t, x) for t, x in zip(rows["title"], rows["text"], strict=True)]), run_id="bench")
    build_s = time.perf_counter() - t0

    pq = json.loads((data / "pubmedqa" / "ori_pqal.json").read_text())
    pmids = list(pq)
    questions = [pq[p]["QUESTION"] for p in pmids]
    retriever = Retriever(storage.kb_location(), embedder, version="run-bench")
    results = {}
    for mode in ("dense", "lexical", "hybrid"):
        t0 = time.perf_counter()
        hits = retriever.search(questions, k=10, mode=mode)
        secs = time.perf_counter() - t0
        ranks = []
        for p, hs in zip(pmids, hits, strict=True):
            ids = [h.id for h in hs]
            ranks.append(ids.index(f"pubmedqa:{p}#0") + 1 if f"pubmedqa:{p}#0" in ids else None)
        n = len(ranks)
        results[mode] = {f"recall@{k}": sum(1 for r in ranks if r and r <= k) / n for k in (1, 3, 10)}
        results[mode]["mrr@10"] = sum(1 / r for r in ranks if r) / n
        results[mode]["seconds_for_1000"] = secs
    print(json.dumps({"kb_rows": report.rows, "by_source": dict(frame.group_by("source").len().iter_rows()),
                      "build_s": build_s, "direct_passages_per_s": direct, "pipeline_passages_per_s": pipeline,
                      "ratio": pipeline / direct, "modes": results}, indent=1))


if __name__ == "__main__":
    main()
