"""Stage-2 difficulty stratification, run where the model trains: ``python -m training.stratify ...``
(``accelerate launch ... -m training.stratify ...`` on many processes, the same way as a stage).

The ``stage2_items`` asset selects the candidate items (k-means over image embeddings) in the Dagster run
process, which is a small CPU pod on Kubernetes; sampling the stage-1 policy on them needs the GPU, so the
asset launches this entry point through Pipes with the trainer's launcher, and reads back the per-item pass
rates (:func:`training.data.policy_pass_rates`) to drop the items the policy always solves.

What it samples with is the stage-2 trainer config built from ``--config`` (the same overrides as the
``stage2_checkpoint`` run): its rounds and token budgets
(:meth:`training.config.StageConfig.rollout_settings`), its temperature and seed, and the training rollout's
rules (:func:`training.trainer.stage_rollout`; nothing banned, no scoring pass), so a pass rate is the one
the stage's GRPO groups would see. Device and precision are decided here
(:func:`training.launch.device_settings`). On many processes each rank samples its own shard of the items
(``items[rank::world_size]``) with its full copy of the model (loaded before the config, so a ZeRO-3
accelerate config never partitions it: generation here is plain inference), and rank 0 gathers the shards
and writes the output.

Arguments: ``--items`` (candidate item table, Parquet), ``--items-storage-options``, ``--images-uri``,
``--kb-uri``, ``--kb-storage-options``, ``--kb-table``, ``--kb-tag``, ``--text-embedder``, ``--base-model``
(the stage-1 final model), ``--model-cache`` and ``--config`` as for :mod:`training.launch`; ``--samples``
(rollouts per item), ``--batch-size`` (trajectories per generate call, per process) and ``--output`` (a
local Parquet file of :data:`training.data.PASS_RATE_COLUMNS`, written whole by rank 0 with a
``<output>.json`` summary beside it: budgets, device, world size, KB version, timings).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

log = logging.getLogger("training.stratify")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from .launch import add_input_arguments

    p = argparse.ArgumentParser(prog="python -m training.stratify", description=__doc__.split("\n\n")[0])
    add_input_arguments(p)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--output", required=True)
    args = p.parse_args(argv)
    if args.samples < 1 or args.batch_size < 1:
        raise SystemExit(f"--samples and --batch-size must be >= 1, got {args.samples} and {args.batch_size}")
    if not args.output.endswith(".parquet"):
        raise SystemExit(f"--output {args.output!r}: give a .parquet file")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Sample the policy on every item; returns the summary (also ``<output>.json``; on rank 0 only the
    Parquet file is complete)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    import polars as pl
    from accelerate import PartialState
    from accelerate.utils import gather_object
    from transformers import set_seed

    from .config import stage_config
    from .data import PASS_RATE_COLUMNS, mcq_prompt_rows, policy_pass_rates
    from .launch import (
        ImageStore,
        _json_arg,
        device_settings,
        open_pipes,
        open_retriever,
        read_items,
        same_kb_version_on_every_rank,
    )
    from .tiny_model import load_policy
    from .trainer import stage_rollout

    item_opts = _json_arg("--items-storage-options", args.items_storage_options)
    overrides, device = device_settings(_json_arg("--config", args.config))
    output = Path(args.output)
    with ExitStack() as stack:
        items = read_items(args.items, item_opts)
        images = ImageStore(args.images_uri, item_opts) if args.images_uri else None
        retriever = open_retriever(args)
        # every model loads before the stage config exists: under a ZeRO-3 accelerate config, a model loaded
        # afterwards is partitioned across ranks (deepspeed.zero.Init), and this is plain inference
        model, processor = load_policy(
            args.base_model, cache_dir=args.model_cache, storage_options=item_opts, dtype="auto"
        )
        config = stage_config(2, str(output.parent / "stratify_trainer"), **overrides)  # process group
        state = PartialState()
        pipes = open_pipes(stack, state.is_main_process)
        pinned = same_kb_version_on_every_rank(retriever.version)
        set_seed(config.seed + state.process_index)
        model.to(state.device).eval()
        rows = mcq_prompt_rows(items, images.load if images is not None else None)
        mine = rows[state.process_index :: state.num_processes]
        rollout = stage_rollout(config, retriever, score=False, sync_rounds=False)
        started = time.time()

        def progress(done: int, total: int) -> None:
            line = f"rank {state.process_index}: {done}/{total} trajectories ({time.time() - started:.0f} s)"
            (pipes.log.info if pipes is not None else log.info)(line)

        shard = policy_pass_rates(rollout, model, processor, mine, args.samples, args.batch_size, progress)
        shards = gather_object([shard.to_dicts()]) if state.num_processes > 1 else [shard.to_dicts()]
        summary = {
            "items": items.height,
            "samples": args.samples,
            "batch_size_per_process": args.batch_size,
            "rollout_settings": asdict(rollout.settings),
            "temperature": config.temperature,
            "seed": config.seed,
            "config_hash": config.config_hash(),
            "device": device,
            "world_size": state.num_processes,
            "kb_version": retriever.version,
            "kb_version_per_rank": pinned,
            "seconds": time.time() - started,
        }
        if state.is_main_process:
            rows_back = [r for part in shards for r in part]
            rates = pl.DataFrame(rows_back, schema=PASS_RATE_COLUMNS).sort("item_id")
            if rates.height != items.height or rates["item_id"].n_unique() != items.height:
                raise SystemExit(
                    f"stratify: {rates.height} pass rates for {items.height} items; a rank lost its shard"
                )
            summary.update(
                mean_pass_rate=float(rates["pass_rate"].mean()),
                always_solved=int((rates["pass_rate"] >= 1.0).sum()),
                answered_share=float(rates["policy_answered"].sum() / rates["policy_samples"].sum()),
            )
            output.parent.mkdir(parents=True, exist_ok=True)
            partial = output.with_suffix(".partial")
            rates.write_parquet(partial)
            Path(f"{output}.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
            partial.replace(output)  # the Parquet file appears whole, after its summary
            if pipes is not None:
                pipes.report_custom_message({"stratify": summary})
        state.wait_for_everyone()
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
