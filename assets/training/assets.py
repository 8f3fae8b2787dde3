"""Training group: the base model, the stage item tables, and the two GRPO stages launched through Pipes.

- ``base_model``: in ``smoke`` a tiny Qwen2.5-VL built once from the bundled corpus (random weights); in ``full``
  a hub id, local path or S3 prefix (``MEDRWR_BASE_MODEL``, Qwen2.5-VL-7B-Instruct by default). Published as a
  one-row pointer table after a check that the model loads and answers an MCQ with one of its letters.
- ``stage1_items`` / ``stage2_items``: text MCQs (MedQA, MedMCQA training splits) and multimodal MCQs (closed
  ``vqa_items`` training questions picked by k-means over image embeddings, then stratified by sampling the
  stage-1 policy). A blocking check proves that no training item is an evaluation item, by normalized question
  text and by image content id; ECBench is never trained on. The split-use decisions (a dataset without a
  training split is trained on or evaluated on, never both) are published as ``split_use``.
- ``stage1_checkpoint`` / ``stage2_checkpoint``: the asset computes nothing itself: it launches
  ``python -m training.launch`` (or ``accelerate launch``) through Dagster Pipes (a subprocess locally; a
  Kubernetes pod with GPU limits when ``MEDRWR_TRAIN_LAUNCHER=k8s``), streams the trainer's per-step metrics
  into the run's event log while it trains, shares the ``gpu`` pool, retries a killed stage (which resumes from
  its last complete checkpoint in the same work folder), and publishes the final model under
  ``models/<stage>/<run>/`` with its lineage manifest.
"""


import json
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
from dagster import (
    AllPartitionMapping,
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    BackfillPolicy,
    Backoff,
    Config,
    Failure,
    MetadataValue,
    PipesSubprocessClient,
    RetryPolicy,
    asset,
)
from pydantic import Field

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
from storage.provenance import folder_digest, git_commit
from storage.root import Storage

from .launching import model_row, stage_command, upload_folder

EVAL_SPLITS = ("validation", "test")

WHOLE = BackfillPolicy.single_run()  # one run for the whole asset


class BaseModelConfig(Config):
    """Run knobs of ``base_model``."""

    model_ref: str | None = Field(default=None, description="hub id, local folder or s3:// prefix; unset: a tiny "
                                  "model built locally in smoke, MEDRWR_BASE_MODEL otherwise")
    tiny_hidden_size: int = Field(default=64, description="hidden size of the smoke model")
    tiny_layers: int = Field(default=2, description="layers of the smoke model")
    seed: int = Field(default=0, description="weight initialization seed of the smoke model")


class StageItemsConfig(Config):
    """Run knobs of the stage item tables."""

    datasets: list[str] = Field(default_factory=lambda: ["medqa", "medmcqa"], description="stage-1 datasets")
    no_train_split: dict[str, str] = Field(
        default_factory=lambda: {"medqa": "eval", "medmcqa": "train"},
        description="for a dataset without a training split in this profile: 'train' (all of it trains, never "
                    "evaluated) or 'eval' (never trained on). The bundled MedQA is its test set (evaluated), "
                    "MedMCQA its dev set (trained on).")
    limit: int | None = Field(default=None, description="at most this many items (None: all)")
    n_clusters: int = Field(default=2000, description="stage 2: k-means clusters over training images "
                            "(the paper's 2,000)")
    per_cluster: int = Field(default=1, description="stage 2: images kept per cluster")
    policy_samples: int = Field(default=4, description="stage 2: samples of the stage-1 policy per item for the "
                                "difficulty split (items it always solves are dropped)")
    seed: int = Field(default=0, description="shuffle and k-means seed")


