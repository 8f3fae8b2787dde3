"""Knowledge group: KB passages per source, the LanceDB text index, image cases and the image index.

Assets are thin: readers in ``sources/`` and ``image_cases.py`` beside this module, the store and search in
``retrieval/``, checks in ``quality/kb.py``. Table assets publish only after their gates pass
(:mod:`assets.common.gates`). For the LanceDB indexes the publication is the version tag: a sync writes a new
table version, the checks run on it, and only then is it tagged ``run-<run id>`` (readers for training and
evaluation are pinned to tags); when a check fails the table is restored to its previous version, untagged.
The LanceDB writers share the ``kb_writer`` pool and, for a local KB, its writer file lock
(:func:`retrieval.kb.connection.writer_lock`): one writer at a time.
"""

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    Config,
    DataVersion,
    DynamicPartitionsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from assets.common.backfill import PER_PARTITION, WHOLE
from assets.common.gates import Publication, blocking_failures, publish_or_refuse
from assets.common.images import ImageIngestor
from assets.common.metadata import (
    check_result,
    content_version,
    contract_check,
    counts,
    quarantine_metadata,
    table_metadata,
)
from assets.common.records import quarantine_frame
from assets.common.resources import KnowledgeModelsResource, SourcesResource, StorageResource
from quality.contracts import with_volume
from quality.kb import check_image_cases, check_image_index, check_passages, check_text_index
from quality.near_duplicates import near_duplicates_of
from retrieval.chunking import TokenChunker
from retrieval.embedders import CachedEmbedding, EmbeddingCache, passage_input
from retrieval.kb.connection import writer_lock
from retrieval.kb.index_choice import IndexPolicy
from retrieval.kb.naming import embedder_table, identity_fingerprint
from retrieval.kb.rows import TEXT_FTS_COLUMN, text_table_rows
from retrieval.kb.sync import sync_table
from retrieval.kb.tags import restore_version, tag_version
from retrieval.pointers import KbPointer
from storage.errors import UncommittedTable

from .image_cases import (
    EVALUATION_SPLITS,
    EXTERNAL_IMAGE_CORPORA,
    evaluation_images,
    exclude_evaluation_images,
    exclude_near_duplicates,
    image_cases_from_vqa,
)
from .retention import retain
from .sources import read_kb_source

kb_source_partitions = DynamicPartitionsDefinition(name="kb_sources")

KB_DB = "kb"
TEXT_TABLE = "kb_text"
IMAGE_TABLE = "kb_image"


class KbPassagesConfig(Config):
    """Run knobs of ``kb_passages``."""

    max_records: int | None = Field(
        default=None, description="source records read (None: all); the smoke profile reads 120 per source"
    )
    max_quarantine_share: float = Field(
        default=0.5,
        description="the contract fails above this share of passages quarantined (duplicates included)",
    )
    max_removed_share: float = Field(
        default=0.2,
        description="the run fails (nothing published) when it would remove more than this share of the "
        "source's published passages (a truncated or half-copied file); see allow_shrink",
    )
    allow_shrink: bool = Field(
        default=False, description="the shrink is intended (a source was cut down on purpose): publish it"
    )


EVALUATION_SOURCES = ("pubmedqa", "medmcqa_exp")
"""KB sources whose passage titles are evaluation benchmark questions (PubMedQA's titles are its questions,
MedMCQA explanations carry their question): never held-out queries for the index trial."""


def held_out_queries(frame: pl.DataFrame, n: int, seed: int = 0) -> list[str]:
    """Up to ``n`` distinct passage titles, a seeded sample, from sources other than
    :data:`EVALUATION_SOURCES`: real questions (MedQuAD's titles are its questions) or headings the index must
    find neighbours for, held out from nothing the model is evaluated on. Exact search answers them too, so
    recall@10 against it measures the approximate index alone."""
    titles = (
        frame.filter(~pl.col("source").is_in(list(EVALUATION_SOURCES)) & pl.col("title").is_not_null())
        .select(pl.col("title").str.strip_chars())
        .filter(pl.col("title").str.len_chars() > 0)
        .unique()
        .sort("title")
    )
    if titles.height <= n:
        return titles["title"].to_list()
    return titles.sample(n, seed=seed)["title"].to_list()


