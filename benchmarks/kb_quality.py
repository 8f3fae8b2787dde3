"""Retrieval quality of dense, lexical and hybrid search on three benchmarks with known gold passages, run by
hand (the embeddings are cached under ``--cache``, so a second run only searches):

    HF_HUB_OFFLINE=1 PYTHONPATH=. python benchmarks/kb_quality.py --data ../shared/data --out /tmp/kbq

KB: PubMedQA abstracts, MedMCQA explanations, SLAKE KG sentences and ``--medquad-records`` MedQuAD records,
chunked to fit the embedder. Benchmarks (gold = every chunk of the record, matched by ``source`` +
``native_id``, which every hit carries):

- ``pubmedqa``  the 1,000 PubMedQA questions -> their abstract (questions are not in the KB: untitled
  passages)
- ``medmcqa``   MedMCQA dev questions whose explanation is in the KB -> that explanation
- ``medquad``   MedQuAD questions -> the answers of every record with that question (titles hold the question)

Hybrid fusion weights are chosen on the even-numbered questions of each benchmark and reported on the
odd-numbered ones (``--tune``); ``alpha`` is the dense weight of the convex fusion.
"""

import argparse
import json
import time
from pathlib import Path

import polars as pl

from assets.knowledge.sources import read_kb_source
from retrieval.chunking import TokenChunker
from retrieval.embedders import CachedEmbedding, EmbeddingCache, TextEmbedder
from retrieval.search import Retriever
from retrieval.store import KBLocation, Retention, passage_texts, sync_table, text_table_rows
from storage.sources import SourceDir

ALPHAS = (0.5, 0.6, 0.7, 0.8)


def build_kb(data: Path, out: str, cache: str, medquad_records: int, embedder: TextEmbedder):
    chunker = TokenChunker.for_embedder(embedder)
    frames = {
        "pubmedqa": read_kb_source("pubmedqa", SourceDir(str(data / "pubmedqa")), chunker)[0],
        "medmcqa_exp": read_kb_source("medmcqa_exp", SourceDir(str(data / "medmcqa")), chunker)[0],
        "slake_kg": read_kb_source("slake_kg", SourceDir(str(data / "slake")), chunker)[0],
        "medquad": read_kb_source(
            "medquad", SourceDir(str(data / "medquad")), chunker, limit=medquad_records
        )[0],
    }
    passages = pl.concat(list(frames.values()))
    cached = CachedEmbedding(embedder, EmbeddingCache(cache))
    texts = passage_texts(passages)
    for start in range(0, len(texts), 1000):  # fill the cache in steps, so an interrupted run loses little
        cached.embed(texts[start : start + 1000])
        print(f"embedded {min(start + 1000, len(texts))}/{len(texts)}", flush=True)
    t0 = time.perf_counter()
    report = sync_table(
        KBLocation(out),
        "kb_text",
        text_table_rows(passages),
        lambda rows: cached.embed(passage_texts(rows)),
        embedder.identity(),
        run_id="bench",
        retention=Retention(keep_tags=1),
    )
    return passages, report, time.perf_counter() - t0, cached.stats


def benchmarks(data: Path, passages: pl.DataFrame) -> dict[str, list[tuple[str, set[tuple[str, str]]]]]:
    """``{name: [(question, {(source, native_id) of gold passages})]}``."""
    pq = json.loads((data / "pubmedqa" / "ori_pqal.json").read_text())
    in_kb = set(zip(passages["source"], passages["native_id"], strict=True))
    out = {"pubmedqa": [(pq[p]["QUESTION"], {("pubmedqa", p)}) for p in pq if ("pubmedqa", p) in in_kb]}
    mcq = [
        json.loads(line) for line in (data / "medmcqa" / "dev.json").read_text().splitlines() if line.strip()
    ]
    out["medmcqa"] = [
        (r["question"], {("medmcqa_exp", str(r["id"]))})
        for r in mcq
        if ("medmcqa_exp", str(r["id"])) in in_kb
    ]
    mq = passages.filter(pl.col("source") == "medquad").group_by("title").agg(pl.col("native_id").unique())
    out["medquad"] = [(t, {("medquad", n) for n in ids}) for t, ids in mq.sort("title").iter_rows()]
    return out


def recall(hits, gold, ks=(1, 5)) -> dict[str, float]:
    ranks = []
    for hs, g in zip(hits, gold, strict=True):
        ids = [(h.source, h.native_id) for h in hs]
        ranks.append(next((i + 1 for i, x in enumerate(ids) if x in g), None))
    n = max(1, len(ranks))
    res = {f"recall@{k}": round(sum(1 for r in ranks if r and r <= k) / n, 4) for k in ks}
    res["mrr@10"] = round(sum(1 / r for r in ranks if r and r <= 10) / n, 4)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cache", default=None)
    ap.add_argument("--medquad-records", type=int, default=3000)
    args = ap.parse_args()
    data = Path(args.data)
    embedder = TextEmbedder()
    passages, report, build_s, stats = build_kb(
        data, args.out, args.cache or args.out + "_cache", args.medquad_records, embedder
    )
    print(
        json.dumps(
            {
                "kb_rows": report.rows,
                "table": report.table,
                "build_s": round(build_s, 1),
                "embedded": stats.embedded,
                "reused": stats.reused,
                "by_source": dict(passages.group_by("source").len().sort("source").iter_rows()),
            }
        ),
        flush=True,
    )
    suites = benchmarks(data, passages)
    results: dict[str, dict] = {}
    for name, items in suites.items():
        questions = [q for q, _ in items]
        gold = [g for _, g in items]
        halves = {"tune": slice(0, None, 2), "eval": slice(1, None, 2)}
        depth = 10
        base = Retriever(KBLocation(args.out), embedder, version="run-bench")
        runs = {}
        t0 = time.perf_counter()
        runs["dense"] = base.search(questions, k=depth, mode="dense")
        dense_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        runs["lexical"] = base.search(questions, k=depth, mode="lexical")
        lexical_s = time.perf_counter() - t0
        runs["hybrid rrf"] = Retriever(
            KBLocation(args.out), embedder, version="run-bench", fusion="rrf"
        ).search(questions, k=depth, mode="hybrid")
        for a in ALPHAS:
            runs[f"hybrid convex a={a}"] = Retriever(
                KBLocation(args.out), embedder, version="run-bench", alpha=a
            ).search(questions, k=depth, mode="hybrid")
        results[name] = {
            "questions": len(items),
            "dense_s": round(dense_s, 2),
            "lexical_s": round(lexical_s, 2),
        }
        for half, sl in halves.items():
            results[name][half] = {mode: recall(hits[sl], gold[sl]) for mode, hits in runs.items()}
        print(json.dumps({name: results[name]}), flush=True)
    # alpha chosen on the tuning halves: the best worst-case margin of hybrid over the best single mode
    margins = {}
    for a in ALPHAS:
        worst = []
        for res in results.values():
            tune = res["tune"]
            for key in ("recall@1", "recall@5"):
                worst.append(
                    tune[f"hybrid convex a={a}"][key] - max(tune["dense"][key], tune["lexical"][key])
                )
        margins[a] = round(min(worst), 4)
    chosen = max(margins, key=lambda a: (margins[a], -abs(a - 0.5)))
    print(json.dumps({"alpha_worst_margin_on_tune": margins, "chosen_alpha": chosen}), flush=True)
    print(
        json.dumps(
            {
                "eval_half": {
                    n: {
                        m: r["eval"][m]
                        for m in ("dense", "lexical", "hybrid rrf", f"hybrid convex a={chosen}")
                    }
                    for n, r in results.items()
                }
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