class StageConfig(Config):
    """Run knobs of a GRPO stage; unset values keep ``training.config.StageConfig``'s defaults (the paper's)."""

    max_steps: int | None = Field(default=None, description="optimizer steps (None: one epoch)")
    num_generations: int | None = Field(default=None, description="completions per prompt (paper: 8)")
    per_device_train_batch_size: int | None = Field(default=None, description="completions per device step")
    gradient_accumulation_steps: int | None = Field(default=None, description="gradient accumulation")
    learning_rate: float | None = Field(default=None, description="peak learning rate (paper: 1e-6)")
    beta: float | None = Field(default=None, description="KL coefficient (paper: 1e-3)")
    max_rounds: int | None = Field(default=None, description="generation rounds (paper code: 3)")
    max_new_tokens_per_round: int | None = Field(default=None, description="token budget of one round")
    max_completion_length: int | None = Field(default=None, description="sampled tokens per trajectory")
    save_steps: int | None = Field(default=None, description="checkpoint every n steps (resume granularity)")
    search_mode: str | None = Field(default=None, description="dense, lexical or hybrid")
    seed: int | None = Field(default=None, description="trainer seed")

    def overrides(self) -> dict:
        """The set knobs, plus CPU settings when no GPU is present (bf16 and gradient checkpointing off)."""
        import torch

        out = {k: v for k, v in self.model_dump().items() if v is not None}
        if not torch.cuda.is_available():
            out.update(use_cpu=True, bf16=False, gradient_checkpointing=False)
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
    check_specs=[AssetCheckSpec("base_model_answers", asset="base_model", blocking=True,
                                description="the model loads and, forced after <answer>, names one option letter")],
)
def base_model(context: AssetExecutionContext, config: BaseModelConfig, storage: StorageResource,
               sources: SourcesResource, training: TrainingResource):
    """The policy every stage starts from (a pointer table: where the model is, its weights hash, manifest)."""
    from training.tiny_model import build_tiny_model, local_corpus

    store = storage.get()
    ref = config.model_ref or (None if sources.profile == "smoke" else training.base_model)
    stage = store.staging(f"{context.run.run_id}-base_model")
    if ref is None:
        with tempfile.TemporaryDirectory() as tmp:
            manifest = build_tiny_model(tmp, local_corpus(sources.data_root()), hidden_size=config.tiny_hidden_size,
                                        layers=config.tiny_layers, seed=config.seed)
            digest = folder_digest(tmp)[:16]
            path = upload_folder(tmp, stage, "models", "base", f"tiny-{digest}")
        row = model_row("base", "tiny-qwen2.5-vl (built from the bundled corpus)", path,
                        manifest["weights_sha256"], manifest)
    else:
        row = model_row("base", ref, ref, None, {"model_ref": ref})
    model = ModelPointer.from_row(row)
    answered, detail = _answers_an_mcq(model.path, stage, training)
    pub = Publication("base_model", None, row, _no_quarantine("base_model"),
                      metadata={"model_ref": model.model_ref, "path": model.path,
                                "weights_sha256": model.weights_sha256 or "", "random_weights": ref is None,
                                "manifest": MetadataValue.json(model.manifest)},
                      data_version=model.weights_sha256 or content_version(row), stage=stage)
    yield from publish_or_refuse(context, store, pub, [check_result("base_model_answers", answered, **detail)])


