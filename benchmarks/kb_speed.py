"""Vector search speed on a synthetic N x 384 table on disk: LanceDB (flat, IVF_HNSW_SQ, IVF_PQ+refine)
vs numpy exact and faiss-cpu (flat, HNSW). Run by hand:

    python benchmarks/kb_speed.py --rows 200000 --out /tmp/kbspeed
"""

import argparse
import json
import time

import faiss
import numpy as np
import pyarrow as pa

from orchestration.storage import Storage
from retrieval.store import _build, apply_search_params


def clustered(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(1000, d)).astype(np.float32)
    v = centers[rng.integers(0, 1000, n)] + rng.normal(scale=0.6, size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def timed(fn, queries: np.ndarray, batch: int, reps: int) -> tuple[float, float, list]:
    lat, out = [], None
    for r in range(reps):
        q = queries[(r * batch) % len(queries):][:batch]
        t0 = time.perf_counter()
        out = fn(q)
        lat.append((time.perf_counter() - t0) * 1000)
    return float(np.percentile(lat, 50)), float(np.percentile(lat, 95)), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    d, k = 384, 10
    base = clustered(args.rows, d, 0)
    queries = clustered(640, d, 1)
    exact = np.argsort(-(queries @ base.T), axis=1)[:, :k]

    def recall(ids: np.ndarray) -> float:
        return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ids, exact, strict=True)]))

    rows = []

    def bench(name: str, fn) -> None:
        for batch, reps in ((1, 50), (64, 5)):
            p50, p95, _ = timed(fn, queries, batch, reps)
            rows.append({"method": name, "batch": batch, "p50_ms": round(p50, 2), "p95_ms": round(p95, 2)})
        rows[-1]["recall@10"] = rows[-2]["recall@10"] = round(recall(fn(queries[:640])), 4)
        print(json.dumps(rows[-2:]), flush=True)

    bench("numpy exact", lambda q: np.argsort(-(q @ base.T), axis=1)[:, :k])
    flat = faiss.IndexFlatIP(d)
    flat.add(base)
    bench("faiss flat", lambda q: flat.search(q, k)[1])
    hnsw = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
    t0 = time.perf_counter()
    hnsw.add(base)
    print("faiss hnsw build s", time.perf_counter() - t0, flush=True)
    hnsw.hnsw.efSearch = 128
    bench("faiss HNSW32 ef128", lambda q: hnsw.search(q, k)[1])

    storage = Storage(root=args.out)
    storage.delete()
    tbl = storage.kb_location().connect().create_table("synthetic", pa.table({
        "rid": pa.array(np.arange(args.rows)), "id": pa.array([str(i) for i in range(args.rows)]),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(base.ravel()), d)}))

    def lance(params):
        def fn(q):
            res = apply_search_params(tbl.search(q), params).limit(k).select(["rid", "_distance"]).to_arrow()
            out = np.full((len(q), k), -1)
            qi = res["query_index"].to_numpy() if "query_index" in res.column_names else np.zeros(len(res), int)
            rid = res["rid"].to_numpy()
            for i in range(len(q)):
                got = rid[qi == i][:k]
                out[i, : len(got)] = got
            return out
        return fn

    bench("lancedb flat", lance({"index": "flat"}))
    parts = int(args.rows**0.5)
    for config, grid in [({"index": "IVF_HNSW_SQ", "num_partitions": max(1, args.rows // 100_000 + 1)},
                          [{"ef": 64, "nprobes": 2}, {"ef": 128, "nprobes": 3}]),
                         ({"index": "IVF_PQ", "num_partitions": parts, "num_sub_vectors": d // 4},
                          [{"nprobes": parts // 20, "refine_factor": 10}, {"nprobes": parts // 10, "refine_factor": 10}])]:
        t0 = time.perf_counter()
        _build(tbl, config)
        print(config, "build s", round(time.perf_counter() - t0, 1), flush=True)
        for search in grid:
            bench(f"lancedb {config['index']} {search}", lance({**config, **search}))
    print(json.dumps(rows, indent=0))


if __name__ == "__main__":
    main()
