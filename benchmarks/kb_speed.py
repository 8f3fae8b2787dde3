"""Vector search speed and recall on realistic vectors, run by hand after ``kb_quality.py`` built its KB:

    HF_HUB_OFFLINE=1 PYTHONPATH=. python benchmarks/kb_speed.py --kb /tmp/kbq --data ../shared/data \\
        --rows 300000 --out /tmp/kbspeed

Vectors: the real MiniLM passage vectors of the MedQuAD, PubMedQA and MedMCQA-explanation chunks in the
``kb_text`` table at ``--kb``, plus interpolations between each real vector and one of its 10 nearest real
neighbours (``normalize((1 - t) a + t b)``, t uniform in [0, 1]) up to ``--rows``. Queries: the real PubMedQA
and MedQA-USMLE questions embedded by the same model, split in two: the even-numbered ones are what the
index chooser measures recall on (the "held-out questions supplied by the caller"), the odd-numbered ones
are used here to report recall@10 and latency. Baselines: numpy exact search (one matrix product and
``argpartition``, then a sort of the k best), FAISS flat and HNSW (``faiss-cpu``, bench extra), LanceDB flat.

Also reported: what the old chooser's estimate (recall on noisy copies of table rows) says about the chosen
index, and the time of a one-row sync at full size (no index re-trial: the table did not grow).
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import polars as pl

from retrieval.embedders import TextEmbedder
from retrieval.store import (
    IndexPolicy,
    KBLocation,
    apply_search_params,
    embedder_table,
    measure_recall,
    sync_table,
    table_vectors,
)

K = 10


def real_vectors(kb: str, embedder: TextEmbedder) -> np.ndarray:
    tbl = KBLocation(kb).connect().open_table(embedder_table("kb_text", embedder.fingerprint()))
    data = (
        tbl.search()
        .where("source IN ('medquad', 'pubmedqa', 'medmcqa_exp')")
        .select(["vector"])
        .limit(None)
        .to_arrow()
    )
    return table_vectors(data)


def interpolated(real: np.ndarray, rows: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    neighbours = np.empty((len(real), 10), dtype=np.int64)
    for start in range(0, len(real), 2048):
        sims = real[start : start + 2048] @ real.T
        sims[np.arange(len(sims)), np.arange(start, start + len(sims))] = -np.inf
        neighbours[start : start + len(sims)] = np.argpartition(-sims, 10, axis=1)[:, :10]
    n = rows - len(real)
    a = rng.integers(0, len(real), n)
    b = neighbours[a, rng.integers(0, 10, n)]
    t = rng.random(n, dtype=np.float32)[:, None]
    v = (1 - t) * real[a] + t * real[b]
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return np.concatenate([real, v.astype(np.float32)])


def questions(data: Path) -> list[str]:
    pq = json.loads((data / "pubmedqa" / "ori_pqal.json").read_text())
    out = [r["QUESTION"] for r in pq.values()]
    for line in (data / "medqa_us" / "phrases_no_exclude_test.jsonl").read_text().splitlines():
        if line.strip():
            out.append(json.loads(line)["question"])
    return out


def numpy_topk(base: np.ndarray, q: np.ndarray) -> np.ndarray:
    sims = q @ base.T
    top = np.argpartition(-sims, K, axis=1)[:, :K]
    order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def latency(fn, queries: np.ndarray, batch: int, reps: int) -> tuple[float, float]:
    out = []
    for r in range(reps):
        q = queries[(r * batch) % (len(queries) - batch) :][:batch]
        t0 = time.perf_counter()
        fn(q)
        out.append((time.perf_counter() - t0) * 1000)
    return round(float(np.percentile(out, 50)), 2), round(float(np.percentile(out, 95)), 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kb", required=True, help="folder of the LanceDB database kb_quality.py built")
    ap.add_argument("--data", required=True)
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--out", required=True)
    ap.add_argument("--min-recall", type=float, default=0.95)
    args = ap.parse_args()
    embedder = TextEmbedder()
    real = real_vectors(args.kb, embedder)
    base = interpolated(real, args.rows)
    qs = embedder.embed_queries(questions(Path(args.data)))
    tune, evaluate = qs[0::2], qs[1::2]
    exact = numpy_topk(base, evaluate)
    print(
        json.dumps(
            {
                "real_vectors": len(real),
                "rows": len(base),
                "queries_tune": len(tune),
                "queries_eval": len(evaluate),
            }
        ),
        flush=True,
    )
    results = []

    def report(name: str, fn, ids_fn=None) -> None:
        row = {"method": name}
        for batch, reps in ((1, 50), (64, 8)):
            row[f"b{batch}_p50_ms"], row[f"b{batch}_p95_ms"] = latency(fn, evaluate, batch, reps)
        if ids_fn is not None:
            got = ids_fn(evaluate)
            row["recall@10"] = round(
                float(np.mean([len(set(a) & set(b)) / K for a, b in zip(got, exact, strict=True)])), 4
            )
        results.append(row)
        print(json.dumps(row), flush=True)

    report("numpy exact (argpartition)", lambda q: numpy_topk(base, q), lambda q: numpy_topk(base, q))
    try:
        import faiss

        flat = faiss.IndexFlatIP(base.shape[1])
        flat.add(base)
        report("faiss flat", lambda q: flat.search(q, K), lambda q: flat.search(q, K)[1])
        hnsw = faiss.IndexHNSWFlat(base.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        t0 = time.perf_counter()
        hnsw.add(base)
        print(json.dumps({"faiss_hnsw_build_s": round(time.perf_counter() - t0, 1)}), flush=True)
        for ef in (64, 128):
            hnsw.hnsw.efSearch = ef
            report(f"faiss HNSW32 ef{ef}", lambda q: hnsw.search(q, K), lambda q: hnsw.search(q, K)[1])
    except ImportError:
        print(json.dumps({"faiss": "not installed (pip install faiss-cpu)"}), flush=True)

    ids = [f"v:{i}#0" for i in range(len(base))]
    frame = pl.DataFrame(
        {"id": ids, "source": ["bench"] * len(ids), "content_hash": [str(i) for i in range(len(ids))]}
    )
    identity = {**embedder.identity(), "note": "kb_speed vectors"}
    loc = KBLocation(args.out)
    policy = IndexPolicy(min_rows=50_000, min_recall=args.min_recall)

    def embed(rows: pl.DataFrame) -> np.ndarray:
        return base[[int(i[2:-2]) for i in rows["id"]]]

    t0 = time.perf_counter()
    first = sync_table(
        loc,
        "speed",
        frame,
        embed,
        identity,
        run_id="1",
        fts_column=None,
        index_policy=policy,
        recall_queries=tune,
    )
    print(
        json.dumps(
            {
                "first_sync_s": round(time.perf_counter() - t0, 1),
                "chosen": {k: v for k, v in first.index.items() if k != "trials"},
                "trials": first.index.get("trials"),
            }
        ),
        flush=True,
    )
    tbl = loc.connect().open_table(first.table)
    params = {
        k: v
        for k, v in first.index.items()
        if k in ("index", "num_partitions", "num_sub_vectors", "nprobes", "ef", "refine_factor")
    }

    def lance(p):
        def fn(q):
            res = apply_search_params(tbl.search(q), p).limit(K).select(["id", "_distance"]).to_arrow()
            qi = (
                res["query_index"].to_numpy()
                if "query_index" in res.column_names
                else np.zeros(len(res), int)
            )
            rid = np.array([int(i[2:-2]) for i in res["id"].to_pylist()])
            out = np.full((len(q), K), -1)
            for i in range(len(q)):
                got = rid[qi == i][:K]
                out[i, : len(got)] = got
            return out

        return fn

    report("lancedb flat", lance({"index": "flat"}), lance({"index": "flat"}))
    if params.get("index", "flat") != "flat":
        report(f"lancedb chosen {params}", lance(params), lance(params))
        noisy = base[np.random.default_rng(1).choice(len(base), 200, replace=False)]
        noisy = noisy + np.random.default_rng(2).normal(0, 0.02, noisy.shape).astype(np.float32)
        noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
        print(
            json.dumps(
                {
                    "chosen_recall_estimated_on_noisy_row_copies": round(
                        measure_recall(tbl, noisy, params)[0], 4
                    ),
                    "chosen_recall_on_real_questions": results[-1]["recall@10"],
                }
            ),
            flush=True,
        )
    changed = frame.with_columns(
        pl.when(pl.col("id") == "v:0#0")
        .then(pl.lit("changed"))
        .otherwise(pl.col("content_hash"))
        .alias("content_hash")
    )
    t0 = time.perf_counter()
    second = sync_table(
        loc,
        "speed",
        changed,
        embed,
        identity,
        run_id="2",
        fts_column=None,
        index_policy=policy,
        recall_queries=tune,
    )
    print(
        json.dumps(
            {
                "one_row_sync_s": round(time.perf_counter() - t0, 1),
                "trialled": second.index.get("trialled"),
                "reason": second.index.get("reason"),
                "recall@10_tune": second.recall_at_10,
                "maintenance": second.maintenance,
                "pruned": second.pruned,
            }
        ),
        flush=True,
    )
    print(json.dumps(results, indent=0))


if __name__ == "__main__":
    main()