def _answers_an_mcq(path: str, store: Storage, training: TrainingResource) -> tuple[bool, dict]:
    """Load the model at ``path`` and force an answer to one MCQ: the most likely next token after
    ``<answer>`` must be one of the option letters' tokens (well-formed), whatever its content."""
    import torch

    from training.generation import Context, next_token_logprobs, token_ids
    from training.protocol import ANSWER_OPEN, build_messages
    from training.rollout import encode_prompts, letter_token_ids
    from training.tiny_model import load_policy

    with tempfile.TemporaryDirectory() as cache:
        model, processor = load_policy(_loadable(path, store, cache), cache_dir=cache,
                                       storage_options=store.s3.s3fs_kwargs() if store.is_s3 else None)
        [ctx] = encode_prompts(processor, [build_messages("Which vitamin deficiency causes scurvy?",
                                                          ["Vitamin A", "Vitamin C", "Vitamin D", "Vitamin K"])])
        tok = token_ids(processor.tokenizer)
        forced = Context(ctx.ids + tok(ANSWER_OPEN, add_special_tokens=False)["input_ids"], ctx.vision)
        with torch.no_grad():
            logprobs = next_token_logprobs(model, [forced], tok.pad_token_id, 1)[0]
        letters = letter_token_ids(tok, "ABCD")
        scores = {L: float(torch.logsumexp(logprobs[ids], 0)) for L, ids in letters.items() if ids}
        best = max(scores, key=scores.get) if scores else None
        return bool(best) and all(np.isfinite(list(scores.values()))), {
            "forced_answer": best or "", "letters_with_tokens": sorted(scores),
            "parameters": int(sum(p.numel() for p in model.parameters()))}


def _loadable(path: str, store: Storage, cache: str) -> str:
    """A path ``load_policy`` can read: staged model folders are not published yet, so read them from the
    staging area through the staged view."""
    if not path.startswith(store.root) or not hasattr(store, "area"):
        return path
    rel = path[len(store.root):].strip("/")
    local = Path(cache) / "staged"
    for f in store.area.find(rel):
        target = local / f
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(store.area.read_bytes(rel, f))
    return str(local)


# ---- stage items -----------------------------------------------------------------------------------------
def evaluation_items(text_qa: pl.DataFrame, vqa: pl.DataFrame, ecbench: pl.DataFrame, use) -> pl.DataFrame:
    """Every item that some benchmark may evaluate: the evaluation splits ``use`` decided for each dataset
    (validation/test for a dataset with a training split; everything for a dataset evaluated only; nothing for
    a dataset trained on only), validation/test of datasets ``use`` does not know, and every ECBench item
    (never trained on)."""
    decided = set(use.train) | set(use.evaluate)

    def pick(frame: pl.DataFrame) -> pl.DataFrame:
        if frame.is_empty():
            return frame
        cond = ~pl.col("dataset").is_in(list(decided)) & pl.col("split").is_in(list(EVAL_SPLITS))
        for dataset, splits in use.evaluate.items():
            cond = cond | ((pl.col("dataset") == dataset) & pl.col("split").is_in(splits))
        return frame.filter(cond)

    frames = []
    for frame, refs in ((pick(text_qa), pl.lit([], pl.List(pl.Utf8))), (pick(vqa), pl.col("image_refs"))):
        if frame.height:
            frames.append(frame.select("item_id", "dataset", "question", refs.alias("image_refs")))
    if ecbench.height:
        frames.append(ecbench.select("item_id", pl.lit("ecbench").alias("dataset"), "question", "image_refs"))
    return pl.concat(frames) if frames else pl.DataFrame(schema={"item_id": pl.Utf8, "dataset": pl.Utf8,
                                                                 "question": pl.Utf8, "image_refs": pl.List(pl.Utf8)})


def _leakage_check(items: pl.DataFrame, evaluation: pl.DataFrame) -> AssetCheckResult:
    """A training item is an evaluation item when it shows the same image (content id), or, for questions
    without an image, asks the same normalized question. Image questions with a generic text ("Is this an
    MRI?") about different images are different items: for them the image decides."""
    from training.data import leakage

    with_image_train = set(items.filter(pl.col("image_ref").is_not_null())["item_id"].to_list())
    with_image_eval = set(evaluation.filter(pl.col("image_refs").list.len() > 0)["item_id"].to_list())
    leaks = leakage(items, evaluation).filter(
        (pl.col("reason") == "image")
        | ~(pl.col("train_item_id").is_in(list(with_image_train)) | pl.col("eval_item_id").is_in(list(with_image_eval))))
    return check_result("no_evaluation_items", leaks.height == 0, leaks=leaks.height,
                  evaluation_items=evaluation.height,
                  examples=[f"{r['train_item_id']} ~ {r['eval_item_id']} ({r['reason']})"
                            for r in leaks.head(10).iter_rows(named=True)])


