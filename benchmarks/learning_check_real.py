"""Learning check on a real pretrained model, through the production stage entry point.

Question: does GRPO with our retrieval rollout raise held-out accuracy on facts that exist **only** in the
knowledge base, and does the gain come through retrieval? This supersedes ``benchmarks/learning_check.py``
(a tiny random model with a trained tokenizer and a rigged warm start that taught the target skill).

Evaluation world: invented entities (``kazovat`` ...), each treated by one of four invented drugs drawn
uniformly at random; "Which drug treats <entity>?" with the same four drug options in the same order for
every question (chance 25 %). The entity -> drug facts are passages "<entity> is treated with <drug>." of
a real LanceDB KB (MiniLM vectors + full-text index, tagged by ``sync_table``), searched with the stage's
**default** mode and k (``StageConfig``: dense, k = 3). Held-out entities never appear in a GRPO prompt.

1. **Start model**: SmolLM2-135M-Instruct's real weights grafted into a Qwen2.5-VL
   (:func:`training.pretrained.build_smollm2_vlm`, cached in ``<out>/base``).
2. **Format-only warm start** (``--format-warmup-steps``, 0 to skip), supervised, on a **disjoint** world:
   other invented entities (other syllables), another relation and phrasing ("Which organ does <X>
   affect?", organ options, passages "<X> mainly affects the <organ>." in their own KB). Target:
   ``<think> I need to look up <X>. </think> <query> <X> </query>`` + the block the format world's KB really
   returns for that query (default mode and k; mask 0, not trained on) + ``<answer> <letter> </answer>``
   (the gold letter of the format world); the closing EOS is inserted, as in the rollout, and not trained
   on. It never shows an evaluation-world entity, drug, question or passage. It does teach the protocol
   (search for the question's subject, answer with a letter after the block) on the other relation; step 0
   of every arm is measured **after** it, and its effect on the evaluation world is reported
   (``warm_start_effect``: the start model before and after it, the same metrics and paired intervals).
3. **GRPO only through** ``python -m training.launch --stage 1`` (a subprocess per arm): the items Parquet
   in the stage-1 item schema (:data:`training.data.ITEM_COLUMNS`), the KB URI and tag, the start model,
   ``--config`` overrides (CPU, budgets, steps, learning rate, ``save_steps = --eval-every``, the arm's
   ablation switch); stage-1 rewards, search mode and k are left at the stage's defaults, and no
   checkpoint is deleted (``save_total_limit`` unset). A killed run is resumed by running this script again
   with ``--reuse``: the launcher continues from its newest complete checkpoint.
4. **Evaluation** of the start model (step 0) and every ``checkpoint-N`` on the held-out items: sampled
   rollouts (``--eval-samples`` per item) of :func:`training.trainer.stage_rollout` over
   :func:`training.trainer.stage_retriever` of the arm's own :class:`~training.config.StageConfig` (the
   same budgets, sampling and retriever the trainer used), prompts from :func:`training.launch.trl_dataset`
   (the trainer's); the same sampling seed at every step and a fresh rollout per step (common random
   numbers: identical weights give identical trajectories). Per trajectory: accuracy, right passage (a
   query retrieved the entity's own passage), query (>= 1 query), the stage-1 format reward
   (:func:`training.rewards.format_reward`). Gain = final - step 0 per metric with a paired bootstrap
   interval over held-out items (:func:`training.evaluation.metrics.paired_difference`, per-item means
   over the samples), and the arms' final values against each other the same way.

Arms, all from the same start model: ``retrieval`` (production), ``random_retriever`` (control and
ablation: ``retriever="random"``, k passages drawn at random from the same KB version whatever the query;
evaluated with that retriever too), ``env_mask_ones`` (ablation: ``train_on_inserted=True``, the loss
also covers the retrieved text).

Writes into ``--out``: ``results.json`` (per arm: curves, step-0 and final values, paired intervals, TRL's
per-step training log, wall/CPU seconds per phase, the exact launch commands; the warm start's effect;
measured seconds per GRPO step / per evaluated trajectory and the wall time they imply for the full run),
``items_train.parquet``, ``items_heldout.parquet``, the KBs, ``warm_start/``, ``arms/<arm>/checkpoint-N``,
and the figure (also to ``--figure``).

Short run (proves the path end to end and measures the costs; not a learning result; BENCHMARKS.md)::

    PYTHONPATH=. HF_HUB_OFFLINE=1 python benchmarks/learning_check_real.py --max-steps 2 --eval-every 1 \
        --train-entities 16 --heldout 4 --format-entities 16 --eval-samples 2 --format-warmup-steps 3 \
        --bootstrap 2000 --figure benchmarks/figures/learning_check_real_short_run.png

Warm start only (its step-0 effect, no GRPO): ``--arms '' --heldout 16 --format-entities 64
--format-warmup-steps 20 --eval-samples 2 --figure ''``.

Full run (the defaults; about 55-80 hours on the shared 2-core CPU by the measured costs: a GPU run):
``PYTHONPATH=. HF_HUB_OFFLINE=1 python benchmarks/learning_check_real.py``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import polars as pl  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# two disjoint syllable sets: no evaluation-world name can equal or contain a format-world syllable pattern
EVAL_SYLLABLES = [
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
]
FORMAT_SYLLABLES = ["ab", "ed", "ik", "om", "ul", "yr", "es", "an", "ob", "uf", "ep", "ig"]
ORGANS = ["liver", "kidney", "heart", "lung"]
ARMS = {
    "retrieval": {},
    "random_retriever": {"retriever": "random"},
    "env_mask_ones": {"train_on_inserted": True},
}
CHANCE = 0.25
# + --seed: the torch seed of every evaluation (the same at every step: common random numbers)
EVAL_SEED = 1000
METRICS = ("accuracy", "right_passage_rate", "query_rate", "format_reward")
# the launcher's per-step log line (tqdm may have written a progress bar before it on the same line)
LOG_LINE = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) training\.launch step (\d+): (\{.*\})\s*$")


class Clock:
    """Wall and process CPU seconds (all threads) since creation."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> dict[str, float]:
        return {
            "wall_s": round(time.perf_counter() - self.wall, 2),
            "cpu_s": round(time.process_time() - self.cpu, 2),
        }


