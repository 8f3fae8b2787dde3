"""Entry point of a GRPO stage: ``python -m training.launch --stage 1|2 ...`` (``accelerate launch`` runs it
the same way: ``accelerate launch --config_file training/accelerate/zero2.yaml -m training.launch ...``).

Arguments (all plain values, so a Dagster asset can pass them through ``PipesSubprocessClient`` or
``PipesK8sClient``):

==========================  ========================================================================
``--stage``                 1 (format + accuracy rewards) or 2 (all four rewards)
``--items``                 stage item table (Parquet, columns of :mod:`training.data`), local or s3://
``--items-storage-options`` JSON object of fsspec/polars storage options for ``--items`` and ``--images-uri``
``--images-uri``            folder of content-addressed images (``<uri>/<id[:2]>/<id>``, the Storage layout)
``--kb-uri``                LanceDB database URI (local folder or s3://)
``--kb-storage-options``    JSON object of LanceDB storage options (``aws_endpoint``, ``allow_http`` ...)
``--kb-table``              KB table (default ``kb_text``)
``--kb-tag``                KB version tag (or number) the retriever is pinned to
``--text-embedder``         text embedder id the KB was built with (default: offline MiniLM)
``--image-embedder``        open_clip id for q_image (default offline ``ViT-S-32``; BiomedCLIP in full); a
                            random-weight one is refused unless ``--allow-random-image-embedder``
``--lexicon``               lexicon JSON (:meth:`training.lexicon.Lexicon.save`); or ``--medquad``,
                            ``--slake-kg`` and ``--pubmedqa`` (its MeSH headings) to build it (stage 2)
``--base-model``            hub id, local folder or s3:// prefix (stage 2: the stage-1 ``final`` folder)
``--model-cache``           local folder an s3:// model is synced into
``--output-dir``            checkpoints (``checkpoint-N``) and the final model (``final``)
``--config``                JSON object of StageConfig / GRPOConfig overrides (``{"max_steps": 2}``); the
                            ablation switches ``retriever`` (``"kb"``/``"random"``) and
                            ``train_on_inserted`` are set here too (ablations only, see
                            :mod:`training.config`; recorded as ``ablation`` in the manifest)
``--lineage``               JSON object merged into the lineage manifest (item data versions, run id ...)
``--git-commit``            code version for the manifest (default: ``git rev-parse HEAD`` if available)
==========================  ========================================================================

Behaviour: resumes from the newest *complete* checkpoint in ``--output-dir`` (one whose lineage manifest was
written, which happens after the trainer saved it), so a killed and restarted run loses no finished step.
Checkpoints and the final model are safetensors, each with ``medrwr_lineage.json`` (item versions, KB URI,
table, tag and embedder, base model, config hash, git commit). Under Dagster Pipes, rank 0 opens Pipes once
the stage config has set up the process group (an error before that, e.g. a bad item table, reaches Dagster
as the process's exit code and stderr), reports every logging step as a custom message (and a log line)
while training runs, and reports the asset materialization at the end; without Pipes the same metrics go
to the Python log.

Decided here, in the process that trains, not by the launcher: the device, precision and gradient
checkpointing (:func:`device_settings`; recorded as ``device`` and ``world_size`` in the manifest). Every
rank calls ``save_model`` for the final model (a collective under ZeRO-3); only rank 0 writes the processor,
the manifest and the Pipes report.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from storage.layout import image_key
from storage.provenance import git_commit

log = logging.getLogger("training.launch")

LINEAGE_FILE = "medrwr_lineage.json"
REPORTED_METRICS = (
    "reward",
    "reward_std",
    "frac_reward_zero_std",
    "kl",
    "entropy",
    "loss",
    "grad_norm",
    "learning_rate",
    "clip_ratio/region_mean",
    "clip_ratio/low_mean",
    "clip_ratio/high_mean",
    "completions/mean_length",
    "rollout/query_rate",
    "rollout/retrieval_calls",
    "rollout/rounds",
    "rollout/prefix_violations",
    "rollout/answered",
    "rollout/tokens_per_s",
    "train/step_time_s",
    "train/tokens_per_s",
)


def add_input_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments every process launched like a stage takes: the item table and images, the KB the
    retriever is pinned to, the policy and the trainer config (this module's table; also
    :mod:`training.stratify`)."""
    p.add_argument("--items", required=True)
    p.add_argument("--items-storage-options", default="{}")
    p.add_argument("--images-uri", default=None)
    p.add_argument("--kb-uri", required=True)
    p.add_argument("--kb-storage-options", default="{}")
    p.add_argument("--kb-table", default="kb_text")
    p.add_argument("--kb-tag", default=None)
    p.add_argument("--text-embedder", default=None)
    p.add_argument("--base-model", required=True)
    p.add_argument("--model-cache", default=None)
    p.add_argument("--config", default="{}")