_ALL = AssetIn(partition_mapping=AllPartitionMapping())


@asset(
    backfill_policy=WHOLE,
    group_name="training",
    code_version="stage1_items.v1",
    io_manager_key="table_io",
    kinds={"polars", "parquet"},
    ins={"text_qa_items": _ALL, "vqa_items": _ALL, "ecbench": AssetIn()},
    check_specs=[
        AssetCheckSpec("stage1_items_not_empty", asset="stage1_items", blocking=True,
                       description="at least one training MCQ"),
        AssetCheckSpec("no_evaluation_items", asset="stage1_items", blocking=True,
                       description="no training item is an evaluation item (normalized question text, image id)"),
    ],
)
def stage1_items(context: AssetExecutionContext, config: StageItemsConfig, storage: StorageResource,
                 text_qa_items: pl.DataFrame, vqa_items: pl.DataFrame, ecbench: pl.DataFrame):
    """Stage-1 text MCQs (training splits of MedQA and MedMCQA, per the split-use decisions)."""
    from training.data import split_use
    from training.data import stage1_items as select

    use = split_use(pl.concat([text_qa_items.select("dataset", "split"), vqa_items.select("dataset", "split")]),
                    config.no_train_split)
    try:
        items = select(text_qa_items, use, datasets=config.datasets, limit=config.limit, seed=config.seed)
    except ValueError as e:
        raise Failure(f"stage1_items: {e}") from e
    store = storage.get()
    stage = store.staging(f"{context.run.run_id}-stage1_items")
    decisions = use.decisions_frame()
    _stage_table(stage, decisions, "split_use")
    evaluation = evaluation_items(text_qa_items, vqa_items, ecbench, use)
    checks = [check_result("stage1_items_not_empty", items.height > 0, items=items.height), _leakage_check(items, evaluation)]
    pub = Publication("stage1_items", None, items, _no_quarantine("stage1_items"),
                      metadata={**table_metadata(items, ("dataset", "split")),
                                "split_use": MetadataValue.md(_md(decisions))},
                      data_version=content_version(items), stage=stage)
    yield from publish_or_refuse(context, store, pub, checks)


def _stage_table(stage, frame: pl.DataFrame, table: str) -> None:
    import io

    buf = io.BytesIO()
    frame.write_parquet(buf)
    stage.write_bytes(buf.getvalue(), *Storage.table_parts(table))


def _md(frame: pl.DataFrame) -> str:
    from assets.common.metadata import preview_markdown

    return preview_markdown(frame, n=50, width=120)


