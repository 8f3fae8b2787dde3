"""Evaluation group: per-benchmark results of every checkpoint in every mode, and the auditable report.

- ``eval_results[benchmark]``: the benchmark's evaluation items (the splits the ``split_use`` asset, an
  input, reserves for evaluation; never an item trained on, checked) answered by each checkpoint (base,
  stage 1, stage 2) in
  each mode (direct, RwR, RwR + CDIR, training-free RAG, random-retriever control) through the training
  rollout (:mod:`training.evaluation.evaluate`), with the text KB and the CDIR image index pinned to their
  tags.
- ``eval_report``: Markdown and a self-contained HTML page with plots (:mod:`training.evaluation.report`),
  under ``reports/<run id>/`` of the storage root, its Markdown in the materialization metadata and the
  HTML's path
  as ``report_html``; a lineage header names checkpoint manifests, KB tag and embedder, benchmark versions
  and the code version. In ``smoke`` it says that the scores come from a tiny model and are chance-level.
"""

import hashlib
import io
import json
import tempfile
from pathlib import Path

import polars as pl
from dagster import (
    AllPartitionMapping,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    Config,
    Failure,
    MetadataValue,
    StaticPartitionsDefinition,
    asset,
)
from pydantic import Field

from assets.common import chain
from assets.common.audit import MODEL_ASSETS, lineage_summary
from assets.common.backfill import PER_PARTITION, WHOLE
from assets.common.gates import Publication, publish_or_refuse
from assets.common.metadata import check_result, content_version, table_metadata
from assets.common.records import quarantine_frame
from assets.common.resources import (
    KnowledgeModelsResource,
    SourcesResource,
    StorageResource,
    TrainingResource,
)
from retrieval.pointers import KbPointer
from storage.pointers import ModelPointer
from storage.provenance import git_commit
from storage.root import Storage
from training.evaluation.modes import MODES

from .promotion import (
    RESULTS_SHA256,
    BaselineUnverified,
    arm,
    baseline_parts,
    decide_promotion,
    promoted_baseline,
)

# benchmark partition -> (source table, dataset filter, evaluation splits or None for the split-use decision)
BENCHMARKS = {
    "vqa_rad": ("vqa_items", "vqa_rad", ["test"]),
    "slake": ("vqa_items", "slake", ["test"]),
    "medqa": ("text_qa_items", "medqa", None),
    "pubmedqa": ("text_qa_items", "pubmedqa", ["test"]),
    "ecbench": ("ecbench", None, ["test"]),
    "mmmu_hm": ("vqa_items", "mmmu_hm", ["validation", "test"]),
    "medxpertqa_mm": ("vqa_items", "medxpertqa_mm", ["test"]),
    "pmc_vqa": ("vqa_items", "pmc_vqa", ["test"]),
    "omnimedvqa": ("vqa_items", "omnimedvqa", None),
    "path_vqa": ("vqa_items", "path_vqa", ["test"]),
}
eval_benchmarks = StaticPartitionsDefinition(list(BENCHMARKS))
CHECKPOINTS = ("base", "stage1", "stage2")


class EvalConfig(Config):
    """Run knobs of ``eval_results`` (one run = one benchmark partition)."""

    checkpoints: list[str] = Field(
        default_factory=lambda: list(CHECKPOINTS), description="base, stage1, stage2"
    )
    modes: list[str] = Field(default_factory=lambda: list(MODES), description=", ".join(MODES))
    max_items: int | None = Field(
        default=None, description="at most this many items (seeded choice; None: all)"
    )
    batch_size: int = Field(default=8, description="items per rollout call")
    cdir_lambda: float = Field(
        default=0.8, description="CDIR triggers when the answer confidence is below this"
    )
    cdir_k: int = Field(default=1, description="image cases appended by CDIR")
    max_rounds: int = Field(default=3, description="generation rounds (retrieval after all but the last)")
    retrieval_k: int = Field(default=3, description="passages per query")
    max_new_tokens_per_round: int = Field(
        default=256, description="token budget of a CDIR regeneration (on top of its first pass)"
    )
    max_completion_tokens: int = Field(
        default=1024,
        description="sampled tokens per trajectory, the same for every mode: rounds share it with no "
        "per-round cap (direct may use all of it in its one round, rwr over its rounds)",
    )
    search_mode: str = Field(default="dense", description="dense, lexical or hybrid")
    seed: int = Field(default=0, description="item choice, sampling and random-retriever seed")
    judge_model: str | None = Field(
        default=None,
        description="optional open-answer judge: a model folder or "
        "a hub id (None: no judge; judge_* columns stay null)",
    )
    judge_revision: str | None = Field(default=None, description="the judge's pinned 40-hex hub commit")

    def rollout_settings(self):
        """The rollout budgets (``training.rollout.RolloutSettings``; the same field names)."""
        from training.rollout import RolloutSettings

        return RolloutSettings(
            max_rounds=self.max_rounds,
            retrieval_k=self.retrieval_k,
            max_new_tokens_per_round=self.max_new_tokens_per_round,
            max_completion_tokens=self.max_completion_tokens,
            search_mode=self.search_mode,
        )