# ---- worlds, items, KBs ---------------------------------------------------------------------------------
@dataclass
class World:
    """Invented entities with one fact each; ``question``/``passage`` say how the relation is phrased."""

    name: str
    entities: list[str]
    options: list[str]
    facts: dict[str, str]
    question: str  # format string with {e}
    passage: str  # format string with {e} and {v}

    def item(self, e: str, split: str) -> dict:
        """One row of the stage-1 item table (:data:`training.data.ITEM_COLUMNS`)."""
        gold = self.facts[e]
        return {
            "item_id": f"{self.name}:{e}",
            "dataset": f"synthetic_{self.name}",
            "split": split,
            "question": self.question.format(e=e),
            "context": None,
            "options": list(self.options),
            "answer_label": "ABCD"[self.options.index(gold)],
            "answer": gold,
            "explanation": None,
            "image_ref": None,
            "difficulty": None,
        }

    def items(self, entities: list[str], split: str) -> pl.DataFrame:
        from training.data import ITEM_COLUMNS

        return pl.DataFrame([self.item(e, split) for e in entities], schema=ITEM_COLUMNS)


def invented_names(rng: random.Random, syllables: list[str], n: int, parts: int, seen: set[str]) -> list[str]:
    out = []
    while len(out) < n:
        w = "".join(rng.choice(syllables) for _ in range(parts))
        if w not in seen:
            seen.add(w)
            out.append(w)
    return out


def eval_world(seed: int, n: int) -> World:
    rng = random.Random(seed)
    seen: set[str] = set()
    drugs = [d + "ine" for d in invented_names(rng, EVAL_SYLLABLES, 4, 3, seen)]
    entities = invented_names(rng, EVAL_SYLLABLES, n, 3, seen)
    return World(
        "drug",
        entities,
        drugs,
        {e: rng.choice(drugs) for e in entities},
        "Which drug treats {e}?",
        "{e} is treated with {v}.",
    )


def format_world(seed: int, n: int) -> World:
    rng = random.Random(seed + 7919)
    entities = invented_names(rng, FORMAT_SYLLABLES, n, 3, set())
    return World(
        "organ",
        entities,
        list(ORGANS),
        {e: rng.choice(ORGANS) for e in entities},
        "Which organ does {e} affect?",
        "{e} mainly affects the {v}.",
    )


