"""The per-step KL of the learning check with and without the last-round ``<query>`` ban.

Until issue 16 the training rollout banned ``<query>`` while sampling the last round; TRL scores the
unconstrained softmax. For the k3 estimator TRL logs (``exp(r) − r − 1`` with ``r = log π_ref − log π`` at
each sampled token), a token drawn from the banned distribution can be one the policy itself finds unlikely
(its mass sat on ``<query>``), so ``log π`` is very negative there and ``exp(r)`` explodes: a KL spike that
says nothing about how far the policy moved. Today the last round samples unconstrained (a query there ends
the row unanswered, reward 0).

This runs the learning check's GRPO from its warm start twice with the same seeds and settings (the
learning check's defaults: 8 prompts × 8 generations, lr 5e-4, beta 1e-3, 2 rounds of 16 tokens, forced
answers), once with ``ban_queries=True`` (the old rollout) and once with ``ban_queries=False`` (today's), and
records TRL's per-step ``kl`` and the rate of last-round queries. Writes ``benchmarks/figures/kl_ban.json``.

Run (after ``benchmarks/learning_check.py`` has left its warm start and KB in ``--run-dir``):
``PYTHONPATH=. HF_HUB_OFFLINE=1 python benchmarks/kl_ban.py --run-dir benchmarks/results/learning_check``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
sys.path.insert(0, str(Path(__file__).parent))

from learning_check import ensure_kb, item, make_world  # noqa: E402


def run(ban: bool, args, rows, retriever) -> dict:
    from training.config import stage_config
    from training.tiny_model import load_policy
    from training.trainer import build_trainer

    torch.manual_seed(0)
    model, processor = load_policy(str(Path(args.run_dir) / "warm_start"))
    model.get_input_embeddings().weight.requires_grad_(False)  # as the learning check does
    with tempfile.TemporaryDirectory() as out:
        cfg = stage_config(
            1,
            out,
            use_cpu=True,
            bf16=False,
            gradient_checkpointing=False,
            learning_rate=args.lr,
            beta=1e-3,
            num_generations=8,
            per_device_train_batch_size=64,
            gradient_accumulation_steps=1,
            max_steps=args.steps,
            warmup_ratio=0.0,
            logging_steps=1,
            save_strategy="no",
            max_rounds=2,
            retrieval_k=1,
            search_mode="lexical",
            max_new_tokens_per_round=16,
            max_completion_length=40,
            seed=0,
            lr_scheduler_type="constant",
            dataloader_num_workers=0,
        )
        trainer = build_trainer(
            model, processor, cfg, rows, retriever, force_answer=True, answer_tokens=4, ban_queries=ban
        )
        torch.manual_seed(0)
        trainer.train()
        logs = [h for h in trainer.state.log_history if "kl" in h]
    return {
        "ban_queries": ban,
        "kl": [h["kl"] for h in logs],
        "reward": [h.get("reward") for h in logs],
        "answered": [h.get("rollout/answered") for h in logs],
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--run-dir", default="benchmarks/results/learning_check")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--out", default="benchmarks/figures/kl_ban.json")
    args = p.parse_args()
    torch.set_num_threads(2)
    train, _, drugs, facts = make_world(0, 296, 4, 96)  # the learning check's default world
    retriever = ensure_kb(str(Path(args.run_dir) / "kb"), facts)
    rows = [{k: v for k, v in item(e, facts, drugs).items() if k != "entity"} for e in train]
    runs = [run(ban, args, rows, retriever) for ban in (True, False)]
    name = {True: "banned", False: "on_policy"}
    summary = {
        "args": vars(args),
        "runs": runs,
        "max_kl": {name[r["ban_queries"]]: max(r["kl"]) for r in runs},
        "mean_kl": {name[r["ban_queries"]]: sum(r["kl"]) / len(r["kl"]) for r in runs},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: summary[k] for k in ("max_kl", "mean_kl")}, indent=2))


if __name__ == "__main__":
    main()