def open_retriever(args: argparse.Namespace):
    """The KB retriever of ``args`` (:func:`add_input_arguments`), pinned to ``--kb-tag`` (a tag, or a
    version number)."""
    from retrieval.embedders import TextEmbedder
    from retrieval.search import Retriever
    from retrieval.store import KBLocation

    location = KBLocation(args.kb_uri, _json_arg("--kb-storage-options", args.kb_storage_options) or None)
    tag = int(args.kb_tag) if args.kb_tag and args.kb_tag.isdigit() else args.kb_tag
    return Retriever(location, TextEmbedder(args.text_embedder), table=args.kb_table, version=tag)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.launch", description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", type=int, choices=(1, 2), required=True)
    add_input_arguments(p)
    p.add_argument("--image-embedder", default="ViT-S-32")
    p.add_argument("--allow-random-image-embedder", action="store_true")
    p.add_argument("--lexicon", default=None)
    p.add_argument("--medquad", default=None)
    p.add_argument("--slake-kg", default=None)
    p.add_argument("--pubmedqa", default=None)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--lineage", default="{}")
    p.add_argument("--git-commit", default=None)
    return p.parse_args(argv)


def _json_arg(name: str, value: str) -> dict[str, Any]:
    try:
        out = json.loads(value)
    except json.JSONDecodeError as e:
        raise SystemExit(
            f"{name}: not valid JSON ({e}); pass a JSON object such as '{{\"max_steps\": 2}}'"
        ) from e
    if not isinstance(out, dict):
        raise SystemExit(f"{name}: expected a JSON object, got {type(out).__name__}")
    return out


def read_items(uri: str, storage_options: dict[str, Any]):
    """The stage item table (local or any fsspec URL; ``storage_options`` in fsspec spelling, the same as
    the image store's); an empty table is an error."""
    import fsspec
    import polars as pl

    with fsspec.open(uri, "rb", **(storage_options or {})) as fh:
        items = pl.read_parquet(fh)
    missing = {"item_id", "question", "options", "answer_label"} - set(items.columns)
    if missing:
        raise SystemExit(f"{uri}: missing columns {sorted(missing)}; expected the training.data item columns")
    if items.height == 0:
        raise SystemExit(f"{uri}: no items; the stage has nothing to train on")
    return items


class ImageStore:
    """Reads content-addressed images ``<uri>/<id[:2]>/<id>`` (:func:`storage.layout.image_key`; local or any
    fsspec URL) as PIL images."""

    def __init__(self, uri: str, storage_options: dict[str, Any] | None = None):
        import fsspec

        self.fs, self.root = fsspec.core.url_to_fs(uri, **(storage_options or {}))

    def load(self, image_id: str):
        from PIL import Image

        path = "/".join([self.root.rstrip("/"), *image_key(image_id)])
        if not self.fs.exists(path):
            raise FileNotFoundError(
                f"image {image_id} not found at {path}; was the item table built from this storage?"
            )
        return Image.open(io.BytesIO(self.fs.cat_file(path))).convert("RGB")


