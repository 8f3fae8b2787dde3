"""Vector search speed and recall at scale on realistic vectors, run by hand:

    HF_HUB_OFFLINE=1 PYTHONPATH=. python benchmarks/kb_speed.py --data ../shared/data \\
        --cache /tmp/kbspeed_vectors --rows 1000000 --out /tmp/kbspeed_1m \\
        --json benchmarks/figures/kb_speed_1m.json

Vectors: real all-MiniLM-L6-v2 passage vectors of the KB, plus interpolations between each real vector and
one of its 10 nearest real neighbours (``normalize((1 - t) a + t b)``, t uniform in [0, 1]) up to ``--rows``.
The real passages are those of the project's own KB readers and chunker (``read_kb_source``,
``TokenChunker.for_embedder``): all PubMedQA abstracts, then all MedMCQA explanations, then MedQuAD records in
file order, embedded by :class:`retrieval.embedders.TextEmbedder` in that order until ``--embed-budget-s``
runs out (the vectors are cached in ``--cache``, so a rerun embeds nothing and a longer budget continues).
``--kb`` instead reads the vectors of an existing ``kb_text`` table that ``kb_quality.py`` built.

Queries, two disjoint sets of real questions:

- the index chooser (``sync_table(..., index_policy=, recall_queries=)``, what production runs) tunes on the
  first ``--tune-queries`` MedMCQA dev questions: MedMCQA is a training and KB source of this pipeline, not an
  evaluated benchmark (``assets/evaluation/assets.py`` ``BENCHMARKS``), so no evaluation item steers the
  choice;
- recall@10 (against numpy exact search) and latency are reported on every PubMedQA and MedQA-USMLE question
  (the evaluation-like queries; measuring ANN recall on them trains nothing).

Baselines: numpy exact search (one matrix product and ``argpartition``, then a sort of the k best), FAISS
HNSW32 (``faiss-cpu``, bench extra) with an efSearch sweep, LanceDB flat. Reported: the configuration the
production chooser keeps, its batch-64 p50 divided by numpy's and by FAISS HNSW's at the smallest efSearch
whose recall is at least the chosen configuration's (and >= ``--min-recall``), a few more search settings on
the chosen index (no rebuild), optional extra index builds (``--extra``), and the time of a one-row re-sync
(no index re-trial: the table did not grow). Every step is appended to ``--json`` as it finishes.

For time at large sizes: ``--only-candidate`` runs the production chooser on one of ``index_candidates``;
``--faiss-only`` stops after numpy and FAISS; ``--settings`` measures given LanceDB search settings on the
indexes an earlier run left at ``--out`` (its table versions are kept), with no sync and no chooser.
"""

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import polars as pl

from retrieval.embedders import TextEmbedder
from retrieval.store import (
    IndexPolicy,
    KBLocation,
    apply_search_params,
    choose_vector_index,
    embedder_table,
    index_candidates,
    measure_recall,
    passage_texts,
    sync_table,
    table_vectors,
)

K = 10
FAISS_EFS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
SEARCH_KEYS = ("index", "num_partitions", "num_sub_vectors", "nprobes", "ef", "refine_factor")


def kb_vectors(kb: str, embedder: TextEmbedder) -> np.ndarray:
    tbl = KBLocation(kb).connect().open_table(embedder_table("kb_text", embedder.fingerprint()))
    data = (
        tbl.search()
        .where("source IN ('medquad', 'pubmedqa', 'medmcqa_exp')")
        .select(["vector"])
        .limit(None)
        .to_arrow()
    )
    return table_vectors(data)


def kb_passages(data: Path, embedder: TextEmbedder) -> pl.DataFrame:
    """PubMedQA abstracts, MedMCQA explanations, MedQuAD answers: the KB's own readers and chunker."""
    from assets.knowledge.sources import read_kb_source
    from retrieval.chunking import TokenChunker
    from storage.sources import SourceDir

    chunker = TokenChunker.for_embedder(embedder)
    return pl.concat(
        [
            read_kb_source(name, SourceDir(str(data / folder)), chunker)[0]
            for name, folder in (("pubmedqa", "pubmedqa"), ("medmcqa_exp", "medmcqa"), ("medquad", "medquad"))
        ]
    )