def benchmark_frame(
    benchmark: str, vqa: pl.DataFrame, text_qa: pl.DataFrame, ecbench: pl.DataFrame, split_use: pl.DataFrame
) -> tuple[pl.DataFrame, list[str]]:
    """The rows of ``benchmark``'s source table and the splits it is evaluated on (from the split-use
    decisions, :meth:`training.data.SplitUse.evaluated_splits`, when the benchmark names none). A dataset
    decided "train" only is never evaluated: that raises."""
    from training.data import SplitUse

    table, dataset, splits = BENCHMARKS[benchmark]
    frame = {"vqa_items": vqa, "text_qa_items": text_qa, "ecbench": ecbench}[table]
    if dataset is not None:
        frame = frame.filter(pl.col("dataset") == dataset) if frame.height else frame
    use = SplitUse.from_frame(split_use)
    if use.trained_only(dataset or benchmark):
        reason = next(d["reason"] for d in use.decisions if d["dataset"] == (dataset or benchmark))
        raise Failure(
            f"eval_results[{benchmark}]: the split-use decisions train on {dataset or benchmark} "
            f"({reason}); it is never evaluated. Change no_train_split of split_use."
        )
    if splits is None:
        splits = use.evaluated_splits(dataset or benchmark)
    if frame.is_empty():
        raise Failure(
            f"eval_results[{benchmark}]: no rows of {table}[{dataset}] are published; materialize it first"
        )
    return frame, splits


def _model(row: pl.DataFrame, store: Storage, cache: str):
    from training.tiny_model import load_policy

    return load_policy(
        ModelPointer.from_row(row).path,
        cache_dir=cache,
        storage_options=store.s3.s3fs_kwargs() if store.is_s3 else None,
    )


def _manifest_hash(row: pl.DataFrame) -> str:
    return chain.manifest_hash(row)