class KbIndexConfig(Config):
    """Run knobs of the LanceDB indexes."""

    vector_index_min_rows: int = Field(default=50_000, description="below this, exact (flat) search")
    min_recall: float = Field(default=0.95, description="an approximate index must reach this recall@10")
    recall_queries: int = Field(
        default=200,
        ge=0,
        description="held-out queries for the vector-index trial: a seeded sample of this many passage "
        f"titles, never from the sources derived from evaluation benchmarks: {', '.join(EVALUATION_SOURCES)}",
    )
    keep_tags: int = Field(
        default=5,
        ge=1,
        description="tag retention: the newest N run- tags of the table survive, besides every tag a "
        "published pointer, checkpoint or evaluation report references; older ones are deleted",
    )
    cleanup_older_than_hours: float = Field(
        default=24.0,
        ge=0,
        description="versions no tag holds are removed by LanceDB's cleanup once older than this",
    )


class KbImageCasesConfig(Config):
    """Run knobs of ``kb_image_cases``."""

    external_corpora: list[str] = Field(
        default_factory=list,
        description="production image-text corpora to "
        f"add, each read from its source folder: {sorted(EXTERNAL_IMAGE_CORPORA)}",
    )
    max_quarantine_share: float = Field(
        default=0.2, description="the contract fails above this share of cases quarantined"
    )
    include_qa: bool = Field(
        default=False,
        description="append each case's own training questions and answers to its description (off: "
        "SLAKE and VQA-RAD ask the same template questions of many images, so a case's answers would be an "
        "answer key for a similar evaluation image)",
    )


def _index_metadata(report, embedder_meta: dict) -> dict:
    return {
        "dagster/row_count": report.rows,
        "lancedb_table": report.table,
        "lancedb_version": report.version,
        "inserted": report.inserted,
        "updated": report.updated,
        "deleted": report.deleted,
        "unchanged": report.unchanged,
        "embedded": report.embedded,
        "reused": report.reused,
        "index_params": MetadataValue.json(report.index),
        "recall_at_10_vs_exact": report.recall_at_10,
        "embedder": MetadataValue.json(embedder_meta),
    }


def index_pointer(store, base_table: str, report, tag: str, embedder_meta: dict) -> KbPointer:
    """What an index asset publishes (:class:`retrieval.pointers.KbPointer`, one row): which LanceDB table
    (``table``: the base name readers open for their embedder, ``physical_table``: ``<base>__<embedder
    fingerprint>``), version and tag readers pin to, and the embedder that built it (training and evaluation
    load it through the IO manager)."""
    return KbPointer(
        db=KB_DB,
        table=base_table,
        physical_table=report.table,
        tag=tag,
        version=int(report.version),
        uri=store.lancedb_uri(KB_DB),
        embedder_fingerprint=report.embedder_fingerprint,
        embedder_json=json.dumps(embedder_meta, sort_keys=True),
    )


def _previous_version(location, base_table: str, identity: dict) -> int | None:
    """The current version of the embedder's table before a sync (``None`` when it does not exist yet)."""
    name = embedder_table(base_table, identity_fingerprint(identity))
    conn = location.connect()
    return conn.open_table(name).version if name in conn.table_names() else None


def _publish_index(
    context: AssetExecutionContext,
    location,
    base_table: str,
    previous: int | None,
    report,
    checks,
    metadata: dict,
    embedder_meta: dict,
    pointer: tuple,
    config: KbIndexConfig,
):
    """Tag the synced version when every blocking check passed, publish the pointer table, then apply tag
    retention (``config.keep_tags`` newest run- tags plus every tag a published pointer, checkpoint or report
    references: :func:`assets.knowledge.retention.referenced_tags`; untagged versions older than
    ``config.cleanup_older_than_hours`` removed by LanceDB's cleanup; skipped, all kept, with a warning,
    when a published pointer does not verify against its gate record); otherwise restore ``previous`` and
    fail."""
    failed = blocking_failures(checks)
    store, asset_name = pointer
    table = report.table
    if failed:
        restored = restore_version(location, table, previous)
        store.unpublish_table(asset_name)  # downstream never reads an index whose latest gate failed
        store.write_gate_record(
            asset_name,
            None,
            {
                "status": "failed",
                "run_id": context.run.run_id,
                "failed_checks": [c.check_name for c in failed],
            },
        )
        yield from checks
        raise Failure(
            description=f"{table}: blocking check(s) {[c.check_name for c in failed]} failed on version "
            f"{report.version}; it was not tagged and the table was restored to "
            f"{'version ' + str(previous) if restored else 'nothing (it was new)'}."
        )
    tag = tag_version(location, table, f"run-{context.run.run_id}", report.version)
    store.publish_table(  # the gate record naming the pointer table is the commit point
        index_pointer(store, base_table, report, tag, embedder_meta).to_row(),
        asset_name,
        None,
        {"status": "passed", "run_id": context.run.run_id, "tag": tag},
    )
    pruned = retain(  # fail closed: a pointer that does not verify keeps every tag (and says so)
        store,
        location.connect().open_table(table),
        keep_tags=config.keep_tags,
        cleanup_older_than=timedelta(hours=config.cleanup_older_than_hours),
        pinned=frozenset({tag}),
    )
    if "skipped" in pruned:
        context.log.warning(f"{table}: {pruned['skipped']}")
    context.log.info(
        f"{table}: tag retention deleted {len(pruned['tags_deleted'])} tag(s), kept "
        f"{len(pruned['tags_kept'])}; cleanup removed {pruned['versions_removed']} version(s), "
        f"{pruned['bytes_removed']:,} bytes"
    )
    yield MaterializeResult(
        metadata={**metadata, "lancedb_tag": tag, "retention": MetadataValue.json(pruned)},
        data_version=DataVersion(f"v{report.version}-{report.embedder_fingerprint}"),
        check_results=checks,
    )


