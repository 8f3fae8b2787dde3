"""Learning check with a control: does GRPO with our rollout learn *through retrieval*?

Synthetic task whose answers exist only in a knowledge base: invented entities, each treated by one of four
invented drugs ("Which drug treats zorvat? A. kelamine B. ..."), 4 options, chance = 25 %. The facts
live only in a real LanceDB KB (``retrieval.search.Retriever``, dense MiniLM search by default: always k=3 passages) as "<entity> is treated with
<drug>." passages. Steps:

1. build a tiny Qwen2.5-VL (``training.tiny_model``) with a tokenizer trained on the task text (entity and
   drug names are single tokens);
2. warm-start on the *format only*: supervised trajectories ``<think>…</think><query>Q</query>`` + the real
   ``<retrieve>`` block (not trained on) + ``<think>…</think><answer>X</answer>`` where Q is the entity named
   in the question and X is a uniformly random option: the answers carry no knowledge, so accuracy starts at
   chance, and the tiny model copies the entity into its query only part of the time;
3. GRPO (TRL ``GRPOTrainer`` + ``training.rollout.Rollout`` as ``rollout_func``, stage-1 rewards format +
   accuracy) on the training entities, twice from the same warm start: with the real retriever, and with a
   ``RandomRetriever`` over the same passages (the control);
4. every ``--eval-every`` steps, sampled rollouts (2 per item, temperature 1) on **held-out entities** (never in a GRPO prompt): accuracy
   and the rate of trajectories whose query retrieved the entity's own passage.

Writes ``results.json`` and ``learning_check.png`` (both runs, both curves) into ``--out``, and the learned
model (HF layout, safetensors) into ``<out>/model_retrieval/final`` with the KB under ``<out>/kb`` and the
held-out items in ``<out>/heldout.parquet`` for the evaluation code to reuse.

Run: ``PYTHONPATH=. HF_HUB_OFFLINE=1 python benchmarks/learning_check.py --out benchmarks/results/learning_check``
(about 20 minutes on 2 CPU cores when the machine is otherwise idle).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import time
from pathlib import Path

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import polars as pl  # noqa: E402
import torch  # noqa: E402

from retrieval.embedders import TextEmbedder, passage_input  # noqa: E402
from retrieval.search import Hit, Retriever  # noqa: E402
from retrieval.store import KBLocation, sync_table, with_search_text  # noqa: E402
from training.protocol import answer_matches, build_messages, retrieve_block  # noqa: E402
from training.retrievers import RandomRetriever  # noqa: E402
from training.rollout import Rollout, encode_prompts  # noqa: E402

SYLLABLES = ["ka", "zo", "ri", "vat", "mel", "dun", "pex", "lor", "qui", "tas", "bre", "nol", "sav", "gim", "fen", "hu"]
SEARCH_MODE = "dense"  # set from --search-mode; dense always returns k passages (lexical only the matches)
# a compact system prompt with the same protocol: the synthetic task needs no medical framing, and a
# 30-token prompt instead of 150 keeps the run to ~20 minutes on 2 shared CPU cores
SYSTEM = ("Think inside <think> </think>. To search, write <query> words </query>; results come inside "
          "<retrieve> </retrieve>. Give the answer inside <answer> </answer>.")


def make_world(seed: int, n_entities: int, n_drugs: int, n_heldout: int):
    rng = random.Random(seed)

    def name(parts: int) -> str:
        while True:
            w = "".join(rng.choice(SYLLABLES) for _ in range(parts))
            if w not in seen:
                seen.add(w)
                return w

    seen: set[str] = set()
    drugs = [name(3) + "ine" for _ in range(n_drugs)]
    entities = [name(3) for _ in range(n_entities)]
    facts = {e: rng.choice(drugs) for e in entities}
    return entities[n_heldout:], entities[:n_heldout], drugs, facts


def item(entity: str, facts: dict, drugs: list[str], rng: random.Random) -> dict:
    gold = facts[entity]
    options = [gold] + rng.sample([d for d in drugs if d != gold], 3)
    rng.shuffle(options)
    label = "ABCD"[options.index(gold)]
    return {"prompt": build_messages(f"Which drug treats {entity} ?", options, system=SYSTEM), "answer_label": label,
            "answer": gold, "options": options, "explanation": None, "item_id": entity, "entity": entity}


def build_kb(root: Path, facts: dict) -> tuple[Retriever, list[Hit]]:
    frame = pl.DataFrame({
        "id": [f"kb:{e}" for e in facts], "source": ["synthetic"] * len(facts), "title": list(facts),
        "text": [f"{e} is treated with {d} ." for e, d in facts.items()],
    })
    frame = frame.with_columns(pl.Series("content_hash", [hashlib.sha256(t.encode()).hexdigest() for t in frame["text"]]))
    import shutil

    shutil.rmtree(root, ignore_errors=True)  # deterministic and cheap: rebuilt on every run
    embedder = TextEmbedder()
    location = KBLocation(str(root))
    report = sync_table(location, "kb_text", with_search_text(frame),
                        lambda rows: embedder.embed([passage_input(t, x) for t, x in zip(rows["title"], rows["text"], strict=True)]),
                        embedder.identity(), run_id="learning-check")
    pool = [Hit(r["id"], 0.0, r["source"], r["title"], r["text"]) for r in frame.iter_rows(named=True)]
    return Retriever(location, embedder, version=report.tag), pool


def warm_start(model, processor, retriever, rows: list[dict], steps: int, seed: int, lr: float) -> list[float]:
    """Supervised format-only warm start (see the module docstring); loss on the policy's own tokens."""
    tok = processor.tokenizer
    rng = random.Random(seed)
    contexts = encode_prompts(processor, [r["prompt"] for r in rows])
    examples = []
    for r, c in zip(rows, contexts, strict=True):
        for _ in range(4):
            q = r["entity"]
            hits = retriever.search([q], k=3, mode=SEARCH_MODE)[0]
            first = tok("<think> I should search </think><query> " + q + " </query>", add_special_tokens=False)["input_ids"]
            block = tok(retrieve_block([f"{h.title}. {h.text}" for h in hits]), add_special_tokens=False)["input_ids"]
            x = rng.choice(r["options"])
            last = tok("<think> I will answer </think><answer> " + x + " </answer>", add_special_tokens=False)["input_ids"]
            ids = c.ids + first + block + last + [tok.eos_token_id]
            labels = [-100] * len(c.ids) + first + [-100] * len(block) + last + [tok.eos_token_id]
            examples.append((ids, labels))
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for step in range(steps):
        batch = rng.sample(examples, 16)
        width = max(len(i) for i, _ in batch)
        ids = torch.full((len(batch), width), tok.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for j, (i, lab) in enumerate(batch):
            ids[j, : len(i)] = torch.tensor(i)
            labels[j, : len(lab)] = torch.tensor(lab)
            mask[j, : len(i)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step % 20 == 0:
            losses.append(float(loss.detach()))
    model.eval()
    return losses


def evaluate(model, processor, retriever, rows: list[dict], max_rounds: int, samples: int = 2) -> dict:
    """``samples`` sampled rollouts (temperature 1, the policy itself) per row: accuracy, query rate,
    right-passage rate (a query whose results hold the entity's own passage)."""
    ro = Rollout(retriever, k=3, max_rounds=max_rounds, max_new_tokens=20, search_mode=SEARCH_MODE)
    was = model.training
    model.eval()
    rows = [r for r in rows for _ in range(samples)]
    res = ro.run(model, processor, [r["prompt"] for r in rows])
    model.train(was)
    acc = right = queried = 0
    for r, t in zip(rows, res.trajectories, strict=True):
        acc += answer_matches(t.answer(), r["answer_label"], r["answer"], r["options"])
        queried += bool(t.queries)
        right += any(f"kb:{r['entity']}" in ids for ids in t.passage_ids)
    n = len(rows)
    return {"accuracy": acc / n, "query_rate": queried / n, "right_passage_rate": right / n,
            "prefix_violations": res.stats.prefix_violations}


def run_grpo(label: str, start_dir: Path, out_dir: Path, retriever, eval_retriever, train_rows, eval_rows,
             args) -> list[dict]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    from training.config import stage_config
    from training.rewards import stage_rewards
    from training.tiny_model import load_policy

    model, processor = load_policy(str(start_dir))
    funcs, weights = stage_rewards(1)
    cfg = stage_config(1, str(out_dir), use_cpu=True, bf16=False, gradient_checkpointing=False,
                       learning_rate=args.lr, beta=args.beta, num_generations=8, per_device_train_batch_size=32,
                       gradient_accumulation_steps=1, max_steps=args.steps, warmup_ratio=0.0, logging_steps=5,
                       save_strategy="no", max_rounds=args.max_rounds, search_mode=SEARCH_MODE,
                       max_new_tokens_per_round=20, max_completion_length=64, seed=args.seed,
                       reward_weights=weights, lr_scheduler_type="constant")
    curve: list[dict] = []

    class Eval(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            if state.global_step % args.eval_every == 0:
                m = evaluate(model, processor, eval_retriever, eval_rows, args.max_rounds)
                m.update(step=state.global_step, time_s=time.perf_counter() - t0)
                curve.append(m)
                print(label, json.dumps(m), flush=True)

    rollout = Rollout(retriever, k=3, max_rounds=args.max_rounds, max_new_tokens=20, max_completion_tokens=64,
                      search_mode=SEARCH_MODE)
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=cfg, train_dataset=Dataset.from_list(train_rows),
                          processing_class=processor, rollout_func=rollout, callbacks=[Eval()])
    t0 = time.perf_counter()
    m = evaluate(model, processor, eval_retriever, eval_rows, args.max_rounds)
    curve.append(dict(m, step=0, time_s=0.0))
    print(label, json.dumps(curve[-1]), flush=True)
    trainer.train()
    trainer.save_model(str(out_dir / "final"))
    processor.save_pretrained(str(out_dir / "final"))
    curve[-1]["train_log_tail"] = [h for h in trainer.state.log_history[-3:]]
    return curve


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for label, style in (("retrieval", "-o"), ("random_retriever", "--s")):
        curve = results["runs"][label]
        steps = [c["step"] for c in curve]
        axes[0].plot(steps, [100 * c["accuracy"] for c in curve], style, label=label.replace("_", " "))
        axes[1].plot(steps, [100 * c["right_passage_rate"] for c in curve], style, label=label.replace("_", " "))
    axes[0].axhline(25, color="grey", lw=1, ls=":", label="chance (25 %)")
    axes[0].axhline(50, color="green", lw=1, ls=":", label="2x chance")
    axes[0].set(title="held-out accuracy (sampled, 2 per item)", xlabel="GRPO step", ylabel="%", ylim=(0, 100))
    axes[1].set(title="held-out: query retrieved the right passage", xlabel="GRPO step", ylabel="%", ylim=(0, 100))
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="benchmarks/results/learning_check")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--eval-every", type=int, default=30)
    p.add_argument("--warm-steps", type=int, default=400)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--max-rounds", type=int, default=2)
    p.add_argument("--entities", type=int, default=160)
    p.add_argument("--heldout", type=int, default=48)
    p.add_argument("--drugs", type=int, default=4)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--beta", type=float, default=0.0, help="KL coefficient (the paper: 1e-3)")
    p.add_argument("--search-mode", default="dense", choices=("dense", "lexical", "hybrid"))
    p.add_argument("--reuse-warm-start", action="store_true",
                   help="reuse <out>/warm_start (and its base, KB) from an earlier run instead of rebuilding")
    args = p.parse_args()
    global SEARCH_MODE
    SEARCH_MODE = args.search_mode
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    train_ents, heldout_ents, drugs, facts = make_world(args.seed, args.entities, args.drugs, args.heldout)
    rng = random.Random(args.seed + 1)
    train_rows = [item(e, facts, drugs, rng) for e in train_ents]
    eval_rows = [item(e, facts, drugs, rng) for e in heldout_ents]
    pl.DataFrame([{k: v for k, v in r.items() if k != "prompt"} for r in eval_rows]).write_parquet(out / "heldout.parquet")
    from training.tiny_model import build_tiny_model, load_policy, local_corpus

    retriever, pool = build_kb(out / "kb", facts)

    warm = out / "warm_start"
    losses: list[float] = []
    if not (args.reuse_warm_start and (warm / "config.json").exists()):
        corpus = [f"{e} is treated with {d} . Which drug treats {e} ?" for e, d in facts.items()]
        corpus += local_corpus(Path("assets/sample_data"), max_texts=1500)
        base = out / "base"
        build_tiny_model(base, corpus, vocab_size=3000, extra_tokens=[*facts, *drugs], hidden_size=args.hidden,
                         layers=args.layers, seed=args.seed)
        model, processor = load_policy(str(base))
        torch.manual_seed(args.seed)
        losses = warm_start(model, processor, retriever, train_rows + eval_rows, args.warm_steps, args.seed, 3e-3)
        model.save_pretrained(warm, safe_serialization=True)
        processor.save_pretrained(warm)
    t_warm = time.perf_counter() - t_start
    runs = {}
    runs["retrieval"] = run_grpo("retrieval", warm, out / "model_retrieval", retriever, retriever,
                                 train_rows, eval_rows, args)
    control = RandomRetriever(pool, seed=args.seed)
    runs["random_retriever"] = run_grpo("random_retriever", warm, out / "model_random", control, control,
                                        train_rows, eval_rows, args)
    results = {"args": vars(args), "chance": 0.25, "warm_start_loss": losses, "warm_start_s": t_warm,
               "total_s": time.perf_counter() - t_start, "runs": runs,
               "model_dir": str(out / "model_retrieval" / "final"), "kb_uri": str(out / "kb"),
               "kb_tag": "run-learning-check"}
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    plot(results, out / "learning_check.png")
    print(json.dumps({k: runs[k][-1] for k in runs}, default=str))


if __name__ == "__main__":
    main()