@asset(
    backfill_policy=PER_PARTITION,
    partitions_def=eval_benchmarks,
    group_name="evaluation",
    code_version="eval_results.v3",
    io_manager_key="table_io",
    kinds={"polars", "parquet"},
    ins={
        "vqa_items": AssetIn(partition_mapping=AllPartitionMapping()),
        "text_qa_items": AssetIn(partition_mapping=AllPartitionMapping()),
        "ecbench": AssetIn(),
        "split_use": AssetIn(),
        "stage1_items": AssetIn(),
        "stage2_items": AssetIn(),
        "base_model": AssetIn(),
        "stage1_checkpoint": AssetIn(),
        "stage2_checkpoint": AssetIn(),
        "kb_text_index": AssetIn(),
        "kb_image_index": AssetIn(),
    },
    check_specs=[
        AssetCheckSpec(
            "eval_items_not_trained_on",
            asset="eval_results",
            blocking=True,
            partitions_def=eval_benchmarks,
            description="no evaluated item is a training item (normalized question text, image id)",
        ),
        AssetCheckSpec(
            "eval_results_complete",
            asset="eval_results",
            blocking=True,
            partitions_def=eval_benchmarks,
            description="one row per item, checkpoint and mode; KB and image index pinned; "
            "no rollout broke the prefix property",
        ),
    ],
    pool="gpu",
    op_tags={"medrwr/kind": "evaluation"},
)
def eval_results(
    context: AssetExecutionContext,
    config: EvalConfig,
    storage: StorageResource,
    kb_models: KnowledgeModelsResource,
    training: TrainingResource,
    vqa_items: pl.DataFrame,
    text_qa_items: pl.DataFrame,
    ecbench: pl.DataFrame,
    split_use: pl.DataFrame,
    stage1_items: pl.DataFrame,
    stage2_items: pl.DataFrame,
    base_model: pl.DataFrame,
    stage1_checkpoint: pl.DataFrame,
    stage2_checkpoint: pl.DataFrame,
    kb_text_index: pl.DataFrame,
    kb_image_index: pl.DataFrame,
):
    """Per-item predictions, confidences, retrieval traces and CDIR of every checkpoint and mode on one
    benchmark."""
    from PIL import Image

    from retrieval.search import ImageRetriever, Retriever
    from training.evaluation.evaluate import applicable_modes, evaluate
    from training.evaluation.items import benchmark_items
    from training.evaluation.judge import load_judge

    benchmark = context.partition_key
    store = storage.get()
    frame, splits = benchmark_frame(benchmark, vqa_items, text_qa_items, ecbench, split_use)
    items = benchmark_items(frame, benchmark, splits=splits)
    if config.max_items and items.height > config.max_items:
        items = items.sample(config.max_items, seed=config.seed).sort("item_id")
    version = content_version(items)
    models = {"base": base_model, "stage1": stage1_checkpoint, "stage2": stage2_checkpoint}
    unknown = sorted(set(config.checkpoints) - set(models))
    if unknown:
        raise Failure(f"eval_results: unknown checkpoints {unknown}; use {list(models)}")
    kb_text, kb_image = KbPointer.from_row(kb_text_index), KbPointer.from_row(kb_image_index)
    text = Retriever.from_pointer(kb_text, store.kb_location(kb_text.db), kb_models.text_embedder())
    images = ImageRetriever.from_pointer(kb_image, store.kb_location(kb_image.db), kb_models.image_embedder())

    def load_image(image_id: str):
        return Image.open(io.BytesIO(store.get_image(image_id))).convert("RGB")

    judge = load_judge(config.judge_model, config.judge_revision)  # None unless configured; fails loudly
    modes = applicable_modes(items, config.modes)
    if set(modes) != set(config.modes):
        context.log.info(
            f"eval_results[{benchmark}]: no item shows an image, so the image controls "
            f"{sorted(set(config.modes) - set(modes))} are not run"
        )
    benchmark_images = sorted({r for refs in items["image_refs"].to_list() for r in refs})
    frames = []
    with tempfile.TemporaryDirectory(
        dir=training.work_root() if Path(training.work_root()).exists() else None
    ) as cache:
        for label in config.checkpoints:
            model, processor = _model(models[label], store, cache)
            context.log.info(
                f"eval_results[{benchmark}]: {label} on {items.height} items, modes {list(modes)}"
            )
            frames.append(
                evaluate(
                    items,
                    model=model,
                    processor=processor,
                    retriever=text,
                    checkpoint=label,
                    checkpoint_version=_manifest_hash(models[label]),
                    benchmark=benchmark,
                    benchmark_version=version,
                    kb_tag=kb_text.tag,
                    modes=modes,
                    image_retriever=images,
                    image_loader=load_image,
                    image_index_tag=kb_image.tag,
                    batch_size=config.batch_size,
                    cdir_lambda=config.cdir_lambda,
                    cdir_k=config.cdir_k,
                    exclude_image_refs=benchmark_images,
                    seed=config.seed,
                    rollout_settings=config.rollout_settings(),
                    judge=judge,
                )
            )
            del model
    results = pl.concat(frames)
    from training.data import evaluation_leaks

    trained = pl.concat(
        [
            stage1_items.select("item_id", "question", "image_ref"),
            stage2_items.select("item_id", "question", "image_ref"),
        ]
    )
    evaluated = frame.filter(pl.col("item_id").is_in(items["item_id"].to_list()))
    refs = ["image_refs"] if "image_refs" in evaluated.columns else []
    leaks = evaluation_leaks(trained, evaluated.select("item_id", "question", *refs))
    expected = items.height * len(config.checkpoints) * len(modes)
    checks = [
        check_result(
            "eval_items_not_trained_on",
            leaks.height == 0,
            leaks=leaks.height,
            examples=[
                f"{r['train_item_id']} ~ {r['eval_item_id']} ({r['reason']})"
                for r in leaks.head(10).iter_rows(named=True)
            ],
        ),
        check_result(
            "eval_results_complete",
            results.height == expected and results["kb_tag"].drop_nulls().n_unique() <= 1,
            rows=results.height,
            expected=expected,
        ),
    ]
    summary = (
        results.group_by("checkpoint", "mode")
        .agg(pl.col("correct").mean().alias("accuracy"), pl.len().alias("n"))
        .sort("checkpoint", "mode")
    )
    pub = Publication(
        "eval_results",
        benchmark,
        results,
        quarantine_frame([], "eval_results", benchmark),
        metadata={
            **table_metadata(results, ("checkpoint", "mode")),
            "benchmark_version": version,
            "splits": MetadataValue.json(splits),
            "items": items.height,
            "kb_tag": kb_text.tag,
            "image_index_tag": kb_image.tag,
            "accuracy_by_checkpoint_and_mode": MetadataValue.md(_md(summary)),
            "items_per_s": float(results.height / max(1e-9, results["latency_s"].sum())),
        },
        data_version=content_version(results),
    )
    yield from publish_or_refuse(context, store, pub, checks)