def _sync_and_publish(
    context: AssetExecutionContext,
    config: KbIndexConfig,
    store,
    asset_name: str,
    base_table: str,
    frame: pl.DataFrame,
    embedder,
    cached: CachedEmbedding,
    embed,
    check: Callable[[Any], Any],
    extra_metadata: dict,
    fts_column: str = TEXT_FTS_COLUMN,
    recall_queries=None,
):
    """Under the KB writer lock (sync, checks and tag: one writer at a time): note the embedder's table
    version, sync ``frame`` into it, record the embedding-cache stats, run ``check(table)`` as the blocking
    ``<asset>_quality`` check, then publish or roll back (:func:`_publish_index`). ``extra_metadata`` is added
    after the index metadata and ``lancedb_uri``."""
    location = store.kb_location(KB_DB)
    identity = embedder.identity()
    with writer_lock(location, log=context.log.info):
        previous = _previous_version(location, base_table, identity)
        report = sync_table(
            location,
            base_table,
            frame,
            embed,
            identity,
            fts_column=fts_column,
            index_policy=IndexPolicy(min_rows=config.vector_index_min_rows, min_recall=config.min_recall),
            recall_queries=recall_queries,
        )
        report.embedded, report.reused = cached.stats.embedded, cached.stats.reused
        tbl = location.connect().open_table(report.table)
        checks = [contract_check(f"{asset_name}_quality", check(tbl))]
        meta = embedder.metadata()
        yield from _publish_index(
            context,
            location,
            base_table,
            previous,
            report,
            checks,
            {**_index_metadata(report, meta), "lancedb_uri": store.lancedb_uri(KB_DB), **extra_metadata},
            meta,
            (store, asset_name),
            config,
        )


@asset(
    backfill_policy=PER_PARTITION,
    partitions_def=kb_source_partitions,
    group_name="knowledge",
    code_version="kb_passages.v2",
    io_manager_key="table_io",
    kinds={"polars", "parquet"},
    check_specs=[
        AssetCheckSpec(
            "kb_passages_contract",
            asset="kb_passages",
            blocking=True,
            partitions_def=kb_source_partitions,
            description="rows kept, quarantined share bounded, ids unique and stable-shaped, "
            "text non-empty, content hash set",
        ),
        AssetCheckSpec(
            "kb_passages_no_mass_removal",
            asset="kb_passages",
            blocking=True,
            partitions_def=kb_source_partitions,
            description="the run removes at most max_removed_share of the source's published passages "
            "(unless allow_shrink)",
        ),
    ],
)
def kb_passages(
    context: AssetExecutionContext,
    config: KbPassagesConfig,
    storage: StorageResource,
    sources: SourcesResource,
    kb_models: KnowledgeModelsResource,
):
    """Passages of one KB source, chunked to fit the text embedder's tokenizer, stable ids, duplicates
    quarantined."""
    source = context.partition_key
    src = sources.source(source)
    chunker = TokenChunker.for_embedder(kb_models.text_embedder())
    df, result = read_kb_source(source, src, chunker, limit=config.max_records)
    store = storage.get()
    contract = with_volume(check_passages(df), df.height, len(result.rejected), config.max_quarantine_share)
    removal = _removal_check(store, source, df, config)
    checks = [contract_check("kb_passages_contract", contract), removal]
    pub = Publication(
        "kb_passages",
        source,
        df,
        quarantine_frame(result.rejected, "kb_passages", source),
        metadata={
            **table_metadata(df),
            **quarantine_metadata(result.rejected),
            "source": src.root,
            "record_limit": config.max_records or 0,
            "chunker": MetadataValue.json(chunker.identity()),
            "words_per_passage_mean": float(df["text"].str.split(" ").list.len().mean() or 0),
        },
        data_version=content_version(df),
        inputs=src.input_manifest(),
        # a run refused for removing too much keeps the published passages (that is the guard); one refused
        # for its own data withdraws them like any failed gate
        withdraw_previous=removal.passed,
    )
    yield from publish_or_refuse(context, store, pub, checks)


