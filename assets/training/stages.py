"""Training group, the two GRPO stages: ``stage1_checkpoint`` and ``stage2_checkpoint``, launched through
Pipes.

Each asset computes nothing itself: it launches ``python -m training.launch`` (or ``accelerate launch``)
through Dagster Pipes (a subprocess locally; a Kubernetes pod with GPU limits when
``MEDRWR_TRAIN_LAUNCHER=k8s``), streams the trainer's per-step metrics into the run's event log while it
trains, shares the ``gpu`` pool, retries a killed stage (which resumes from its last complete checkpoint in
the same work folder), and publishes the final model under ``models/<stage>/<run>/`` with its lineage
manifest. Their run knobs are :class:`assets.training.assets.StageRunConfig`.
"""

import json
from pathlib import Path

import polars as pl
from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    Backoff,
    Failure,
    MetadataValue,
    PipesSubprocessClient,
    RetryPolicy,
    asset,
)

from assets.common import chain
from assets.common.backfill import WHOLE
from assets.common.gates import Publication, publish_or_refuse
from assets.common.metadata import check_result, content_version
from assets.common.profiles import BUNDLED_PROFILES
from assets.common.resources import (
    KnowledgeModelsResource,
    SourcesResource,
    StorageResource,
    TrainingResource,
)
from retrieval.pointers import KbPointer
from storage.pointers import ModelPointer
from storage.provenance import git_commit

from .assets import StageRunConfig, _no_quarantine
from .launching import model_row, stage_command, upload_folder