def _md(frame: pl.DataFrame) -> str:
    from assets.common.metadata import preview_markdown

    return preview_markdown(frame, n=100, width=80)


@asset(
    backfill_policy=WHOLE,
    group_name="evaluation",
    code_version="eval_report.v4",
    io_manager_key="table_io",
    kinds={"html", "markdown"},
    ins={
        "eval_results": AssetIn(partition_mapping=AllPartitionMapping()),
        "base_model": AssetIn(),
        "stage1_checkpoint": AssetIn(),
        "stage2_checkpoint": AssetIn(),
        "kb_text_index": AssetIn(),
        "kb_image_index": AssetIn(),
    },
    check_specs=[
        AssetCheckSpec(
            "eval_report_written",
            asset="eval_report",
            blocking=True,
            description="report.md and a self-contained report.html with every plot embedded",
        )
    ],
)
def eval_report(
    context: AssetExecutionContext,
    storage: StorageResource,
    sources: SourcesResource,
    eval_results: pl.DataFrame,
    base_model: pl.DataFrame,
    stage1_checkpoint: pl.DataFrame,
    stage2_checkpoint: pl.DataFrame,
    kb_text_index: pl.DataFrame,
    kb_image_index: pl.DataFrame,
):
    """Accuracy per benchmark and mode with intervals, calibration, CDIR, checkpoints compared, lineage."""
    from training.evaluation.report import build_report, model_statement
    from training.evaluation.results import results_digest

    store = storage.get()
    versions = eval_results.group_by("benchmark").agg(pl.col("benchmark_version").first()).sort("benchmark")
    manifests = {"base": base_model, "stage1": stage1_checkpoint, "stage2": stage2_checkpoint}
    kb_text, kb_image = KbPointer.from_row(kb_text_index), KbPointer.from_row(kb_image_index)
    lineage = {
        "checkpoint_manifests": {
            k: f"{ModelPointer.from_row(v).path} (manifest {_manifest_hash(v)})"
            for k, v in manifests.items()
            if k in set(eval_results["checkpoint"].to_list())
        },
        "kb_tag": kb_text.tag,
        "embedder": kb_text.embedder.get("model_id", kb_text.embedder_json),
        "image_index_tag": kb_image.tag,
        "image_embedder": kb_image.embedder.get("model_id", ""),
        "benchmark_versions": dict(versions.iter_rows()),
        "code_version": git_commit(),
        "profile": sources.profile,
        "run_id": context.run.run_id,
    }
    lineage["audit"] = _audit_summary(context, store, lineage["checkpoint_manifests"])
    with store.staging(
        f"{context.run.run_id}-eval_report"
    ) as stage:  # discarded in a finally if the step fails
        with tempfile.TemporaryDirectory() as tmp:
            note = model_statement(ModelPointer.from_row(base_model).manifest)
            out = build_report(eval_results, lineage, tmp, smoke=sources.profile == "smoke", model_note=note)
            files = sorted(p for p in Path(tmp).rglob("*") if p.is_file())
            for path in files:
                stage.write_bytes(
                    path.read_bytes(), "reports", context.run.run_id, path.relative_to(tmp).as_posix()
                )
            # what the report vouches for, re-hashed by `python -m orchestration.audit report:<run id>`: every
            # file written beside it and the rows of each benchmark it was built from
            lineage["artefacts"] = {
                "files_sha256": {
                    p.relative_to(tmp).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files
                },
                "results_sha256": {
                    b: results_digest(eval_results.filter(pl.col("benchmark") == b))
                    for b in sorted(set(eval_results["benchmark"].to_list()))
                },
            }
            # what `python -m orchestration.audit report:<run id>` starts from when the instance is gone
            stage.write_bytes(
                json.dumps(lineage, indent=1, sort_keys=True).encode(),
                "reports",
                context.run.run_id,
                "lineage.json",
            )
            html = Path(out.html_path).read_text()
        html_uri = store.uri("reports", context.run.run_id, "report.html")
        embedded = html.count("data:image/png;base64,")
        row = pl.DataFrame(
            [
                {
                    "report_html": html_uri,
                    "report_md": store.uri("reports", context.run.run_id, "report.md"),
                    "html_sha256": hashlib.sha256(html.encode()).hexdigest(),
                    "plots": len(out.plot_paths),
                    "lineage": json.dumps(lineage, sort_keys=True),
                }
            ]
        )
        checks = [
            check_result(
                "eval_report_written",
                embedded >= len(out.plot_paths) > 0 and 'src="http' not in html and 'href="http' not in html,
                plots=len(out.plot_paths),
                embedded_images=embedded,
            )
        ]
        pub = Publication(
            "eval_report",
            None,
            row,
            quarantine_frame([], "eval_report", None),
            metadata={
                "report": MetadataValue.md(out.markdown),
                "report_html": MetadataValue.path(html_uri),
                "lineage": MetadataValue.json(lineage),
                "rows_reported": eval_results.height,
            },
            data_version=row["html_sha256"][0],
            stage=stage,
        )
        yield from publish_or_refuse(context, store, pub, checks)