def passage_vectors(
    data: Path, cache: Path, embedder: TextEmbedder, budget_s: float
) -> tuple[np.ndarray, dict]:
    """Vectors of the first passages of :func:`kb_passages` embedded within ``budget_s`` (cached)."""
    passages = kb_passages(data, embedder)
    ids = passages["id"].to_list()
    cache.mkdir(parents=True, exist_ok=True)
    vec_path, ids_path = cache / "vectors.npy", cache / "ids.json"
    done = np.zeros((0, embedder.dim), dtype=np.float32)
    if vec_path.exists() and ids_path.exists():
        cached_ids = json.loads(ids_path.read_text())
        if cached_ids == ids[: len(cached_ids)]:
            done = np.load(vec_path)
    texts = passage_texts(passages)
    t0, start = time.perf_counter(), len(done)
    while len(done) < len(ids) and time.perf_counter() - t0 < budget_s:
        done = np.concatenate([done, embedder.embed(texts[len(done) : len(done) + 256])])
        np.save(cache / "vectors.tmp.npy", done)
        os.replace(cache / "vectors.tmp.npy", vec_path)
        ids_path.write_text(json.dumps(ids[: len(done)]))
        s = time.perf_counter() - t0
        print(f"embedded {len(done)}/{len(ids)}: {s:.0f} s, {(len(done) - start) / s:.1f}/s", flush=True)
    used = passages.head(len(done))
    info = {
        "passages_available": len(ids),
        "passages_embedded": len(done),
        "by_source": dict(used.group_by("source").len().sort("source").iter_rows()),
        "embedded_this_run": len(done) - start,
        "embed_s_this_run": round(time.perf_counter() - t0, 1),
    }
    return done, info


