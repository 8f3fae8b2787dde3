"""Does retrieval help a real reader? PubMedQA with its abstracts in the KB, on the small profile's model.

Reads what ``make small`` (``python -m orchestration.main --profile small``) published under the storage
root: the ``base_model`` pointer (SmolLM2-135M-Instruct grafted onto a random vision tower), the pinned
text KB (``kb_text_index``; its ``pubmedqa`` source holds the PubMedQA abstracts) and the ingested
``text_qa_items``. Then evaluates the PubMedQA items (yes / no / maybe, chance 1/3) with the production
:func:`training.evaluation.evaluate.evaluate`, greedy, the same budgets for every arm:

- ``question_only/direct``: the question alone, no retrieval;
- ``question_only/rag_control``: the question alone; the system retrieves with the question and inserts the
  top-k passages of the pinned KB before the model writes (training-free RAG);
- ``with_abstract/direct``: the benchmark's own setting, the abstract given as context (the ceiling RAG
  can reach if it always retrieves the right abstract).

Reports accuracy with a percentile bootstrap interval per arm, the paired difference rag − direct on the
question-only items with its interval, and how often RAG retrieved a chunk of the item's own abstract.
Unparsed answers count as wrong. Writes ``results.json`` into ``--out``.

Run: ``PYTHONPATH=. python benchmarks/small_rag_check.py --out benchmarks/results/small_rag_check``
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import polars as pl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--max-items", type=int, default=None, help="first N items by id (default: all)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--retrieval-k", type=int, default=3)
    args = ap.parse_args()

    from assets.common.resources import KnowledgeModelsResource
    from retrieval.pointers import KbPointer
    from retrieval.search import Retriever
    from storage.pointers import ModelPointer
    from storage.root import Storage
    from training.evaluation.evaluate import evaluate
    from training.evaluation.items import benchmark_items
    from training.evaluation.metrics import bootstrap_ci
    from training.rollout import RolloutSettings
    from training.tiny_model import load_policy

    store = Storage()
    base = ModelPointer.from_row(store.read_published_table("base_model"))
    if base.manifest.get("random_weights"):
        raise SystemExit(f"{store.root}: base_model has random weights; run `make small` first")
    kb = KbPointer.from_row(store.read_published_table("kb_text_index"))
    retriever = Retriever.from_pointer(
        kb, store.kb_location(kb.db), KnowledgeModelsResource().text_embedder()
    )
    frame = store.read_published_table("text_qa_items", "pubmedqa")
    items = benchmark_items(frame, "pubmedqa", splits=sorted(set(frame["split"].to_list())))
    items = items.sort("item_id")
    if args.max_items:
        items = items.head(args.max_items)
    model, processor = load_policy(base.path)
    settings = RolloutSettings(
        max_rounds=1,
        max_new_tokens_per_round=args.max_new_tokens,
        max_completion_tokens=args.max_new_tokens,
        retrieval_k=args.retrieval_k,
    )
    common = dict(
        model=model,
        processor=processor,
        retriever=retriever,
        checkpoint="base",
        checkpoint_version=base.weights_sha256 or "",
        benchmark="pubmedqa",
        benchmark_version="small_rag_check",
        kb_tag=kb.tag,
        batch_size=args.batch_size,
        rollout_settings=settings,
    )
    arms = {}
    t0 = time.perf_counter()
    no_context = items.with_columns(pl.lit(None, pl.Utf8).alias("context"))
    q_only = evaluate(no_context, modes=("direct", "rag_control"), **common)
    with_ctx = evaluate(items, modes=("direct",), **common)
    seconds = time.perf_counter() - t0

    def correct(df: pl.DataFrame, mode: str) -> pl.DataFrame:
        rows = df.filter(pl.col("mode") == mode).sort("item_id")
        return rows.with_columns(
            (pl.col("prediction").fill_null("") == pl.col("gold")).cast(pl.Float64).alias("ok")
        )

    for name, df, mode in (
        ("question_only/direct", q_only, "direct"),
        ("question_only/rag_control", q_only, "rag_control"),
        ("with_abstract/direct", with_ctx, "direct"),
    ):
        rows = correct(df, mode)
        ok = rows["ok"].to_numpy()
        low, high = bootstrap_ci(ok)
        arms[name] = {
            "n": len(ok),
            "accuracy": float(ok.mean()),
            "ci95": [low, high],
            "unparsed": int(rows["prediction"].is_null().sum()),
            "answers": dict(rows.group_by("prediction").len().iter_rows()),
        }
    direct = correct(q_only, "direct")
    rag = correct(q_only, "rag_control")
    diff = rag["ok"].to_numpy() - direct["ok"].to_numpy()
    own = [
        any(pid.startswith(f"pubmedqa:{item_id.split(':')[-1]}#") for pid in ids or [])
        for item_id, ids in zip(rag["item_id"].to_list(), rag["retrieved_ids"].to_list(), strict=True)
    ]
    result = {
        "model": base.model_ref,
        "model_manifest_kind": base.manifest.get("kind"),
        "kb_tag": kb.tag,
        "arms": arms,
        "rag_minus_direct_question_only": {"mean": float(np.mean(diff)), "ci95": list(bootstrap_ci(diff))},
        "rag_retrieved_own_abstract_rate": float(np.mean(own)) if own else None,
        "budgets": {"max_new_tokens": args.max_new_tokens, "retrieval_k": args.retrieval_k, "greedy": True},
        "seconds": round(seconds, 1),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