def _audit_summary(context: AssetExecutionContext, store: Storage, cited: dict) -> dict:
    """The report's Audit section: per checkpoint, its manifest digest and the raw files of its upstream
    chain (counted from the input manifests, not re-hashed), and the command that verifies everything."""
    try:
        graph = context.repository_def.asset_graph
    except Exception:  # in-process materialize() of a list of assets sets no repository: the job's own graph
        graph = context.job_def.asset_layer.asset_graph
    return {
        "command": f"python -m orchestration.audit report:{context.run.run_id}",
        "checkpoints": {role: lineage_summary(store, graph, MODEL_ASSETS[role]) for role in cited},
    }


class PromotionConfig(Config):
    """Run knobs of the promotion gate."""

    mode: str = Field(default="rwr", description="the evaluation mode the checkpoints are compared in")
    margin: float = Field(
        default=0.02,
        description="promote when the CI's lower bound of (new - promoted) accuracy is at least -margin",
    )
    confidence_level: float = Field(default=0.95, description="paired bootstrap interval level")
    n_resamples: int = Field(default=10_000, description="bootstrap resamples")
    seed: int = Field(default=0, description="bootstrap seed")
    min_items: int = Field(default=30, description="fewest items evaluated for both checkpoints")


def report_disagrees(report: pl.DataFrame, stage2_version: str) -> str | None:
    """Why the published report cannot vouch for promoting the stage-2 checkpoint of manifest hash
    ``stage2_version`` (None when it can): it must cite that checkpoint's manifest."""
    if report.is_empty():
        return "no report is published"
    lineage = json.loads(report["lineage"][0] or "{}")
    cited = (lineage.get("checkpoint_manifests") or {}).get("stage2")
    if not cited:
        return "the published report did not evaluate a stage-2 checkpoint"
    if f"(manifest {stage2_version})" not in cited:
        return (
            f"the published report evaluated another stage-2 checkpoint ({cited}), "
            f"not manifest {stage2_version}"
        )
    return None