# ---- GRPO stages -----------------------------------------------------------------------------------------
def _train(
    context: AssetExecutionContext,
    *,
    stage: int,
    config: StageRunConfig,
    items_table: str,
    parent: pl.DataFrame,
    kb: pl.DataFrame,
    storage: StorageResource,
    sources: SourcesResource,
    kb_models: KnowledgeModelsResource,
    training: TrainingResource,
    pipes: PipesSubprocessClient,
    item_versions: dict[str, str],
):
    """Launch one stage through Pipes, then publish its final model (pointer table + folder under the
    root)."""
    store = storage.get()
    role = f"stage{stage}"
    # one work folder per run family: a retried (killed) stage finds its checkpoints and resumes
    run_key = context.run.tags.get("dagster/root_run_id") or context.run.run_id
    work = Path(training.work_root()) / role / run_key
    work.mkdir(parents=True, exist_ok=True)
    s3_opts = store.s3.s3fs_kwargs() if store.is_s3 else None
    medquad = slake_kg = pubmedqa = None
    if stage == 2:
        medquad = _local_copy(sources.source("medquad"), "medquad_qa.jsonl.gz", work / "lexicon")
        slake_kg = str(
            Path(_local_copy(sources.source("slake"), "KG_mvqa-kg/en_disease.csv", work / "lexicon")).parent
        )
        for name in ("en_organ.csv", "en_organ_rel.csv"):
            _local_copy(sources.source("slake"), f"KG_mvqa-kg/{name}", work / "lexicon")
        # PubMedQA's MeSH headings grow the lexicon (coverage of gold answers 15.7 % -> 39.6 % on MedQA)
        if sources.source("pubmedqa").exists("ori_pqal.json"):
            pubmedqa = _local_copy(sources.source("pubmedqa"), "ori_pqal.json", work / "lexicon")
        else:
            context.log.warning(
                "stage2: no pubmedqa/ori_pqal.json in the sources; the query reward's lexicon is built "
                "from MedQuAD and the SLAKE KG only (fewer gold answers have an entity)"
            )
    parent_model, kb_pointer = ModelPointer.from_row(parent), KbPointer.from_row(kb)
    lineage = {
        "items_table": items_table,
        "item_data_versions": item_versions,
        "dagster_run_id": context.run.run_id,
        "parent_model": parent_model.path,
        "parent_weights_sha256": parent_model.weights_sha256,
        "kb_embedder": kb_pointer.embedder_json,
    }
    command = stage_command(
        stage=stage,
        items_uri=store.uri(*store.table_parts(items_table)),
        images_uri=store.uri("images"),
        storage_options=s3_opts,
        kb_uri=store.lancedb_uri(kb_pointer.db),
        kb_storage_options=store.lancedb_storage_options(),
        kb_table=kb_pointer.table,
        kb_tag=kb_pointer.tag,
        text_embedder=kb_models.text_model,
        image_embedder=kb_models.image_model,
        base_model=parent_model.path,
        model_cache=str(work / "model_cache"),
        output_dir=str(work / "out"),
        overrides=config.overrides(),
        lineage=lineage,
        git_commit=git_commit(),
        medquad=medquad,
        slake_kg=slake_kg,
        pubmedqa=pubmedqa,
        accelerate_config=training.accelerate_config_for(sources.profile),
        # the bundled profiles run stage 2 as plumbing with the offline random-weight image embedder; any
        # other profile must configure a pretrained one (the trainer refuses a random one)
        allow_random_image_embedder=sources.profile in BUNDLED_PROFILES,
    )
    context.log.info(f"{role}: launching {' '.join(command[:4])} ... (work folder {work})")
    invocation = training.launch(context, command, pipes)
    results = invocation.get_results()
    reported = results[0].metadata if results else {}
    # every step once, in order: a resumed trainer first reports the steps restored from its checkpoint
    by_step = {
        m["step"]: m for m in invocation.get_custom_messages() if isinstance(m, dict) and "metrics" in m
    }
    steps = [by_step[k] for k in sorted(by_step)]
    final = work / "out" / "final"
    manifest_file = final / "medrwr_lineage.json"
    if not manifest_file.exists():
        raise Failure(f"{role}: the trainer exited without a final model at {final}; see the run's logs")
    manifest = json.loads(manifest_file.read_text())
    with store.staging(
        f"{context.run.run_id}-{role}"
    ) as stage_store:  # discarded in a finally if the step fails
        path = upload_folder(final, stage_store, "models", role, context.run.run_id)
        row = model_row(role, parent_model.path, path, manifest.get("weights_sha256"), manifest)
        steps_ok = int(manifest.get("global_step") or 0) > 0
        checks = [
            check_result(
                f"{role}_trained",
                steps_ok and bool(manifest.get("weights_sha256")),
                global_step=int(manifest.get("global_step") or 0),
                resumed_from=str(manifest.get("resumed_from")),
            )
        ]
        pub = Publication(
            f"{role}_checkpoint",
            None,
            row,
            _no_quarantine(f"{role}_checkpoint"),
            metadata={
                **{k: v for k, v in reported.items() if k != "path"},
                "path": path,
                "global_step": int(manifest.get("global_step") or 0),
                "config_hash": manifest.get("config_hash", ""),
                "kb_tag": kb_pointer.tag,
                "lineage": MetadataValue.json(manifest),
                "work_folder": str(work),
                "metrics_by_step": MetadataValue.md(_metrics_table(steps)),
                **{f"last/{k}": float(v) for k, v in (steps[-1]["metrics"] if steps else {}).items()},
            },
            data_version=manifest.get("weights_sha256") or manifest.get("config_hash"),
            stage=stage_store,
        )
        yield from publish_or_refuse(context, store, pub, checks)
        if stage == 2:  # the checkpoint this retraining chain evaluates and may promote (assets.common.chain)
            context.instance.add_run_tags(context.run.run_id, {chain.CHECKPOINT: chain.manifest_hash(row)})


METRICS_SHOWN = (
    "reward",
    "rewards/accuracy/mean",
    "rewards/format/mean",
    "rollout/query_rate",
    "rollout/retrieval_calls",
    "rollout/rounds",
    "rollout/prefix_violations",
    "kl",
    "entropy",
    "clip_ratio/region_mean",
    "frac_reward_zero_std",
    "train/step_time_s",
    "train/tokens_per_s",
)