def build_kb(root: Path, world: World, run_id: str) -> tuple[str, str]:
    """A real LanceDB text KB of ``world``'s passages (MiniLM vectors + full-text index) under ``root``,
    tagged by ``sync_table`` (``run-<run_id>``); returns ``(uri, tag)``. Passage ids are ``kb:<entity>``."""
    from retrieval.embedders import TextEmbedder, passage_input
    from retrieval.store import KBLocation, sync_table, with_search_text

    frame = pl.DataFrame(
        {
            "id": [f"kb:{e}" for e in world.entities],
            "source": [f"synthetic_{world.name}"] * len(world.entities),
            "title": list(world.entities),
            "text": [world.passage.format(e=e, v=world.facts[e]) for e in world.entities],
        }
    )
    frame = frame.with_columns(
        pl.Series("content_hash", [hashlib.sha256(t.encode()).hexdigest() for t in frame["text"]])
    )
    shutil.rmtree(root, ignore_errors=True)  # cheap and deterministic: rebuilt unless --reuse
    embedder = TextEmbedder()
    report = sync_table(
        KBLocation(str(root)),
        "kb_text",
        with_search_text(frame),
        lambda rows: embedder.embed(
            [passage_input(t, x) for t, x in zip(rows["title"], rows["text"], strict=True)]
        ),
        embedder.identity(),
        run_id=run_id,
    )
    return str(root), report.tag


def kb_retriever(uri: str, tag: str):
    from retrieval.embedders import TextEmbedder
    from retrieval.search import Retriever
    from retrieval.store import KBLocation

    return Retriever(KBLocation(uri), TextEmbedder(), version=tag)


# ---- the launch configuration (one place: training and evaluation read the same overrides) ---------------
def stage_overrides(args, arm: str) -> dict:
    """``--config`` of ``training.launch`` for ``arm``. Search mode, k, rewards and sampling are left at the
    stage's defaults; checkpoints every ``--eval-every`` steps, none deleted."""
    return {
        "use_cpu": True,
        "bf16": False,
        "gradient_checkpointing": False,
        "max_steps": args.max_steps,
        "save_steps": args.eval_every,
        "num_generations": args.generations,
        "per_device_train_batch_size": args.generations * args.prompts_per_step,
        "gradient_accumulation_steps": 1,
        "learning_rate": args.lr,
        "max_rounds": args.max_rounds,
        "max_new_tokens_per_round": args.round_tokens,
        "max_completion_length": args.completion_tokens,
        "seed": args.seed,
        **ARMS[arm],
    }


def stage_config_for(args, arm: str, output_dir: str):
    from training.config import stage_config

    return stage_config(1, output_dir, **stage_overrides(args, arm))