def _removal_check(store, source: str, df: pl.DataFrame, config: KbPassagesConfig) -> AssetCheckResult:
    """Blocking: the new passages keep all but ``max_removed_share`` of the published ones (by id), unless
    ``allow_shrink`` says the shrink is intended. Seen: a source file truncated to 10 records ran green and
    deleted 1,737 of 1,754 passages. The published passages are read as their gate record commits them;
    when they do not verify (a publication interrupted before its commit, a file changed after it) the shrink
    cannot be measured and the check fails unless ``allow_shrink``."""
    before = None
    if store.exists(*store.table_parts("kb_passages", source)):
        try:
            before = store.read_published_table("kb_passages", source)["id"]
        except UncommittedTable as e:
            return check_result(
                "kb_passages_no_mass_removal",
                config.allow_shrink,
                published_unverified=str(e),
                passages_now=df.height,
                allow_shrink=config.allow_shrink,
                fix="the published passages do not verify, so what this run would remove is unknown: check "
                "the source is complete, then rerun with allow_shrink: true",
            )
    if before is None or before.len() == 0:
        return check_result("kb_passages_no_mass_removal", True, published_before=0)
    removed = int((~before.is_in(df["id"])).sum())
    share = removed / before.len()
    return check_result(
        "kb_passages_no_mass_removal",
        share <= config.max_removed_share or config.allow_shrink,
        published_before=before.len(),
        passages_now=df.height,
        removed=removed,
        removed_share=round(share, 4),
        max_removed_share=config.max_removed_share,
        allow_shrink=config.allow_shrink,
        fix="if the source really shrank, rerun with allow_shrink: true; otherwise restore the source files",
    )


@asset(
    backfill_policy=WHOLE,
    group_name="knowledge",
    code_version="kb_text_index.v2",
    pool="kb_writer",
    io_manager_key="table_io",
    kinds={"lancedb"},
    check_specs=[
        AssetCheckSpec(
            "kb_text_index_quality",
            asset="kb_text_index",
            blocking=True,
            description="vector dim and unit norm, no NaN, FTS covers every row, "
            "self-retrieval@1 on a sample",
        )
    ],
)
def kb_text_index(
    context: AssetExecutionContext,
    config: KbIndexConfig,
    kb_passages: pl.DataFrame,
    storage: StorageResource,
    kb_models: KnowledgeModelsResource,
):
    """LanceDB table ``kb_text`` synced to every registered kb_passages partition: only new or changed
    passages are embedded, removed ones deleted; a version that passes its checks is tagged
    ``run-<run id>``."""
    store = storage.get()
    embedder = kb_models.text_embedder()
    cached = CachedEmbedding(
        embedder, EmbeddingCache(store.lancedb_uri("embedding_cache"), store.lancedb_storage_options())
    )
    frame = text_table_rows(kb_passages)

    def embed(rows: pl.DataFrame):
        return cached.embed([passage_input(t, x) for t, x in zip(rows["title"], rows["text"], strict=True)])

    # held-out queries are embedded only where an index may be trialled
    queries = (
        held_out_queries(frame, config.recall_queries) if frame.height >= config.vector_index_min_rows else []
    )
    yield from _sync_and_publish(
        context,
        config,
        store,
        "kb_text_index",
        TEXT_TABLE,
        frame,
        embedder,
        cached,
        embed,
        lambda tbl: check_text_index(tbl, embedder, embedder.dim),
        {"count_by_source": MetadataValue.json(counts(frame, "source")), "held_out_queries": len(queries)},
        recall_queries=embedder.embed_queries(queries) if queries else None,
    )