def trl_dataset(items, images: ImageStore | None):
    """A ``datasets.Dataset`` for GRPOTrainer: ``prompt`` (system + user messages), ``image`` (for stage-2
    rows), and the reward columns ``item_id``, ``answer_label``, ``answer``, ``options``, ``explanation``."""
    from datasets import Dataset

    from .protocol import build_messages

    rows = []
    has_images = "image_ref" in items.columns and items["image_ref"].null_count() < items.height
    if has_images and images is None:
        raise SystemExit("items reference images: pass --images-uri (the Storage images folder)")
    for r in items.iter_rows(named=True):
        img = images.load(r["image_ref"]) if has_images and r.get("image_ref") else None
        row = {
            "prompt": build_messages(
                r["question"], r["options"], has_image=img is not None, context=r.get("context")
            ),
            "item_id": r["item_id"],
            "question": r["question"],
            "answer_label": r["answer_label"],
            "answer": r.get("answer"),
            "options": list(r["options"]),
            "explanation": r.get("explanation"),
        }
        if has_images:
            row["image"] = img
        rows.append(row)
    return Dataset.from_list(rows)


def last_complete_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest ``checkpoint-N`` holding both ``trainer_state.json`` and the lineage manifest."""
    root = Path(output_dir)
    if not root.is_dir():
        return None
    done = [
        d
        for d in root.glob("checkpoint-*")
        if (d / "trainer_state.json").exists() and (d / LINEAGE_FILE).exists()
    ]
    return max(done, key=lambda d: int(d.name.split("-")[-1])) if done else None


def _file_sha256(path: str, storage_options: dict[str, Any]) -> str:
    import fsspec

    h = hashlib.sha256()
    with fsspec.open(path, "rb", **(storage_options or {})) as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_callbacks(lineage: dict[str, Any], pipes: Any):
    """The trainer callbacks: lineage manifest into each checkpoint, step timing, metric reporting."""
    from transformers import TrainerCallback

    class LineageAndMetrics(TrainerCallback):
        def __init__(self):
            self.step_start = time.perf_counter()
            self.last_tokens = 0
            self.step_time = 0.0
            self.tokens_per_s = 0.0

        def on_train_begin(self, args, state, control, **kw):
            # a resumed run starts from the checkpoint's token count (not 0: its first tokens/s would count
            # every earlier step's tokens), and reports the restored steps first, marked, so the stage's
            # per-step history is whole after a kill
            self.last_tokens = state.num_input_tokens_seen
            if not state.is_world_process_zero or state.global_step == 0:
                return
            for h in state.log_history:
                if "step" not in h or "loss" not in h:
                    continue
                metrics = {
                    k: float(v)
                    for k, v in h.items()
                    if isinstance(v, int | float) and (k in REPORTED_METRICS or k.startswith("rewards/"))
                }
                self._report({"step": h["step"], "time": time.time(), "restored": True, "metrics": metrics})

        def _report(self, payload: dict) -> None:
            line = f"step {payload['step']}{' (restored)' if payload.get('restored') else ''}: " + json.dumps(
                payload["metrics"], sort_keys=True
            )
            if pipes is not None:
                pipes.report_custom_message(payload)
                pipes.log.info(line)
            else:
                log.info(line)

        def on_step_begin(self, args, state, control, **kw):
            self.step_start = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.step_time = time.perf_counter() - self.step_start
            tokens = state.num_input_tokens_seen
            self.tokens_per_s = (tokens - self.last_tokens) / self.step_time if self.step_time > 0 else 0.0
            self.last_tokens = tokens

        def on_log(self, args, state, control, logs=None, **kw):
            if not state.is_world_process_zero or not logs or "train_runtime" in logs:
                return  # the end-of-training summary is not a training step
            logs = dict(
                logs, **{"train/step_time_s": self.step_time, "train/tokens_per_s": self.tokens_per_s}
            )
            metrics = {
                k: float(v)
                for k, v in logs.items()
                if isinstance(v, int | float) and (k in REPORTED_METRICS or k.startswith("rewards/"))
            }
            self._report({"step": state.global_step, "time": time.time(), "metrics": metrics})

        def on_save(self, args, state, control, **kw):
            if state.is_world_process_zero:
                ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if ckpt.is_dir():
                    (ckpt / LINEAGE_FILE).write_text(
                        json.dumps(dict(lineage, global_step=state.global_step), indent=2, sort_keys=True)
                    )

    return [LineageAndMetrics()]


def open_pipes(stack: ExitStack, is_main: bool):
    """The Pipes context on rank 0 of a Pipes-launched process, else None."""
    from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

    if not is_main or not PipesEnvVarParamsLoader().is_dagster_pipes_process():
        return None
    return stack.enter_context(open_dagster_pipes())


def build_query_reward(args: argparse.Namespace):
    """Stage 2's query-semantic reward: lexicon NER + open_clip image/text embedder."""
    from retrieval.embedders import ImageEmbedder

    from .lexicon import Lexicon, LexiconNER, build_lexicon
    from .rewards import QuerySemanticReward

    if args.lexicon:
        lexicon = Lexicon.load(args.lexicon)
    elif args.medquad or args.slake_kg or args.pubmedqa:
        lexicon = build_lexicon(args.medquad, args.slake_kg, args.pubmedqa)
    else:
        raise SystemExit("stage 2 needs --lexicon, or --medquad, --slake-kg and/or --pubmedqa to build it")
    embedder = ImageEmbedder(args.image_embedder)
    if embedder.random_weights and not args.allow_random_image_embedder:
        raise SystemExit(
            f"--image-embedder {args.image_embedder!r} has random weights: stage 2's query reward (q_image) "
            "would score noise. Pass a pretrained one (e.g. hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-"
            "vit_base_patch16_224, the full profile's), or --allow-random-image-embedder for a plumbing run "
            "(the smoke and small profiles pass it)"
        )
    return QuerySemanticReward(LexiconNER(lexicon), embedder), len(lexicon.terms)