def interpolated(real: np.ndarray, rows: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    neighbours = np.empty((len(real), 10), dtype=np.int64)
    for start in range(0, len(real), 2048):
        sims = real[start : start + 2048] @ real.T
        sims[np.arange(len(sims)), np.arange(start, start + len(sims))] = -np.inf
        neighbours[start : start + len(sims)] = np.argpartition(-sims, 10, axis=1)[:, :10]
    n = max(0, rows - len(real))
    a = rng.integers(0, len(real), n)
    b = neighbours[a, rng.integers(0, 10, n)]
    t = rng.random(n, dtype=np.float32)
    out = np.empty((len(real) + n, real.shape[1]), dtype=np.float32)
    out[: len(real)] = real
    for start in range(0, n, 100_000):  # in steps: no full-size temporaries
        sl = slice(start, start + 100_000)
        v = (1 - t[sl, None]) * real[a[sl]] + t[sl, None] * real[b[sl]]
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        out[len(real) + start : len(real) + start + len(v)] = v
    return out[:rows]


def eval_questions(data: Path) -> list[str]:
    """Every PubMedQA and MedQA-USMLE question (reported on, never tuned on)."""
    pq = json.loads((data / "pubmedqa" / "ori_pqal.json").read_text())
    out = [r["QUESTION"] for r in pq.values()]
    for line in (data / "medqa_us" / "phrases_no_exclude_test.jsonl").read_text().splitlines():
        if line.strip():
            out.append(json.loads(line)["question"])
    return out


def tune_questions(data: Path, n: int) -> list[str]:
    """The first ``n`` MedMCQA dev questions (training side: what the index chooser tunes on)."""
    lines = (data / "medmcqa" / "dev.json").read_text().splitlines()
    return [json.loads(line)["question"] for line in lines if line.strip()][:n]


def query_vectors(cache: Path, name: str, embedder: TextEmbedder, texts: list[str]) -> np.ndarray:
    path = cache / f"queries_{name}_{len(texts)}.npy"
    if path.exists():
        return np.load(path)
    v = embedder.embed_queries(texts)
    np.save(path, v)
    return v


def numpy_topk(base: np.ndarray, q: np.ndarray) -> np.ndarray:
    out = np.empty((len(q), K), dtype=np.int64)
    for start in range(0, len(q), 128):  # at most a 128 x rows similarity matrix at once
        sims = q[start : start + 128] @ base.T
        top = np.argpartition(-sims, K, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
        out[start : start + len(sims)] = np.take_along_axis(top, order, axis=1)
    return out


def latency(fn, queries: np.ndarray, batch: int, reps: int, budget_s: float) -> tuple[float, float, int]:
    """p50 and p95 ms over up to ``reps`` calls (fewer when they exceed ``budget_s``, at least 3)."""
    out = []
    t_start = time.perf_counter()
    for r in range(reps):
        q = queries[(r * batch) % (len(queries) - batch) :][:batch]
        t0 = time.perf_counter()
        fn(q)
        out.append((time.perf_counter() - t0) * 1000)
        if r >= 2 and time.perf_counter() - t_start > budget_s:
            break
    return round(float(np.percentile(out, 50)), 2), round(float(np.percentile(out, 95)), 2), len(out)


def recall_at_k(got: np.ndarray, exact: np.ndarray) -> float:
    return round(float(np.mean([len(set(a) & set(b)) / K for a, b in zip(got, exact, strict=True)])), 4)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--kb", help="read the real vectors from this kb_quality.py KB instead of embedding")
    ap.add_argument(
        "--cache", help="folder for the cached passage and question vectors (default: --out_vectors)"
    )
    ap.add_argument("--embed-budget-s", type=float, default=1200)
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--out", required=True, help="folder of the LanceDB database the benchmark writes")
    ap.add_argument("--json", help="write the results here (rewritten after every step)")
    ap.add_argument("--min-recall", type=float, default=0.95)
    ap.add_argument("--min-rows", type=int, default=IndexPolicy.min_rows, help="IndexPolicy.min_rows")
    ap.add_argument("--tune-queries", type=int, default=IndexPolicy.max_queries)
    ap.add_argument("--eval-queries", type=int, help="only the first N eval questions (smoke runs)")
    ap.add_argument("--faiss-efs", default=",".join(map(str, FAISS_EFS)))
    ap.add_argument(
        "--no-grid", action="store_true", help="skip the extra search settings on the chooser's indexes"
    )
    ap.add_argument(
        "--grid-stride", type=int, default=2, help="extra settings: recall on every N-th eval query"
    )
    ap.add_argument(
        "--only-candidate",
        choices=("IVF_HNSW_SQ", "IVF_PQ"),
        help="run the production chooser (choose_vector_index) on this one of index_candidates only (time)",
    )
    ap.add_argument(
        "--faiss-only", action="store_true", help="stop after numpy and FAISS (more efSearch values)"
    )
    ap.add_argument(
        "--settings",
        help="JSON list of LanceDB search settings to measure on the indexes an earlier run left at --out "
        "(no sync, no chooser)",
    )
    ap.add_argument("--no-resync", action="store_true", help="skip the one-row re-sync timing")
    ap.add_argument(
        "--extra",
        action="append",
        default=[],
        help="extra LanceDB build, measured after the chooser: IVF_HNSW_SQ:<partitions> or "
        "IVF_PQ:<partitions>:<sub-vectors> (repeatable)",
    )
    args = ap.parse_args()
    data = Path(args.data)
    cache = Path(args.cache or args.out + "_vectors")
    cache.mkdir(parents=True, exist_ok=True)
    summary: dict = {"args": vars(args), "cpus": os.cpu_count(), "load_avg_start": os.getloadavg()}
    results: list[dict] = []
    summary["results"] = results

    def save() -> None:
        if args.json:
            Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")

    def note(**kw) -> None:
        summary.update(kw)
        print(json.dumps(kw), flush=True)
        save()

    embedder = TextEmbedder()
    if args.kb:
        real, info = kb_vectors(args.kb, embedder), {"from_kb": args.kb}
    else:
        real, info = passage_vectors(data, cache, embedder, args.embed_budget_s)
    t0 = time.perf_counter()
    base = interpolated(real, args.rows)
    n_tune = max(args.tune_queries, IndexPolicy.max_queries)  # one cache file for every run
    tune = query_vectors(cache, "medmcqa", embedder, tune_questions(data, n_tune))[: args.tune_queries]
    evaluate = query_vectors(cache, "pubmedqa_medqa", embedder, eval_questions(data)[: args.eval_queries])
    exact = numpy_topk(base, evaluate)
    note(
        vectors={
            **info,
            "real_vectors": len(real),
            "rows": len(base),
            "interpolated": len(base) - min(len(real), len(base)),
            "prepare_s": round(time.perf_counter() - t0, 1),
        },
        queries={"tune_medmcqa": len(tune), "eval_pubmedqa_medqa": len(evaluate)},
    )

    def report(name: str, fn, recall_on: int | None = None, recall_stride: int = 1, **extra) -> dict:
        """Latency at batch 1 and 64; recall@10 on the first ``recall_on`` eval queries (all if None), every
        ``recall_stride``-th."""
        row = {"method": name, **extra}
        for batch, reps, budget in ((1, 50, 20.0), (64, 8, 40.0)):
            p50, p95, n = latency(fn, evaluate, batch, reps, budget)
            row[f"b{batch}_p50_ms"], row[f"b{batch}_p95_ms"], row[f"b{batch}_reps"] = p50, p95, n
        q = evaluate[:recall_on:recall_stride]
        if len(q):
            got = np.concatenate([fn(q[s : s + 64]) for s in range(0, len(q), 64)])
            row["recall@10"] = recall_at_k(got, exact[:recall_on:recall_stride])
        else:
            row["recall@10"] = 1.0  # the reference itself
        row["recall_queries"] = len(q)
        row["load_avg_1m"] = round(os.getloadavg()[0], 2)
        results.append(row)
        print(json.dumps(row), flush=True)
        save()
        return row

    numpy_row = report("numpy exact (argpartition)", lambda q: numpy_topk(base, q), recall_on=0)
    faiss_rows: list[dict] = []
    try:
        import faiss

        hnsw = faiss.IndexHNSWFlat(base.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        t0 = time.perf_counter()
        hnsw.add(base)
        build = round(time.perf_counter() - t0, 1)
        note(faiss_hnsw={"M": 32, "efConstruction": hnsw.hnsw.efConstruction, "build_s": build})
        for ef in (int(e) for e in args.faiss_efs.split(",")):
            hnsw.hnsw.efSearch = ef

            def search(q, ef=ef):
                hnsw.hnsw.efSearch = ef
                return hnsw.search(q, K)[1]

            faiss_rows.append(report(f"faiss HNSW32 ef{ef}", search, ef=ef, build_s=build))
    except ImportError:
        note(faiss="not installed (pip install faiss-cpu)")
    if args.faiss_only:
        return

    if args.settings:  # search settings on the indexes an earlier run at --out built (versions are kept)
        conn = KBLocation(args.out).connect()
        tbl = conn.open_table(next(n for n in conn.table_names() if n.startswith("speed")))
        params = {"index": "flat"}
    else:
        ids = [f"v:{i}#0" for i in range(len(base))]
        frame = pl.DataFrame(
            {"id": ids, "source": ["bench"] * len(ids), "content_hash": [str(i) for i in range(len(ids))]}
        )
        identity = {**embedder.identity(), "note": "kb_speed vectors"}
        loc = KBLocation(args.out)
        policy = IndexPolicy(
            min_rows=args.min_rows, min_recall=args.min_recall, max_queries=args.tune_queries
        )

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
            # --only-candidate: sync without a trial, then the production chooser on that one candidate
            index_policy=IndexPolicy(min_rows=len(base) + 1) if args.only_candidate else policy,
            recall_queries=tune,
        )
        tbl = loc.connect().open_table(first.table)
        if args.only_candidate:
            sync_s = round(time.perf_counter() - t0, 1)
            t0 = time.perf_counter()
            candidates = [
                c for c in index_candidates(len(base), base.shape[1]) if c[0]["index"] == args.only_candidate
            ]
            chosen, recall, trials = choose_vector_index(tbl, tune, args.min_recall, K, candidates=candidates)
            index_report = {**chosen, "trial_recall": round(recall, 4), "only_candidate": args.only_candidate}
            timing = {"sync_s": sync_s, "choose_s": round(time.perf_counter() - t0, 1)}
        else:
            trials = first.index.get("trials")
            index_report = {k: v for k, v in first.index.items() if k != "trials"}
            timing = {"first_sync_s": round(time.perf_counter() - t0, 1)}
        note(chooser={**timing, "chosen": index_report, "trials": trials, "load_avg": os.getloadavg()})
        params = {k: v for k, v in index_report.items() if k in SEARCH_KEYS}

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

    if not args.settings:
        report("lancedb flat", lance({"index": "flat"}), recall_on=64)
    ratios: list[dict] = []
    summary["ratios"] = ratios

    def compare(row: dict) -> dict:
        """Batch-64 p50 of ``row`` / numpy's, and / FAISS HNSW's at the smallest ef reaching its recall."""
        target = max(row["recall@10"], args.min_recall)
        match = next((f for f in faiss_rows if f["recall@10"] >= target), None)
        out = {
            "method": row["method"],
            "recall@10": row["recall@10"],
            "recall_queries": row["recall_queries"],
            "b64_p50_ms": row["b64_p50_ms"],
            "vs_numpy_exact_b64": round(row["b64_p50_ms"] / numpy_row["b64_p50_ms"], 3),
            "faiss_match": None
            if match is None
            else {k: match[k] for k in ("ef", "recall@10", "b64_p50_ms")},
            "vs_faiss_hnsw_b64": None if match is None else round(row["b64_p50_ms"] / match["b64_p50_ms"], 2),
        }
        out["goal_met"] = bool(
            row["recall@10"] >= args.min_recall
            and out["vs_numpy_exact_b64"] <= 0.1
            and out["vs_faiss_hnsw_b64"] is not None
            and out["vs_faiss_hnsw_b64"] <= 2
        )
        ratios.append(out)
        print(json.dumps({"ratio": out}), flush=True)
        save()
        return out

    if args.settings:
        kinds = {"IVF_HNSW_SQ": "IvfHnswSq", "IVF_PQ": "IvfPq"}
        versions = {}
        for v in tbl.list_versions():
            tbl.checkout(v["version"])
            versions.update({str(ix.index_type): v["version"] for ix in tbl.list_indices()})
        for p in json.loads(args.settings):
            tbl.checkout(versions[kinds[p["index"]]])
            compare(report(f"lancedb {p}", lance(p), recall_stride=args.grid_stride, settings=p))
        summary["load_avg_end"] = os.getloadavg()
        save()
        return

    if params.get("index", "flat") != "flat":
        compare(report(f"lancedb chosen {params}", lance(params), settings=params, chosen=True))
        noisy = base[np.random.default_rng(1).choice(len(base), 200, replace=False)]
        noisy = noisy + np.random.default_rng(2).normal(0, 0.02, noisy.shape).astype(np.float32)
        noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
        note(chosen_recall_estimated_on_noisy_row_copies=round(measure_recall(tbl, noisy, params)[0], 4))

    if not args.no_grid:
        # more search settings on each index the chooser built (its table versions are kept: no rebuild)
        versions: dict[str, int] = {}
        for v in tbl.list_versions():
            tbl.checkout(v["version"])
            for ix in tbl.list_indices():
                versions[str(ix.index_type)] = v["version"]
        tbl.checkout_latest()
        for config, _ in index_candidates(len(base), base.shape[1]):
            version = versions.get({"IVF_HNSW_SQ": "IvfHnswSq", "IVF_PQ": "IvfPq"}[config["index"]])
            if version is None:
                continue
            parts = config["num_partitions"]
            if config["index"] == "IVF_HNSW_SQ":
                grid = [
                    {"nprobes": math.ceil(parts * 3 / 4), "ef": 128},
                    {"nprobes": parts, "ef": 128},
                    {"nprobes": parts, "ef": 256},
                    {"nprobes": math.ceil(parts * 3 / 4), "ef": 128, "refine_factor": 5},
                    {"nprobes": parts, "ef": 256, "refine_factor": 5},
                ]
            else:
                grid = [
                    {"nprobes": math.ceil(parts * 0.1), "refine_factor": 20},
                    {"nprobes": math.ceil(parts * 0.1), "refine_factor": 50},
                    {"nprobes": math.ceil(parts * 0.2), "refine_factor": 50},
                    {"nprobes": math.ceil(parts * 0.2), "refine_factor": 100},
                ]
            tbl.checkout(version)
            for search in grid:
                p = {**config, **search}
                row = report(
                    f"lancedb {p}", lance(p), recall_stride=args.grid_stride, settings=p, version=version
                )
                compare(row)
        tbl.checkout_latest()

    if not args.no_resync:
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
        note(
            resync={
                "one_row_sync_s": round(time.perf_counter() - t0, 1),
                "trialled": second.index.get("trialled"),
                "reason": second.index.get("reason"),
                "recall@10_tune": second.recall_at_10,
                "maintenance": second.maintenance,
                "pruned": second.pruned,
            }
        )

    from retrieval.kb.index_choice import _build

    for spec in args.extra:
        kind, *nums = spec.split(":")
        config = {"index": kind, "num_partitions": int(nums[0])}
        parts = config["num_partitions"]
        if kind == "IVF_PQ":
            config["num_sub_vectors"] = int(nums[1]) if len(nums) > 1 else 48
            grid = [
                {"nprobes": math.ceil(parts * f), "refine_factor": rf}
                for f in (0.02, 0.05, 0.1)
                for rf in (20, 50)
            ]
        else:
            grid = [
                {"nprobes": math.ceil(parts * f), "ef": ef} for f in (1 / 8, 1 / 4, 1 / 2) for ef in (64, 128)
            ]
        tbl.checkout_latest()
        t0 = time.perf_counter()
        _build(tbl, config)
        build = round(time.perf_counter() - t0, 1)
        note(**{f"extra_build {config}": {"build_s": build}})
        for search in [dict(t) for t in dict.fromkeys(tuple(g.items()) for g in grid)]:
            p = {**config, **search}
            row = report(
                f"lancedb extra {p}", lance(p), recall_stride=args.grid_stride, settings=p, build_s=build
            )
            compare(row)
    summary["load_avg_end"] = os.getloadavg()
    save()
    print(json.dumps(results, indent=0))


if __name__ == "__main__":
    main()