@asset(
    backfill_policy=WHOLE,
    group_name="training",
    code_version="stage2_items.v1",
    io_manager_key="table_io",
    kinds={"polars", "parquet"},
    ins={"vqa_items": _ALL, "text_qa_items": _ALL, "ecbench": AssetIn(), "stage1_checkpoint": AssetIn(),
         "kb_text_index": AssetIn()},
    check_specs=[
        AssetCheckSpec("stage2_items_not_empty", asset="stage2_items", blocking=True,
                       description="at least one multimodal training MCQ the stage-1 policy does not always solve"),
        AssetCheckSpec("no_evaluation_items", asset="stage2_items", blocking=True,
                       description="no training item is an evaluation item (normalized question text, image id)"),
    ],
)
def stage2_items(context: AssetExecutionContext, config: StageItemsConfig, storage: StorageResource,
                 kb_models: KnowledgeModelsResource, vqa_items: pl.DataFrame, text_qa_items: pl.DataFrame,
                 ecbench: pl.DataFrame, stage1_checkpoint: pl.DataFrame, kb_text_index: pl.DataFrame):
    """Stage-2 multimodal MCQs: closed training questions, images picked by k-means, stratified by difficulty."""
    from retrieval.embedders import CachedEmbedding, EmbeddingCache
    from training.data import difficulty, split_use
    from training.data import stage2_items as select

    store = storage.get()
    use = split_use(pl.concat([vqa_items.select("dataset", "split"), text_qa_items.select("dataset", "split")]),
                    config.no_train_split)
    evaluation = evaluation_items(text_qa_items, vqa_items, ecbench, use)
    eval_refs = sorted({r for refs in evaluation["image_refs"].to_list() for r in (refs or [])})
    train_refs = sorted({r for refs in vqa_items["image_refs"].to_list() for r in (refs or [])} - set(eval_refs))
    embedder = kb_models.image_embedder()
    cached = CachedEmbedding(embedder, EmbeddingCache(store.lancedb_uri("embedding_cache"), store.lancedb_storage_options()))
    vectors = cached.embed([store.get_image(r) for r in train_refs]) if train_refs else np.zeros((0, embedder.dim))
    image_vectors = pl.DataFrame({"image_ref": train_refs, "vector": [v.tolist() for v in vectors]},
                                 schema={"image_ref": pl.Utf8, "vector": pl.List(pl.Float32)})
    try:
        items = select(vqa_items, use, image_vectors, n_clusters=config.n_clusters, per_cluster=config.per_cluster,
                       exclude_image_refs=eval_refs, seed=config.seed)
    except ValueError as e:
        raise Failure(f"stage2_items: {e}") from e
    if config.limit:
        items = items.head(config.limit)
    correct = _policy_samples(items, stage1_checkpoint, kb_text_index, store, kb_models, config.policy_samples)
    stratified = difficulty(items, correct)
    checks = [check_result("stage2_items_not_empty", stratified.height > 0, items=stratified.height,
                     always_solved_dropped=items.height - stratified.height),
              _leakage_check(stratified, evaluation)]
    pub = Publication("stage2_items", None, stratified, _no_quarantine("stage2_items"),
                      metadata={**table_metadata(stratified, ("dataset", "difficulty")),
                                "clusters": min(config.n_clusters, len(train_refs)),
                                "training_images": len(train_refs), "evaluation_images_excluded": len(eval_refs),
                                "policy": ModelPointer.from_row(stage1_checkpoint).path,
                                "policy_samples": config.policy_samples},
                      data_version=content_version(stratified))
    yield from publish_or_refuse(context, store, pub, checks)


def _policy_samples(items: pl.DataFrame, checkpoint: pl.DataFrame, kb: pl.DataFrame, store: Storage,
                    kb_models: KnowledgeModelsResource, samples: int) -> dict[str, list[bool]]:
    """``{item_id: [correct per sample]}`` from ``samples`` rollouts of the stage-1 policy, with retrieval."""
    import io

    from PIL import Image

    from retrieval.search import Retriever
    from training.protocol import answer_matches, build_messages
    from training.rollout import Rollout
    from training.tiny_model import load_policy

    with tempfile.TemporaryDirectory() as cache:
        model, processor = load_policy(ModelPointer.from_row(checkpoint).path, cache_dir=cache,
                                       storage_options=store.s3.s3fs_kwargs() if store.is_s3 else None)
        pointer = KbPointer.from_row(kb)
        retriever = Retriever.from_pointer(pointer, store.kb_location(pointer.db), kb_models.text_embedder())
        rollout = Rollout(retriever, max_new_tokens=32, max_completion_tokens=96)
        prompts = []
        for r in items.iter_rows(named=True):
            image = Image.open(io.BytesIO(store.get_image(r["image_ref"]))).convert("RGB")
            messages = build_messages(r["question"], r["options"], has_image=True)
            messages[1]["content"][0] = {"type": "image", "image": image}
            prompts.append(messages)
        correct: dict[str, list[bool]] = {i: [] for i in items["item_id"].to_list()}
        for _ in range(samples):
            result = rollout.run(model, processor, prompts)
            for r, t in zip(items.iter_rows(named=True), result.trajectories, strict=True):
                correct[r["item_id"]].append(bool(answer_matches(t.answer(), r["answer_label"], r["answer"], r["options"])))
    return correct


