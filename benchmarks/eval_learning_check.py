"""The learning-check model evaluated in all five modes, with paired-bootstrap comparisons.

    PYTHONPATH=. HF_HUB_OFFLINE=1 python benchmarks/eval_learning_check.py \\
        --run-dir benchmarks/results/learning_check [--out benchmarks/results/learning_check/eval] [--check]

Reads what ``benchmarks/learning_check.py`` leaves in ``--run-dir``: the GRPO-trained model
(``model_retrieval/final``, HF layout), the synthetic KB (LanceDB ``kb/``, table ``kb_text`` tagged
``results.json["kb_tag"]``), the held-out items (``heldout.parquet``: entities never in a GRPO prompt) and the
run's settings (``results.json["args"]``: rounds, search mode, k, tokens per round and per trajectory). Each
can be overridden (``--checkpoint``, ``--kb-uri``, ``--kb-tag``, ``--heldout``).

Runs :func:`training.evaluation.evaluate.evaluate` on the held-out items in the five modes (direct, rwr,
rwr_cdir, rag_control, random_retriever; the items are text-only, so CDIR never triggers and rwr_cdir equals
rwr), with the learning check's compact system prompt and rollout budget (from its ``results.json``; 20 new
tokens per round, 64 per trajectory and k = 3 for runs that did not record them), greedy decoding
(``--sample`` for temperature-1 sampling, seeded). The random retriever draws from the same KB version
(``training.evaluation.evaluate.KBRandomRetriever``).

Prints and writes into ``--out``: ``eval_results.parquet`` (the rows), ``accuracy.csv`` (per mode: strict
accuracy, an unparsed answer counting as wrong, with a 95 % percentile-bootstrap interval, and beside it the
forced-answer rate and the forced-choice accuracy) and ``comparisons.csv`` / ``comparisons.json`` (paired
bootstrap, 10,000 resamples, of rwr − direct, rwr − random_retriever, rwr − rag_control, rwr_cdir − rwr on the
same items; ``training.evaluation.metrics.compare``). ``--check`` exits with status 1 unless rwr beats both
direct and the random-retriever control with intervals that exclude 0.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import polars as pl

from benchmarks.learning_check import SYSTEM
from retrieval.embedders import TextEmbedder
from retrieval.search import Retriever
from retrieval.store import KBLocation
from storage.provenance import folder_digest
from training.evaluation.evaluate import evaluate
from training.evaluation.items import EVAL_ITEM_SCHEMA
from training.evaluation.metrics import Arm, compare, mcq_accuracy
from training.evaluation.results import MODES
from training.rollout import RolloutSettings
from training.tiny_model import load_policy

CLAIMS = (("rwr", "direct"), ("rwr", "random_retriever"))
COMPARISONS = (*CLAIMS, ("rwr", "rag_control"), ("rwr_cdir", "rwr"))


def heldout_items(path: Path) -> pl.DataFrame:
    """The learning check's held-out rows as evaluation items (4-option MCQs, text-only).

    The question is the learning check's ``Which drug treats <entity> ?`` (``heldout.parquet`` stores the
    entity, not the prompt), unless the file has a ``question`` column."""
    raw = pl.read_parquet(path)
    missing = {"item_id", "options", "answer_label"} - set(raw.columns)
    if missing or ("question" not in raw.columns and "entity" not in raw.columns):
        raise SystemExit(
            f"{path}: missing columns {sorted(missing) or ['question or entity']}; expected the "
            "heldout.parquet written by benchmarks/learning_check.py"
        )
    if raw.is_empty():
        raise SystemExit(f"{path}: no held-out items")
    question = (
        pl.col("question") if "question" in raw.columns else pl.format("Which drug treats {} ?", "entity")
    )
    return raw.select(
        pl.col("item_id"),
        question.alias("question"),
        pl.lit(None, pl.Utf8).alias("context"),
        pl.col("options"),
        pl.col("answer_label").str.to_uppercase().alias("gold"),
        pl.lit("mcq").alias("protocol"),
        pl.lit("closed").alias("answer_type"),
        pl.lit("synthetic_drug").alias("question_type"),
        pl.lit(None, pl.Utf8).alias("modality"),
        pl.lit(None, pl.Utf8).alias("organ"),
        pl.lit([], pl.List(pl.Utf8)).alias("image_refs"),
        pl.col("options").list.len().cast(pl.Int32).alias("n_options"),
    ).cast(EVAL_ITEM_SCHEMA)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", default="benchmarks/results/learning_check")
    p.add_argument("--checkpoint", help="model folder (default <run-dir>/model_retrieval/final)")
    p.add_argument("--label", default="learning_check", help="checkpoint label in the results")
    p.add_argument("--kb-uri", help="LanceDB folder of the synthetic KB (default <run-dir>/kb)")
    p.add_argument("--kb-tag", help="KB tag (default results.json kb_tag, else run-learning-check)")
    p.add_argument("--heldout", help="held-out items (default <run-dir>/heldout.parquet)")
    p.add_argument("--out", help="output folder (default <run-dir>/eval)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-rounds", type=int, help="default: the learning check's --max-rounds (2)")
    p.add_argument(
        "--search-mode", choices=("dense", "lexical", "hybrid"), help="default: the learning check's"
    )
    p.add_argument("--sample", action="store_true", help="temperature-1 sampling instead of greedy decoding")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resamples", type=int, default=10_000)
    p.add_argument(
        "--check", action="store_true", help="exit 1 unless rwr beats direct and the random retriever"
    )
    args = p.parse_args(argv)

    run = Path(args.run_dir)
    settings = json.loads((run / "results.json").read_text()) if (run / "results.json").exists() else {}
    run_args = settings.get("args", {})
    checkpoint = Path(args.checkpoint or run / "model_retrieval" / "final")
    if not (checkpoint / "config.json").exists():
        raise SystemExit(
            f"{checkpoint}: no model folder (config.json); run benchmarks/learning_check.py first or "
            "pass --checkpoint"
        )
    kb_uri = args.kb_uri or str(run / "kb")
    kb_tag = args.kb_tag or settings.get("kb_tag", "run-learning-check")
    heldout = Path(args.heldout or run / "heldout.parquet")
    items = heldout_items(heldout)
    out = Path(args.out or run / "eval")
    out.mkdir(parents=True, exist_ok=True)

    model, processor = load_policy(str(checkpoint))
    retriever = Retriever(KBLocation(kb_uri), TextEmbedder(), version=kb_tag)
    t0 = time.perf_counter()
    results = evaluate(
        items,
        model=model,
        processor=processor,
        retriever=retriever,
        checkpoint=args.label,
        checkpoint_version=folder_digest(checkpoint),
        benchmark="learning_check",
        benchmark_version=hashlib.sha256(heldout.read_bytes()).hexdigest()[:16],
        kb_tag=kb_tag,
        modes=MODES,
        batch_size=args.batch_size,
        rollout_settings=RolloutSettings(
            retrieval_k=run_args.get("k", 3),
            max_rounds=args.max_rounds or run_args.get("max_rounds", 2),
            max_new_tokens_per_round=run_args.get("round_tokens", 20),
            max_completion_tokens=run_args.get("completion_tokens", 64),
            search_mode=args.search_mode or run_args.get("search_mode", "dense"),
        ),
        do_sample=args.sample,
        seed=args.seed,
        system_prompt=SYSTEM,
    )
    seconds = time.perf_counter() - t0
    results.write_parquet(out / "eval_results.parquet")
    accuracy = mcq_accuracy(results, n_resamples=args.resamples, seed=args.seed)
    accuracy.write_csv(out / "accuracy.csv")
    pairs = [(Arm(args.label, a), Arm(args.label, b)) for a, b in COMPARISONS]
    comparisons = compare(results, pairs, protocol="mcq", n_resamples=args.resamples, seed=args.seed)
    comparisons.write_csv(out / "comparisons.csv")
    claims = {
        f"{a} - {b}": bool(
            comparisons.filter((pl.col("a") == f"{args.label}/{a}") & (pl.col("b") == f"{args.label}/{b}"))
            .select((pl.col("difference") > 0) & pl.col("excludes_zero"))
            .item()
        )
        for a, b in CLAIMS
    }
    summary = {
        "checkpoint": str(checkpoint),
        "kb_uri": kb_uri,
        "kb_tag": kb_tag,
        "items": items.height,
        "seconds": seconds,
        "decoding": "sampled (T=1)" if args.sample else "greedy",
        "accuracy": accuracy.select(
            "mode", "n", "accuracy", "ci_low", "ci_high", "n_forced", "forced_rate", "accuracy_forced"
        ).to_dicts(),
        "comparisons": comparisons.to_dicts(),
        "claims_met": claims,
    }
    (out / "comparisons.json").write_text(json.dumps(summary, indent=2))

    print(f"{items.height} held-out items, 5 modes, {seconds:.0f} s ({summary['decoding']} decoding)\n")
    print(
        "| mode | n | strict accuracy % | 95 % interval | forced rate % | forced-choice accuracy % |\n"
        "|---|---|---|---|---|---|"
    )
    for r in accuracy.iter_rows(named=True):
        print(
            f"| {r['mode']} | {r['n']} | {100 * r['accuracy']:.1f} "
            f"| {100 * r['ci_low']:.1f} – {100 * r['ci_high']:.1f} "
            f"| {100 * r['forced_rate']:.1f} | {100 * r['accuracy_forced']:.1f} |"
        )
    print("\n| A − B | n | difference (points) | paired 95 % interval | excludes 0 |\n|---|---|---|---|---|")
    for r in comparisons.iter_rows(named=True):
        print(
            f"| {r['a'].split('/')[-1]} − {r['b'].split('/')[-1]} | {r['n']} "
            f"| {100 * r['difference']:+.1f} | "
            f"{100 * r['ci_low']:+.1f} – {100 * r['ci_high']:+.1f} "
            f"| {'yes' if r['excludes_zero'] else 'no'} |"
        )
    print(f"\nclaims (difference > 0, interval excludes 0): {claims}")
    return 1 if args.check and not all(claims.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