def _metrics_table(steps: list[dict]) -> str:
    """The per-step metrics the trainer streamed through Pipes, as a Markdown table."""
    if not steps:
        return "no step metrics were reported"
    cols = [c for c in METRICS_SHOWN if any(c in s["metrics"] for s in steps)]
    lines = ["| step | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for s in steps:
        label = f"{s['step']} (restored)" if s.get("restored") else str(s["step"])
        lines.append(
            f"| {label} | " + " | ".join(f"{s['metrics'].get(c, float('nan')):.4g}" for c in cols) + " |"
        )
    return "\n".join(lines)


def _local_copy(src, rel: str, folder: Path) -> str:
    """A local copy of one source file (the lexicon builder reads local files)."""
    target = folder / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        target.write_bytes(src.read_bytes(rel))
    return str(target)


TRAINING_RETRY = RetryPolicy(max_retries=2, delay=5, backoff=Backoff.LINEAR)


@asset(
    backfill_policy=WHOLE,
    group_name="training",
    code_version="stage1_checkpoint.v1",
    io_manager_key="table_io",
    pool="gpu",
    retry_policy=TRAINING_RETRY,
    kinds={"pytorch", "trl"},
    ins={"stage1_items": AssetIn(), "base_model": AssetIn(), "kb_text_index": AssetIn()},
    check_specs=[
        AssetCheckSpec(
            "stage1_trained",
            asset="stage1_checkpoint",
            blocking=True,
            description="the stage ran at least one optimizer step and saved safetensors weights",
        )
    ],
    op_tags={"medrwr/kind": "training"},
)
def stage1_checkpoint(
    context: AssetExecutionContext,
    config: StageRunConfig,
    stage1_items: pl.DataFrame,
    base_model: pl.DataFrame,
    kb_text_index: pl.DataFrame,
    storage: StorageResource,
    sources: SourcesResource,
    kb_models: KnowledgeModelsResource,
    training: TrainingResource,
    pipes_subprocess_client: PipesSubprocessClient,
):
    """GRPO stage 1 (accuracy + format rewards) on the text MCQs, from the base model."""
    yield from _train(
        context,
        stage=1,
        config=config,
        items_table="stage1_items",
        parent=base_model,
        kb=kb_text_index,
        storage=storage,
        sources=sources,
        kb_models=kb_models,
        training=training,
        pipes=pipes_subprocess_client,
        item_versions={"stage1_items": content_version(stage1_items)},
    )


@asset(
    backfill_policy=WHOLE,
    group_name="training",
    code_version="stage2_checkpoint.v1",
    io_manager_key="table_io",
    pool="gpu",
    retry_policy=TRAINING_RETRY,
    kinds={"pytorch", "trl"},
    ins={"stage2_items": AssetIn(), "stage1_checkpoint": AssetIn(), "kb_text_index": AssetIn()},
    check_specs=[
        AssetCheckSpec(
            "stage2_trained",
            asset="stage2_checkpoint",
            blocking=True,
            description="the stage ran at least one optimizer step and saved safetensors weights",
        )
    ],
    op_tags={"medrwr/kind": "training"},
)
def stage2_checkpoint(
    context: AssetExecutionContext,
    config: StageRunConfig,
    stage2_items: pl.DataFrame,
    stage1_checkpoint: pl.DataFrame,
    kb_text_index: pl.DataFrame,
    storage: StorageResource,
    sources: SourcesResource,
    kb_models: KnowledgeModelsResource,
    training: TrainingResource,
    pipes_subprocess_client: PipesSubprocessClient,
):
    """GRPO stage 2 (all four rewards) on the multimodal MCQs, from the stage-1 checkpoint."""
    yield from _train(
        context,
        stage=2,
        config=config,
        items_table="stage2_items",
        parent=stage1_checkpoint,
        kb=kb_text_index,
        storage=storage,
        sources=sources,
        kb_models=kb_models,
        training=training,
        pipes=pipes_subprocess_client,
        item_versions={"stage2_items": content_version(stage2_items)},
    )