# ---- GRPO stages -----------------------------------------------------------------------------------------
def _train(context: AssetExecutionContext, *, stage: int, config: StageConfig, items_table: str,
           parent: pl.DataFrame, kb: pl.DataFrame, storage: StorageResource, sources: SourcesResource,
           kb_models: KnowledgeModelsResource, training: TrainingResource, pipes: PipesSubprocessClient,
           item_versions: dict[str, str]):
    """Launch one stage through Pipes, then publish its final model (pointer table + folder under the root)."""
    store = storage.get()
    role = f"stage{stage}"
    # one work folder per run family: a retried (killed) stage finds its checkpoints and resumes
    run_key = context.run.tags.get("dagster/root_run_id") or context.run.run_id
    work = Path(training.work_root()) / role / run_key
    work.mkdir(parents=True, exist_ok=True)
    s3_opts = store.s3.s3fs_kwargs() if store.is_s3 else None
    medquad = slake_kg = None
    if stage == 2:
        medquad = _local_copy(sources.source("medquad"), "medquad_qa.jsonl.gz", work / "lexicon")
        slake_kg = str(Path(_local_copy(sources.source("slake"), "KG_mvqa-kg/en_disease.csv", work / "lexicon")).parent)
        for name in ("en_organ.csv", "en_organ_rel.csv"):
            _local_copy(sources.source("slake"), f"KG_mvqa-kg/{name}", work / "lexicon")
    parent_model, kb_pointer = ModelPointer.from_row(parent), KbPointer.from_row(kb)
    lineage = {"items_table": items_table, "item_data_versions": item_versions, "dagster_run_id": context.run.run_id,
               "parent_model": parent_model.path, "parent_weights_sha256": parent_model.weights_sha256,
               "kb_embedder": kb_pointer.embedder_json}
    command = stage_command(
        stage=stage, items_uri=store.uri(*store.table_parts(items_table)), images_uri=store.uri("images"),
        storage_options=s3_opts, kb_uri=store.lancedb_uri(kb_pointer.db),
        kb_storage_options=store.lancedb_storage_options(),
        kb_table=kb_pointer.table, kb_tag=kb_pointer.tag, text_embedder=kb_models.text_model,
        image_embedder=kb_models.image_model, base_model=parent_model.path,
        model_cache=str(work / "model_cache"),
        output_dir=str(work / "out"), overrides=config.overrides(), lineage=lineage, git_commit=git_commit(),
        medquad=medquad, slake_kg=slake_kg, accelerate_config=training.accelerate_config)
    context.log.info(f"{role}: launching {' '.join(command[:4])} ... (work folder {work})")
    invocation = training.launch(context, command, pipes)
    results = invocation.get_results()
    reported = results[0].metadata if results else {}
    steps = [m for m in invocation.get_custom_messages() if isinstance(m, dict) and "metrics" in m]
    final = work / "out" / "final"
    manifest_file = final / "medrwr_lineage.json"
    if not manifest_file.exists():
        raise Failure(f"{role}: the trainer exited without a final model at {final}; see the run's logs")
    manifest = json.loads(manifest_file.read_text())
    stage_store = store.staging(f"{context.run.run_id}-{role}")
    path = upload_folder(final, stage_store, "models", role, context.run.run_id)
    row = model_row(role, parent_model.path, path, manifest.get("weights_sha256"), manifest)
    steps_ok = int(manifest.get("global_step") or 0) > 0
    checks = [check_result(f"{role}_trained", steps_ok and bool(manifest.get("weights_sha256")),
                     global_step=int(manifest.get("global_step") or 0), resumed_from=str(manifest.get("resumed_from")))]
    pub = Publication(f"{role}_checkpoint", None, row, _no_quarantine(f"{role}_checkpoint"),
                      metadata={**{k: v for k, v in reported.items() if k != "path"},
                                "path": path, "global_step": int(manifest.get("global_step") or 0),
                                "config_hash": manifest.get("config_hash", ""), "kb_tag": kb_pointer.tag,
                                "lineage": MetadataValue.json(manifest), "work_folder": str(work),
                                "metrics_by_step": MetadataValue.md(_metrics_table(steps)),
                                **{f"last/{k}": float(v) for k, v in (steps[-1]["metrics"] if steps else {}).items()}},
                      data_version=manifest.get("weights_sha256") or manifest.get("config_hash"), stage=stage_store)
    yield from publish_or_refuse(context, store, pub, checks)