@asset(
    backfill_policy=WHOLE,
    group_name="knowledge",
    code_version="kb_image_cases.v3",
    io_manager_key="table_io",
    kinds={"polars", "parquet"},
    check_specs=[
        AssetCheckSpec(
            "kb_image_cases_contract",
            asset="kb_image_cases",
            blocking=True,
            description="rows kept, quarantined share bounded, one case per image, "
            "descriptions non-empty, images resolvable",
        )
    ],
)
def kb_image_cases(
    context: AssetExecutionContext,
    config: KbImageCasesConfig,
    vqa_items: pl.DataFrame,
    storage: StorageResource,
    sources: SourcesResource,
):
    """SLAKE and VQA-RAD training images as cases (modality, organ, detection boxes, QA-derived text), plus
    the production corpora PubMedVision and ROCO when ``external_corpora`` names them."""
    slake = sources.source("slake")
    slake_src = slake if slake.exists("train.json") else None
    evaluation_refs = evaluation_images(vqa_items, slake_src)
    df, result = image_cases_from_vqa(
        vqa_items, slake_src, evaluation_refs=evaluation_refs, include_qa=config.include_qa
    )
    store = storage.get()
    with store.staging(
        f"{context.run.run_id}-kb_image_cases"
    ) as stage:  # discarded in a finally if the step fails
        images = ImageIngestor(stage)
        # near copies of an evaluation image (resized, re-encoded, an adjacent slice) are not cases either: a
        # case's text embeds its own questions and answers, so CDIR could read a near answer key
        eval_vqa_refs = sorted(
            {
                r
                for refs in vqa_items.filter(pl.col("split").is_in(list(EVALUATION_SPLITS)))[
                    "image_refs"
                ].to_list()
                for r in (refs or [])
            }
        )
        near = near_duplicates_of(eval_vqa_refs, df["image_ref"].to_list(), store.get_image)
        df, near_rejected = exclude_near_duplicates(df, near, evaluation_refs)
        result.rejected.extend(near_rejected)
        inputs = [{**e, "path_key": f"slake/{e['path_key']}"} for e in slake.input_manifest()]
        for name in config.external_corpora:
            if name not in EXTERNAL_IMAGE_CORPORA:
                raise Failure(
                    f"kb_image_cases: unknown external corpus {name!r}; "
                    f"known: {sorted(EXTERNAL_IMAGE_CORPORA)}"
                )
            corpus = sources.source(name)
            extra, extra_result = EXTERNAL_IMAGE_CORPORA[name](corpus, images)
            extra, excluded = exclude_evaluation_images(extra, evaluation_refs)
            result.rejected.extend(excluded)
            inputs += [{**e, "path_key": f"{name}/{e['path_key']}"} for e in corpus.input_manifest()]
            df = pl.concat([df, extra])
            result.rejected.extend(extra_result.rejected)
        contract = with_volume(
            check_image_cases(df, stage.existing_images(set(df["image_ref"].to_list())), evaluation_refs),
            df.height,
            len(result.rejected),
            config.max_quarantine_share,
        )
        pub = Publication(
            "kb_image_cases",
            None,
            df,
            quarantine_frame(result.rejected, "kb_image_cases", None),
            metadata={
                **table_metadata(df, ("source", "modality")),
                **quarantine_metadata(result.rejected),
                "with_boxes": int((df["boxes"] != "[]").sum()),
                "near_duplicates_of_evaluation_excluded": len(near_rejected),
            },
            data_version=content_version(df),
            stage=stage,
            inputs=inputs,
        )
        yield from publish_or_refuse(
            context, store, pub, [contract_check("kb_image_cases_contract", contract)]
        )


@asset(
    backfill_policy=WHOLE,
    group_name="knowledge",
    code_version="kb_image_index.v2",
    pool="kb_writer",
    io_manager_key="table_io",
    kinds={"lancedb"},
    check_specs=[
        AssetCheckSpec(
            "kb_image_index_quality",
            asset="kb_image_index",
            blocking=True,
            description="vector dim and unit norm, no NaN, image refs resolvable",
        )
    ],
)
def kb_image_index(
    context: AssetExecutionContext,
    config: KbIndexConfig,
    kb_image_cases: pl.DataFrame,
    storage: StorageResource,
    kb_models: KnowledgeModelsResource,
):
    """LanceDB table ``kb_image`` of image-case embeddings for CDIR, synced incrementally; tagged when its
    checks pass."""
    store = storage.get()
    embedder = kb_models.image_embedder()
    cached = CachedEmbedding(
        embedder, EmbeddingCache(store.lancedb_uri("embedding_cache"), store.lancedb_storage_options())
    )
    frame = kb_image_cases.drop("item_ids")

    def embed(rows: pl.DataFrame):
        return cached.embed([store.get_image(ref) for ref in rows["image_ref"]])

    yield from _sync_and_publish(
        context,
        config,
        store,
        "kb_image_index",
        IMAGE_TABLE,
        frame,
        embedder,
        cached,
        embed,
        lambda tbl: check_image_index(tbl, embedder.dim, store.existing_images),
        {},
        fts_column="description",
    )