@asset(
    backfill_policy=WHOLE,
    group_name="evaluation",
    code_version="promoted_checkpoint.v3",
    io_manager_key="table_io",
    kinds={"polars", "parquet"},
    ins={
        "eval_results": AssetIn(partition_mapping=AllPartitionMapping()),
        "stage2_checkpoint": AssetIn(),
        # after the report, and only on a published one: a failed report (its gate, or its step) stops the
        # promotion in the same run, and the report must be about this candidate
        "eval_report": AssetIn(),
    },
    check_specs=[
        AssetCheckSpec(
            "promotion_no_worse",
            asset="promoted_checkpoint",
            blocking=True,
            description="paired bootstrap on the same items: the lower bound of the CI of "
            "(new - promoted) accuracy is at least -margin",
        )
    ],
)
def promoted_checkpoint(
    context: AssetExecutionContext,
    config: PromotionConfig,
    storage: StorageResource,
    eval_results: pl.DataFrame,
    stage2_checkpoint: pl.DataFrame,
    eval_report: pl.DataFrame,
):
    """The checkpoint serving uses: the stage-2 checkpoint, promoted only when its gate passes, after a
    published report that evaluated this very checkpoint. A refused candidate leaves the promoted pointer
    (and the results it was promoted with) as they were. The baseline is read verified
    (:func:`~assets.evaluation.promotion.promoted_baseline`); one that does not verify refuses the step."""
    store = storage.get()
    version = _manifest_hash(stage2_checkpoint)
    problem = report_disagrees(eval_report, version)
    if problem:
        raise Failure(f"promoted_checkpoint: {problem}; materialize eval_report for this checkpoint first")
    # a retraining chain promotes only on its own KB tag and checkpoint, every benchmark evaluated with them
    mixed = chain.chain_disagrees(eval_results, eval_report, version, dict(context.run.tags))
    if mixed:
        raise Failure(
            f"promoted_checkpoint: {mixed}; nothing was promoted (run tags {chain.KB_TAG}, "
            f"{chain.CHECKPOINT} pin the chain). Re-run the evaluation and report of this chain, or start a "
            "new retraining."
        )
    candidate = arm(eval_results, "stage2", config.mode).filter(pl.col("checkpoint_version") == version)
    try:  # the baseline as the last promotion committed it; never an unverified one, never "none" instead
        promoted = promoted_baseline(store)
    except BaselineUnverified as e:
        raise Failure(f"promoted_checkpoint: {e}.") from e
    decision = decide_promotion(
        candidate,
        promoted,
        margin=config.margin,
        confidence_level=config.confidence_level,
        n_resamples=config.n_resamples,
        seed=config.seed,
        min_items=config.min_items,
    )
    context.log.info(f"promotion of stage2 {version}: {decision.reason}")
    with store.staging(
        f"{context.run.run_id}-promoted_checkpoint"
    ) as stage:  # discarded in a finally if the step fails
        buf = io.BytesIO()
        candidate.write_parquet(buf)
        # one baseline file per promotion, named with its sha256 by the pointer row (committed by its gate
        # record): a promotion that dies before the commit leaves the committed baseline as it was
        stage.write_bytes(buf.getvalue(), *baseline_parts(context.run.run_id))
        row = stage2_checkpoint.with_columns(
            pl.lit(version).alias("checkpoint_version"),
            pl.lit(context.run.run_id).alias("promoted_by_run"),
            pl.lit(config.mode).alias("mode"),
            pl.lit(json.dumps(decision.as_metadata(), sort_keys=True)).alias("evidence"),
            pl.lit(hashlib.sha256(buf.getvalue()).hexdigest()).alias(RESULTS_SHA256),
        )
        evidence = {k: v for k, v in decision.as_metadata().items() if k != "passed"}
        checks = [check_result("promotion_no_worse", decision.passed, **evidence)]
        pub = Publication(
            "promoted_checkpoint",
            None,
            row,
            quarantine_frame([], "promoted_checkpoint", None),
            metadata={
                "checkpoint_version": version,
                "path": ModelPointer.from_row(row).path,
                "decision": decision.reason,
                "evidence": MetadataValue.json(decision.as_metadata()),
            },
            data_version=version,
            stage=stage,
            withdraw_previous=False,
        )
        yield from publish_or_refuse(context, store, pub, checks)