METRICS_SHOWN = ("reward", "rewards/accuracy/mean", "rewards/format/mean", "rollout/query_rate",
                 "rollout/retrieval_calls", "rollout/rounds", "rollout/prefix_violations", "kl", "entropy",
                 "clip_ratio/region_mean", "frac_reward_zero_std", "train/step_time_s", "train/tokens_per_s")


def _metrics_table(steps: list[dict]) -> str:
    """The per-step metrics the trainer streamed through Pipes, as a Markdown table."""
    if not steps:
        return "no step metrics were reported"
    cols = [c for c in METRICS_SHOWN if any(c in s["metrics"] for s in steps)]
    lines = ["| step | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for s in steps:
        lines.append(f"| {s['step']} | " + " | ".join(f"{s['metrics'].get(c, float('nan')):.4g}" for c in cols) + " |")
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
    check_specs=[AssetCheckSpec("stage1_trained", asset="stage1_checkpoint", blocking=True,
                                description="the stage ran at least one optimizer step and saved safetensors weights")],
    op_tags={"medrwr/kind": "training"},
)
def stage1_checkpoint(context: AssetExecutionContext, config: StageConfig, stage1_items: pl.DataFrame,
                      base_model: pl.DataFrame, kb_text_index: pl.DataFrame, storage: StorageResource,
                      sources: SourcesResource, kb_models: KnowledgeModelsResource, training: TrainingResource,
                      pipes_subprocess_client: PipesSubprocessClient):
    """GRPO stage 1 (accuracy + format rewards) on the text MCQs, from the base model."""
    yield from _train(context, stage=1, config=config, items_table="stage1_items", parent=base_model, kb=kb_text_index,
                      storage=storage, sources=sources, kb_models=kb_models, training=training,
                      pipes=pipes_subprocess_client, item_versions={"stage1_items": content_version(stage1_items)})


@asset(
    backfill_policy=WHOLE,
    group_name="training",
    code_version="stage2_checkpoint.v1",
    io_manager_key="table_io",
    pool="gpu",
    retry_policy=TRAINING_RETRY,
    kinds={"pytorch", "trl"},
    ins={"stage2_items": AssetIn(), "stage1_checkpoint": AssetIn(), "kb_text_index": AssetIn()},
    check_specs=[AssetCheckSpec("stage2_trained", asset="stage2_checkpoint", blocking=True,
                                description="the stage ran at least one optimizer step and saved safetensors weights")],
    op_tags={"medrwr/kind": "training"},
)
def stage2_checkpoint(context: AssetExecutionContext, config: StageConfig, stage2_items: pl.DataFrame,
                      stage1_checkpoint: pl.DataFrame, kb_text_index: pl.DataFrame, storage: StorageResource,
                      sources: SourcesResource, kb_models: KnowledgeModelsResource, training: TrainingResource,
                      pipes_subprocess_client: PipesSubprocessClient):
    """GRPO stage 2 (all four rewards) on the multimodal MCQs, from the stage-1 checkpoint."""
    yield from _train(context, stage=2, config=config, items_table="stage2_items", parent=stage1_checkpoint,
                      kb=kb_text_index, storage=storage, sources=sources, kb_models=kb_models, training=training,
                      pipes=pipes_subprocess_client, item_versions={"stage2_items": content_version(stage2_items)})