def ablations(config) -> dict[str, Any]:
    """The ablation switches of ``config`` (:mod:`training.config`) that differ from production, by name."""
    from .config import ABLATION_DEFAULTS

    return {f: getattr(config, f) for f, d in ABLATION_DEFAULTS.items() if getattr(config, f) != d}


def same_kb_version_on_every_rank(version: Any) -> list[Any]:
    """Each rank's KB table version (rank order); every rank opens its own retriever, and a rank pinned to
    another version (a tag moved between two ranks' opens) would train on other passages: refused."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    versions = gather_object([version]) if PartialState().num_processes > 1 else [version]
    if len(set(map(str, versions))) > 1:
        raise SystemExit(f"the ranks' retrievers are pinned to different KB versions {versions}; relaunch")
    return versions


def device_settings(overrides: dict[str, Any], cuda: bool | None = None) -> tuple[dict[str, Any], str]:
    """``(overrides, device)``: the stage overrides completed with what *this* process sees, since the
    launcher (the Dagster run process, a CPU pod on Kubernetes) cannot know the trainer's hardware. Without
    a GPU: ``use_cpu``, no bf16, no gradient checkpointing (unless the overrides say otherwise). On a GPU
    without bf16 support: fp16 instead of bf16. ``cuda``: what to assume (default
    ``torch.cuda.is_available()``)."""
    import torch

    out = dict(overrides)
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if not cuda:
        for name, value in (("use_cpu", True), ("bf16", False), ("gradient_checkpointing", False)):
            out.setdefault(name, value)
        return out, "cpu"
    if "bf16" not in out and "fp16" not in out and not torch.cuda.is_bf16_supported():
        out.update(bf16=False, fp16=True)
    return out, f"cuda ({torch.cuda.device_count()} visible, {torch.cuda.get_device_name(0)})"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run one stage; returns the final manifest (also written to
    ``<output-dir>/final/medrwr_lineage.json``)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    from accelerate import PartialState

    from .config import stage_config
    from .tiny_model import load_policy
    from .trainer import build_trainer

    item_opts = _json_arg("--items-storage-options", args.items_storage_options)
    overrides, device = device_settings(_json_arg("--config", args.config))
    with ExitStack() as stack:
        items = read_items(args.items, item_opts)
        images = ImageStore(args.images_uri, item_opts) if args.images_uri else None
        dataset = trl_dataset(items, images)
        # the retriever's and the reward's own models load before the stage config exists: under ZeRO-3
        # with zero3_init_flag, every transformers model loaded once the config is built is partitioned
        # across ranks (deepspeed.zero.Init), which would give each rank an empty text embedder (the KB
        # refuses it: its weights no longer match the embedder the KB was built with)
        retriever = open_retriever(args)
        embedder = retriever.embedder
        query_reward, lexicon_terms = build_query_reward(args) if args.stage == 2 else (None, 0)
        config = stage_config(args.stage, args.output_dir, **overrides)  # sets up the process group
        # Pipes opens on rank 0 once the ranks are known: on CPU accelerate's state sees a single process
        # on every rank until the stage config has set up the process group
        pipes = open_pipes(stack, PartialState().is_main_process)
        pinned = same_kb_version_on_every_rank(retriever.version)
        model, processor = load_policy(
            args.base_model, cache_dir=args.model_cache, storage_options=item_opts, dtype="auto"
        )
        ablation = ablations(config)
        if ablation:
            log.warning("ABLATION run (not a production stage): %s", json.dumps(ablation, sort_keys=True))
        lineage = {
            "stage": args.stage,
            "items_uri": args.items,
            "items_sha256": _file_sha256(args.items, item_opts),
            "items_rows": items.height,
            "kb_uri": args.kb_uri,
            "kb_table": args.kb_table,
            "kb_tag": args.kb_tag,
            "kb_version": retriever.version,
            "kb_version_per_rank": pinned,
            "text_embedder": embedder.model_id,
            "image_embedder": args.image_embedder if args.stage == 2 else None,
            "image_embedder_random_weights": (
                bool(query_reward.image_embedder.random_weights) if query_reward is not None else None
            ),
            "lexicon_terms": lexicon_terms,
            "base_model": args.base_model,
            "config_hash": config.config_hash(),
            "config": config.hashed_values(),
            "reward_weights": config.reward_weights,
            "git_commit": git_commit(args.git_commit),
            "device": device,
            "world_size": PartialState().num_processes,
            "ablation": ablation or None,
            **_json_arg("--lineage", args.lineage),
        }
        trainer = build_trainer(
            model,
            processor,
            config,
            dataset,
            retriever,
            query_reward=query_reward,
            callbacks=make_callbacks(lineage, pipes),
        )
        resume = last_complete_checkpoint(args.output_dir)
        if resume is not None:
            log.info("resuming from %s", resume)
        started = time.time()
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        final = Path(args.output_dir) / "final"
        manifest = dict(
            lineage,
            global_step=trainer.state.global_step,
            resumed_from=str(resume) if resume else None,
            train_seconds=time.time() - started,
            train_loss=result.training_loss,
        )
        # every rank calls save_model: under ZeRO-3 gathering the sharded weights is a collective, and a
        # rank-0-only call would wait forever for the others; the trainer writes files on rank 0 only
        trainer.save_model(str(final))
        if trainer.accelerator.is_main_process:
            processor.save_pretrained(str(final))
            weights_file = final / "model.safetensors"
            manifest["weights_sha256"] = (
                hashlib.sha256(weights_file.read_bytes()).hexdigest() if weights_file.exists() else None
            )
            (final / LINEAGE_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
            if pipes is not None:
                meta = {
                    k: v for k, v in manifest.items() if isinstance(v, str | int | float) and k != "config"
                }
                meta["path"] = str(final)
                pipes.report_asset_materialization(
                    metadata=meta, data_version=manifest.get("weights_sha256") or manifest["config_hash"]
                )
    return manifest


if __name__ == "__main__":
    main(sys.argv[1:])