# ---- format-only warm start ------------------------------------------------------------------------------
def format_warmup(base: Path, out: Path, world: World, retriever, args) -> dict:
    """Supervised format-only warm start on the disjoint ``world`` (module docstring, step 2); saves the
    model and processor to ``out``. Returns losses, the format world's right-passage rate of the target
    queries, a decoded example and the time."""
    import torch

    from training.launch import trl_dataset
    from training.protocol import passage_text, retrieve_block
    from training.rollout import encode_prompts
    from training.tiny_model import load_policy

    clock = Clock()
    cfg = stage_config_for(args, "retrieval", str(out))  # the stage's default search mode and k
    model, processor = load_policy(str(base), dtype="float32")
    tok = processor.tokenizer
    items = world.items(world.entities, "train")
    prompts = [r["prompt"] for r in trl_dataset(items, None)]
    contexts = encode_prompts(processor, prompts)
    hits = retriever.search(list(world.entities), k=cfg.retrieval_k, mode=cfg.search_mode)
    examples, right = [], 0
    for e, row, c, h in zip(world.entities, items.iter_rows(named=True), contexts, hits, strict=True):
        right += f"kb:{e}" in [x.id for x in h]
        # a space between the blocks: written "</think><query>", SmolLM2's tokenizer merges "><" into one
        # token, and a policy that learned "</" + name + "><" samples "></" after "</answer" (a stray "</"
        # after the answer: format reward 0; seen in the first short run)
        first = tok(
            f"<think> I need to look up {e}. </think> <query> {e} </query>", add_special_tokens=False
        )["input_ids"]
        block = tok(retrieve_block([passage_text(x.title, x.text) for x in h]), add_special_tokens=False)[
            "input_ids"
        ]
        last = tok(f"<answer> {row['answer_label']} </answer>", add_special_tokens=False)["input_ids"]
        ids = c.ids + first + block + last + [tok.eos_token_id]
        labels = [-100] * len(c.ids) + first + [-100] * len(block) + last + [-100]
        examples.append((ids, labels))
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.warmup_lr)
    model.train()
    losses, step_s = [], []
    for step in range(args.format_warmup_steps):
        t0 = time.perf_counter()
        batch = rng.sample(examples, min(args.warmup_batch, len(examples)))
        width = max(len(i) for i, _ in batch)
        ids = torch.full((len(batch), width), tok.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for j, (i, lab) in enumerate(batch):
            ids[j, : len(i)] = torch.tensor(i)
            labels[j, : len(lab)] = torch.tensor(lab)
            mask[j, : len(i)] = 1
        for group in opt.param_groups:  # linear warm-up over the first 10 % of the steps
            group["lr"] = args.warmup_lr * min(1.0, (step + 1) / max(1, args.format_warmup_steps // 10))
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        losses.append(round(float(loss.detach()), 4))
        step_s.append(time.perf_counter() - t0)
        if step % 10 == 0 or step == args.format_warmup_steps - 1:
            print(f"format warm-up step {step}: loss {losses[-1]} ({step_s[-1]:.1f} s)", flush=True)
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return {
        "steps": args.format_warmup_steps,
        "batch": args.warmup_batch,
        "lr": args.warmup_lr,
        "world": {"relation": world.question, "passage": world.passage, "entities": len(world.entities)},
        "target_right_passage_rate": right / len(world.entities),
        "example_target": tok.decode(examples[0][0][len(contexts[0].ids) :]),
        "losses": losses,
        "seconds_per_step": _median(step_s),
        "time": clock.read(),
    }


def _median(xs: list[float]) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return round(s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2, 3)


# ---- GRPO through the launcher -----------------------------------------------------------------------------
def launch_command(args, arm: str, items: Path, kb: tuple[str, str], start: Path, arm_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "training.launch",
        "--stage",
        "1",
        "--items",
        str(items),
        "--kb-uri",
        kb[0],
        "--kb-tag",
        kb[1],
        "--base-model",
        str(start),
        "--output-dir",
        str(arm_dir),
        "--config",
        json.dumps(stage_overrides(args, arm), sort_keys=True),
        "--lineage",
        json.dumps({"benchmark": "learning_check_real", "arm": arm}),
    ]


def run_launch(cmd: list[str], log_path: Path, threads: int) -> dict:
    """Run the launcher, its output into ``log_path``; wall and CPU seconds (the child's user + system),
    and TRL's per-step metrics parsed from its log lines."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(threads), TRL_EXPERIMENTAL_SILENCE="1")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    started = time.time()
    with open(log_path, "w") as fh:
        rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    steps = []
    for line in log_path.read_text(errors="replace").splitlines():
        m = LOG_LINE.search(line)
        if m:
            at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            steps.append(
                {"step": int(m.group(2)), "logged_at_s": round(at - started, 2), **json.loads(m.group(3))}
            )
    if rc != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
        raise SystemExit(f"training.launch failed (exit {rc}); log {log_path}:\n{tail}")
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "steps": steps, "log": str(log_path)}


def step_costs(steps: list[dict]) -> dict:
    """Seconds per GRPO step (the launcher's own ``train/step_time_s``: rollout + loss + optimizer), and the
    seconds between consecutive step logs that are not step time (the checkpoint save in between)."""
    times = [s["train/step_time_s"] for s in steps if s.get("train/step_time_s") is not None]
    gaps = [
        b["logged_at_s"] - a["logged_at_s"] - (b.get("train/step_time_s") or 0.0)
        for a, b in zip(steps, steps[1:], strict=False)
    ]
    first = steps[0]["logged_at_s"] - (steps[0].get("train/step_time_s") or 0.0) if steps else None
    return {
        "step_s": [round(t, 2) for t in times],
        "median_step_s": _median(times),
        "between_steps_s": [round(g, 2) for g in gaps],
        "startup_s": round(first, 2) if first is not None else None,
    }


# ---- evaluation -----------------------------------------------------------------------------------------
def checkpoints(arm_dir: Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every ``checkpoint-N``, plus ``final`` when its step has no checkpoint (a
    ``--max-steps`` that is not a multiple of ``--eval-every``)."""
    found = sorted((int(d.name.split("-")[-1]), d) for d in arm_dir.glob("checkpoint-*") if d.is_dir())
    lineage = arm_dir / "final" / "medrwr_lineage.json"
    if lineage.exists():
        step = json.loads(lineage.read_text()).get("global_step")
        if step and step not in {s for s, _ in found}:
            found.append((int(step), arm_dir / "final"))
    return found


def evaluate(model, processor, rollout, items: pl.DataFrame, args, seed: int) -> tuple[list[dict], dict]:
    """``--eval-samples`` sampled rollouts per held-out item (batches of ``--eval-batch`` rows); one
    record per trajectory (item_id, correct, right_passage, queried, format) and the time."""
    import torch

    from training.launch import trl_dataset
    from training.protocol import answer_matches
    from training.rewards import format_reward

    clock = Clock()
    rows = [r for r in trl_dataset(items, None) for _ in range(args.eval_samples)]
    entity = {r["item_id"]: r["item_id"].split(":", 1)[1] for r in rows}
    torch.manual_seed(seed)
    records, examples, violations = [], [], 0
    tok = processor.tokenizer
    for at in range(0, len(rows), args.eval_batch):
        chunk = rows[at : at + args.eval_batch]
        res = rollout.run(model, processor, [r["prompt"] for r in chunk])
        violations += res.stats.prefix_violations
        cols = {k: [r[k] for r in chunk] for k in ("answer_label", "answer", "options")}
        fmt = format_reward([None] * len(chunk), [None] * len(chunk), trajectory=res.trajectories, **cols)
        for r, t, f in zip(chunk, res.trajectories, fmt, strict=True):
            records.append(
                {
                    "item_id": r["item_id"],
                    "correct": float(
                        answer_matches(t.answer(), r["answer_label"], r["answer"], r["options"])
                    ),
                    "right_passage": float(any(f"kb:{entity[r['item_id']]}" in ids for ids in t.passage_ids)),
                    "queried": float(bool(t.queries)),
                    "format": float(f),
                    "generated_tokens": t.generated_tokens,
                }
            )
            if len(examples) < 3:
                examples.append(tok.decode(t.completion_ids, skip_special_tokens=False))
    t = clock.read()
    return records, {
        **t,
        "trajectories": len(records),
        "seconds_per_trajectory": round(t["wall_s"] / max(1, len(records)), 3),
        "prefix_violations": violations,
        "examples": examples,
    }


def summary(records: list[dict]) -> dict:
    n = len(records)
    mean = lambda k: sum(r[k] for r in records) / n  # noqa: E731
    return {
        "accuracy": mean("correct"),
        "right_passage_rate": mean("right_passage"),
        "query_rate": mean("queried"),
        "format_reward": mean("format"),
        "mean_generated_tokens": mean("generated_tokens"),
        "n": n,
    }


_COLUMN = {"accuracy": "correct", "right_passage_rate": "right_passage", "query_rate": "queried"}


def per_item(records: list[dict], metric: str) -> pl.DataFrame:
    """Per held-out item, the mean of ``metric`` over its samples, in the frame layout
    :func:`training.evaluation.metrics.paired_difference` pairs on."""
    col = _COLUMN.get(metric, "format")
    return (
        pl.DataFrame(records)
        .group_by("item_id")
        .agg(pl.col(col).mean().alias("value"))
        .with_columns(benchmark=pl.lit("learning_check_real"), protocol=pl.lit("mcq"))
    )


def paired(a: list[dict], b: list[dict], args) -> dict:
    """A - B per metric: paired bootstrap over held-out items (per-item means over samples)."""
    from training.evaluation.metrics import paired_difference

    out = {}
    for metric in METRICS:
        d = paired_difference(
            per_item(a, metric),
            per_item(b, metric),
            metric="value",
            n_resamples=args.bootstrap,
            seed=args.seed,
        )
        out[metric] = {
            "a": round(d.mean_a, 4),
            "b": round(d.mean_b, 4),
            "difference": round(d.difference, 4),
            "ci95": [round(d.ci_low, 4), round(d.ci_high, 4)],
            "excludes_zero": d.excludes_zero,
            "n_items": d.n,
        }
    return out


def eval_policy(path: Path, processor_dir: Path, rollout, items, args, seed: int):
    import torch

    from training.tiny_model import load_policy

    torch.set_num_threads(args.threads)
    model, processor = load_policy(str(path), dtype="float32")
    if not (path / "tokenizer_config.json").exists():  # a checkpoint without the processor: the start's
        _, processor = load_policy(str(processor_dir), dtype="float32")
    model.eval()
    try:
        return evaluate(model, processor, rollout, items, args, seed)
    finally:
        del model


# ---- figure ---------------------------------------------------------------------------------------------
def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = {
        "accuracy": "held-out accuracy",
        "right_passage_rate": "held-out: a query retrieved the right passage",
        "query_rate": "held-out: trajectories with >= 1 query",
        "format_reward": "held-out: stage-1 format reward (0-2)",
    }
    styles = {"retrieval": "-o", "random_retriever": "--s", "env_mask_ones": ":^"}
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.2))
    for arm, run in results["arms"].items():
        steps = [c["step"] for c in run["curve"]]
        for ax, metric in zip(axes, METRICS, strict=True):
            scale = 1 if metric == "format_reward" else 100
            ax.plot(steps, [scale * c[metric] for c in run["curve"]], styles.get(arm, "-"), label=arm)
    axes[0].axhline(100 * CHANCE, color="grey", lw=1, ls=":", label="chance (25 %)")
    n = next(iter(results["arms"].values()))["curve"][0]["n"]
    steps = sorted({c["step"] for run in results["arms"].values() for c in run["curve"]})
    for ax, metric in zip(axes, METRICS, strict=True):
        if len(steps) <= 15:
            ax.set_xticks(steps)
        ax.set(
            title=f"{titles[metric]} (n = {n})",
            xlabel="GRPO step",
            ylabel="reward" if metric == "format_reward" else "%",
            ylim=(0, 2.05) if metric == "format_reward" else (0, 100),
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(results["figure_title"], fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---- main -----------------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="benchmarks/results/learning_check_real")
    p.add_argument("--figure", default="benchmarks/figures/learning_check_real.png")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {list(ARMS)}")
    p.add_argument("--train-entities", type=int, default=128, help="evaluation world: GRPO entities")
    p.add_argument("--heldout", type=int, default=64, help="evaluation world: held-out entities")
    p.add_argument("--format-entities", type=int, default=64, help="format world (warm start) entities")
    p.add_argument(
        "--format-warmup-steps",
        type=int,
        default=20,
        help="0: no warm start (20: measured enough for the format, BENCHMARKS.md)",
    )
    p.add_argument("--warmup-batch", type=int, default=8)
    p.add_argument("--warmup-lr", type=float, default=5e-5)
    p.add_argument("--max-steps", type=int, default=300)
    p.add_argument("--eval-every", type=int, default=25, help="also the launcher's save_steps")
    p.add_argument("--generations", type=int, default=8)
    p.add_argument("--prompts-per-step", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-5, help="GRPO learning rate (not tuned)")
    p.add_argument("--max-rounds", type=int, default=2)
    p.add_argument("--round-tokens", type=int, default=48)
    p.add_argument("--completion-tokens", type=int, default=96)
    p.add_argument("--eval-samples", type=int, default=4)
    p.add_argument("--eval-batch", type=int, default=32)
    p.add_argument("--bootstrap", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--full-steps", type=int, default=300, help="the full run the timings are projected to")
    p.add_argument("--full-eval-every", type=int, default=25)
    p.add_argument("--full-heldout", type=int, default=64)
    p.add_argument("--full-eval-samples", type=int, default=4)
    p.add_argument("--full-warmup-steps", type=int, default=20)
    p.add_argument(
        "--reuse",
        action="store_true",
        help="keep <out>'s base model, warm start, KBs and arm folders (the launcher resumes each arm)",
    )
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from training.pretrained import build_smollm2_vlm
    from training.trainer import stage_retriever, stage_rollout

    out = Path(args.out).resolve()
    if out.exists() and not args.reuse:
        for sub in ("arms", "warm_start", "kb", "format_kb"):
            shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    arms = [a for a in args.arms.split(",") if a]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        raise SystemExit(f"unknown arms {unknown}; choose from {list(ARMS)}")
    total = Clock()
    phases: dict[str, dict] = {}
    load = {"start": os.getloadavg()}

    # worlds, items, KBs
    clock = Clock()
    world = eval_world(args.seed, args.train_entities + args.heldout)
    heldout_ents, train_ents = world.entities[: args.heldout], world.entities[args.heldout :]
    fworld = format_world(args.seed, args.format_entities)
    assert not set(fworld.entities) & set(world.entities) and not set(fworld.options) & set(world.options)
    items_train, items_heldout = out / "items_train.parquet", out / "items_heldout.parquet"
    world.items(train_ents, "train").write_parquet(items_train)
    heldout = world.items(heldout_ents, "test")
    heldout.write_parquet(items_heldout)
    kb = build_kb(out / "kb", world, "learning-check-real")
    fkb = build_kb(out / "format_kb", fworld, "learning-check-real-format")
    retriever = kb_retriever(*kb)
    phases["worlds_items_kbs"] = clock.read()

    # start model (cached)
    clock = Clock()
    base = out / "base"
    if not (base / "model.safetensors").exists():
        build_smollm2_vlm(base)
    phases["base_model"] = clock.read()
    base_manifest = json.loads((base / "medrwr_model.json").read_text())

    # format-only warm start on the disjoint world
    warm = None
    if args.format_warmup_steps > 0:
        start = out / "warm_start"
        if args.reuse and (start / "model.safetensors").exists() and (out / "warmup.json").exists():
            warm = json.loads((out / "warmup.json").read_text())
        else:
            warm = format_warmup(base, start, fworld, kb_retriever(*fkb), args)
            (out / "warmup.json").write_text(json.dumps(warm, indent=2))
        phases["format_warmup"] = warm["time"]
    else:
        start = base
    load["after_warmup"] = os.getloadavg()

    # step 0: the start model on the held-out items (per distinct evaluation retriever), and the base model
    step0: dict[str, tuple[list[dict], dict]] = {}
    evals_time: list[dict] = []

    def rollout_for(arm: str, arm_dir: Path):
        cfg = stage_config_for(args, arm, str(arm_dir))
        return stage_rollout(cfg, stage_retriever(cfg, retriever))

    def step0_of(arm: str):
        key = ARMS[arm].get("retriever", "kb")
        if key not in step0:
            step0[key] = eval_policy(
                start, start, rollout_for(arm, out), heldout, args, EVAL_SEED + args.seed
            )
            evals_time.append({"what": f"step 0 ({key} retriever)", **_timing(step0[key][1])})
            print(f"step 0 [{key}]", json.dumps(summary(step0[key][0])), flush=True)
        return step0[key]

    warm_effect = None
    if warm is not None:
        base_records, base_info = eval_policy(
            base, base, rollout_for("retrieval", out), heldout, args, EVAL_SEED + args.seed
        )
        evals_time.append({"what": "base model (no warm start)", **_timing(base_info)})
        warm_records, _ = step0_of("retrieval")
        warm_effect = {
            "base_model": {**summary(base_records), "examples": base_info["examples"]},
            "after_format_warmup": {**summary(warm_records), "examples": step0["kb"][1]["examples"]},
            "after_minus_base": paired(warm_records, base_records, args),
        }
        print(
            "warm-start effect", json.dumps({k: v for k, v in warm_effect.items() if k != "after_minus_base"})
        )

    # arms: GRPO through the launcher, then every checkpoint evaluated
    results_arms = {}
    for arm in arms:
        arm_dir = out / "arms" / arm
        arm_dir.mkdir(parents=True, exist_ok=True)
        cmd = launch_command(args, arm, items_train, kb, start, arm_dir)
        print(f"[{arm}] GRPO:", " ".join(cmd[1:3]), "...", flush=True)
        load[f"before_{arm}"] = os.getloadavg()
        run = run_launch(cmd, arm_dir / "launch.log", args.threads)
        records0, info0 = step0_of(arm)
        curve = [{"step": 0, **summary(records0), "seconds": info0["wall_s"]}]
        per_step = {0: records0}
        for step, ckpt in checkpoints(arm_dir):
            # common random numbers: every evaluated step gets a fresh rollout (a random retriever restarts
            # its draws) and the same sampling seed, so step-to-step differences come from the weights
            recs, info = eval_policy(
                ckpt, start, rollout_for(arm, arm_dir), heldout, args, EVAL_SEED + args.seed
            )
            per_step[step] = recs
            curve.append(
                {"step": step, **summary(recs), "seconds": info["wall_s"], "examples": info["examples"]}
            )
            evals_time.append({"what": f"{arm} checkpoint-{step}", **_timing(info)})
            print(f"[{arm}] step {step}", json.dumps(summary(recs)), flush=True)
        final = max(per_step)
        lineage = arm_dir / "final" / "medrwr_lineage.json"
        results_arms[arm] = {
            "switches": ARMS[arm],
            "command": cmd,
            "train": {k: run[k] for k in ("wall_s", "cpu_s", "log")},
            "train_log": run["steps"],
            "step_costs": step_costs(run["steps"]),
            "checkpoints": [s for s, _ in checkpoints(arm_dir)],
            "checkpoint_bytes": _folder_bytes(next(arm_dir.glob("checkpoint-*"), None)),
            "curve": curve,
            "step0": curve[0],
            "final": curve[-1],
            "gain_final_minus_step0": paired(per_step[final], per_step[0], args) if final else None,
            "lineage_ablation": json.loads(lineage.read_text()).get("ablation") if lineage.exists() else None,
            "_records": per_step,
        }
    load["end"] = os.getloadavg()

    comparisons = {}
    if "retrieval" in results_arms:
        ref = results_arms["retrieval"]
        for other in ("random_retriever", "env_mask_ones"):
            if other in results_arms:
                a, b = ref["_records"], results_arms[other]["_records"]
                comparisons[f"retrieval_minus_{other}_at_final"] = paired(a[max(a)], b[max(b)], args)
    for run in results_arms.values():
        del run["_records"]

    projection = project(args, warm, results_arms, evals_time)
    results = {
        "what": "learning check: SmolLM2-135M-Instruct (Qwen2.5-VL graft) via python -m training.launch",
        "args": vars(args),
        "chance": CHANCE,
        "base_model": {
            k: base_manifest.get(k) for k in ("kind", "parameters", "vision_tower", "weights_sha256")
        },
        "world": {
            "eval": {"question": world.question, "passage": world.passage, "options": world.options},
            "train_entities": len(train_ents),
            "heldout_entities": len(heldout_ents),
            "format_world": {
                "question": fworld.question,
                "passage": fworld.passage,
                "options": fworld.options,
            },
        },
        "kb": {"uri": kb[0], "tag": kb[1], "format_uri": fkb[0], "format_tag": fkb[1]},
        "stage_defaults_used": {
            k: getattr(stage_config_for(args, "retrieval", str(out)), k)
            for k in (
                "search_mode",
                "retrieval_k",
                "reward_weights",
                "beta",
                "temperature",
                "save_total_limit",
            )
        },
        "format_warmup": warm,
        "warm_start_effect": warm_effect,
        "arms": results_arms,
        "comparisons": comparisons,
        "evaluation_time": evals_time,
        "phases": phases,
        "measured_costs_and_projection": projection,
        "total_time": total.read(),
        "load_average": load,
        "figure_title": (
            f"SmolLM2-135M via training.launch: {args.max_steps} GRPO steps x {args.generations} "
            f"generations x {args.prompts_per_step} prompts, format warm-up {args.format_warmup_steps} "
            "steps (disjoint world)"
        ),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    if results_arms:
        plot(results, out / "learning_check_real.png")
        if args.figure:
            Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(out / "learning_check_real.png", args.figure)
    print(json.dumps({"total": results["total_time"], "projection": projection}, indent=2))
    return results


def _folder_bytes(folder: Path | None) -> int | None:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder else None


def _timing(info: dict) -> dict:
    return {
        k: info[k] for k in ("wall_s", "cpu_s", "trajectories", "seconds_per_trajectory", "prefix_violations")
    }


def project(args, warm: dict | None, arms: dict, evals: list[dict]) -> dict:
    """Seconds per unit measured in this run, and the wall time they imply for the full run
    (``--full-*``) on this machine: a linear projection from the measured medians (same batch shape and
    budgets as this run; trajectory lengths change as the policy learns, which it cannot foresee)."""
    step_s = [c["step_costs"]["median_step_s"] for c in arms.values() if c["step_costs"]["median_step_s"]]
    startup = [
        c["step_costs"]["startup_s"] for c in arms.values() if c["step_costs"]["startup_s"] is not None
    ]
    saves = [g for c in arms.values() for g in c["step_costs"]["between_steps_s"]]
    traj_s = [e["seconds_per_trajectory"] for e in evals if e["trajectories"]]
    m = {
        "grpo_seconds_per_step": _median(step_s),
        "grpo_seconds_per_step_by_arm": {a: c["step_costs"]["step_s"] for a, c in arms.items()},
        "launcher_startup_seconds": _median(startup),
        "seconds_between_steps_not_step_time (checkpoint save)": _median(saves),
        "eval_seconds_per_trajectory": _median(traj_s),
        "warmup_seconds_per_step": warm["seconds_per_step"] if warm else None,
        "checkpoint_bytes": max((c["checkpoint_bytes"] or 0 for c in arms.values()), default=None),
        "batch": f"{args.generations} generations x {args.prompts_per_step} prompts per step",
        "budgets": (
            f"{args.max_rounds} rounds, {args.round_tokens} tokens/round, "
            f"{args.completion_tokens} per trajectory"
        ),
    }
    if m["grpo_seconds_per_step"] is None or m["eval_seconds_per_trajectory"] is None:
        return {"measured": m, "projection": None}
    n_evals = args.full_steps // args.full_eval_every + 1
    per_arm = (
        (m["launcher_startup_seconds"] or 0)
        + args.full_steps * m["grpo_seconds_per_step"]
        + (n_evals - 1) * (m["seconds_between_steps_not_step_time (checkpoint save)"] or 0)
        + n_evals * args.full_heldout * args.full_eval_samples * m["eval_seconds_per_trajectory"]
    )
    warm_s = args.full_warmup_steps * (m["warmup_seconds_per_step"] or 0)
    total = warm_s + len(ARMS) * per_arm
    return {
        "measured": m,
        "projection": {
            "full_run": (
                f"{args.full_warmup_steps} warm-up steps; {len(ARMS)} arms x {args.full_steps} GRPO steps, "
                f"evaluation every {args.full_eval_every} steps on {args.full_heldout} held-out items x "
                f"{args.full_eval_samples} samples"
            ),
            "warmup_s": round(warm_s),
            "per_arm_s": round(per_arm),
            "total_s": round(total),
            "total_hours": round(total / 3600, 1),
            "checkpoint_disk_gb": round(len(ARMS) * (n_evals - 1) * (m["checkpoint_bytes"] or 0) / 1e9, 1),
        },
    }


if __name__ == "__main__":
    main()
