"""Knowledge group: KB passages per source, the LanceDB text index, image cases and the image index.

Assets are thin: readers in ``sources.py`` and ``image_cases.py`` beside this module, the store and search in ``retrieval/``, checks in
``quality/kb.py``. The LanceDB writers share the ``kb_writer`` pool (one writer per table at a time).
"""

import os

import polars as pl
from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    DynamicPartitionsDefinition,
    MetadataValue,
    Output,
    asset,
)

from assets.common.images import ImageIngestor
from assets.common.metadata import contract_check, counts, data_version, quarantine_metadata, table_metadata
from assets.common.records import quarantine_frame
from assets.knowledge.image_cases import (
    EXTERNAL_IMAGE_CORPORA,
    evaluation_images,
    exclude_evaluation_images,
    image_cases_from_vqa,
)
from assets.knowledge.sources import read_kb_source
from orchestration.profiles import get_profile
from orchestration.resources import KnowledgeModelsResource, SourcesResource, StorageResource
from quality.kb import check_image_cases, check_image_index, check_passages, check_text_index
from retrieval.chunking import TokenChunker
from retrieval.embedders import CachedEmbedding, EmbeddingCache, passage_input
from retrieval.store import IndexPolicy, sync_table, text_table_rows

kb_source_partitions = DynamicPartitionsDefinition(name="kb_sources")

KB_DB = "kb"
TEXT_TABLE = "kb_text"
IMAGE_TABLE = "kb_image"


def _index_metadata(report, embedder_meta: dict) -> dict:
    return {
        "dagster/row_count": report.rows,
        "lancedb_table": report.table,
        "lancedb_version": report.version,
        "lancedb_tag": report.tag or "",
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


@asset(
    partitions_def=kb_source_partitions,
    group_name="knowledge",
    code_version="kb_passages.v1",
    io_manager_key="table_io",
    kinds={"polars", "parquet"},
    check_specs=[AssetCheckSpec("kb_passages_contract", asset="kb_passages", blocking=True,
                                description="ids unique and stable-shaped, text non-empty, content hash set")],
)
def kb_passages(context: AssetExecutionContext, storage: StorageResource, sources: SourcesResource,
                kb_models: KnowledgeModelsResource):
    """Passages of one KB source, chunked to fit the text embedder, stable ids, duplicates quarantined."""
    source = context.partition_key
    profile = get_profile(sources.profile)
    src = sources.source(source)
    chunker = TokenChunker.for_embedder(kb_models.text_embedder())
    df, result = read_kb_source(source, src, chunker, limit=profile.kb_record_limit)
    store = storage.get()
    quarantine_uri = store.write_quarantine(quarantine_frame(result.rejected, "kb_passages", source),
                                            "kb_passages", source)
    if result.rejected:
        context.log.warning(f"kb_passages[{source}]: {len(result.rejected)} rows quarantined at {quarantine_uri}")
    yield Output(
        df,
        data_version=data_version(df),
        metadata={
            **table_metadata(df),
            **quarantine_metadata(result.rejected, quarantine_uri),
            "source": src.root,
            "record_limit": profile.kb_record_limit or 0,
            "chunker": MetadataValue.json(chunker.identity()),
            "words_per_passage_mean": float(df["text"].str.split(" ").list.len().mean() or 0),
        },
    )
    yield contract_check("kb_passages_contract", check_passages(df))


@asset(
    group_name="knowledge",
    code_version="kb_text_index.v1",
    pool="kb_writer",
    kinds={"lancedb"},
    check_specs=[AssetCheckSpec("kb_text_index_quality", asset="kb_text_index", blocking=True,
                                description="vector dim and unit norm, no NaN, FTS covers every row, "
                                            "self-retrieval@1 on a sample")],
)
def kb_text_index(context: AssetExecutionContext, kb_passages: pl.DataFrame, storage: StorageResource,
                  kb_models: KnowledgeModelsResource):
    """LanceDB table ``kb_text`` synced to every materialized kb_passages partition: only new or changed
    passages are embedded, removed ones deleted; the version is tagged ``run-<run id>``."""
    store = storage.get()
    embedder = kb_models.text_embedder()
    cached = CachedEmbedding(embedder, EmbeddingCache(store.lancedb_uri("embedding_cache"),
                                                      store.lancedb_storage_options()))
    frame = text_table_rows(kb_passages)

    def embed(rows: pl.DataFrame):
        return cached.embed([passage_input(t, x) for t, x in zip(rows["title"], rows["text"], strict=True)])

    report = sync_table(store.kb_location(KB_DB), TEXT_TABLE, frame, embed, embedder.identity(),
                        run_id=context.run.run_id,
                        index_policy=IndexPolicy(min_rows=kb_models.vector_index_min_rows))
    report.embedded, report.reused = cached.stats.embedded, cached.stats.reused
    tbl = store.kb_location(KB_DB).connect().open_table(report.table)
    quality = check_text_index(tbl, embedder, embedder.dim)
    yield Output(None, metadata={**_index_metadata(report, embedder.metadata()),
                                 "lancedb_uri": store.lancedb_uri(KB_DB),
                                 "count_by_source": MetadataValue.json(counts(frame, "source"))})
    yield contract_check("kb_text_index_quality", quality)


@asset(
    group_name="knowledge",
    code_version="kb_image_cases.v1",
    io_manager_key="table_io",
    kinds={"polars", "parquet"},
    check_specs=[AssetCheckSpec("kb_image_cases_contract", asset="kb_image_cases", blocking=True,
                                description="one case per image, descriptions non-empty, images resolvable")],
)
def kb_image_cases(context: AssetExecutionContext, vqa_items: pl.DataFrame, storage: StorageResource,
                   sources: SourcesResource):
    """SLAKE and VQA-RAD training images as cases (modality, organ, detection boxes, QA-derived text), plus
    the production corpora PubMedVision and ROCO when ``MEDRWR_SOURCE_PUBMEDVISION`` / ``_ROCO`` name them."""
    slake = sources.source("slake")
    slake_src = slake if slake.exists("train.json") else None
    evaluation_refs = evaluation_images(vqa_items, slake_src)
    df, result = image_cases_from_vqa(vqa_items, slake_src, evaluation_refs=evaluation_refs)
    store = storage.get()
    images = ImageIngestor(store)
    for name, reader in EXTERNAL_IMAGE_CORPORA.items():
        if os.environ.get(f"MEDRWR_SOURCE_{name.upper()}"):
            extra, extra_result = reader(sources.source(name), images)
            extra, excluded = exclude_evaluation_images(extra, evaluation_refs)
            df = pl.concat([df, extra])
            result.rejected.extend(extra_result.rejected + excluded)
    quarantine_uri = store.write_quarantine(quarantine_frame(result.rejected, "kb_image_cases", None),
                                            "kb_image_cases")
    contract = check_image_cases(df, store.existing_images(set(df["image_ref"].to_list())), evaluation_refs)
    yield Output(df, data_version=data_version(df), metadata={
        **table_metadata(df, ("source", "modality")),
        **quarantine_metadata(result.rejected, quarantine_uri),
        "with_boxes": int((df["boxes"] != "[]").sum()),
    })
    yield contract_check("kb_image_cases_contract", contract)


@asset(
    group_name="knowledge",
    code_version="kb_image_index.v1",
    pool="kb_writer",
    kinds={"lancedb"},
    check_specs=[AssetCheckSpec("kb_image_index_quality", asset="kb_image_index", blocking=True,
                                description="vector dim and unit norm, no NaN, image refs resolvable")],
)
def kb_image_index(context: AssetExecutionContext, kb_image_cases: pl.DataFrame, storage: StorageResource,
                   kb_models: KnowledgeModelsResource):
    """LanceDB table ``kb_image`` of image-case embeddings for CDIR, synced incrementally and tagged."""
    store = storage.get()
    embedder = kb_models.image_embedder()
    cached = CachedEmbedding(embedder, EmbeddingCache(store.lancedb_uri("embedding_cache"),
                                                      store.lancedb_storage_options()))
    frame = kb_image_cases.drop("item_ids")

    def embed(rows: pl.DataFrame):
        return cached.embed([store.get_image(ref) for ref in rows["image_ref"]])

    report = sync_table(store.kb_location(KB_DB), IMAGE_TABLE, frame, embed, embedder.identity(),
                        run_id=context.run.run_id, fts_column="description",
                        index_policy=IndexPolicy(min_rows=kb_models.vector_index_min_rows))
    report.embedded, report.reused = cached.stats.embedded, cached.stats.reused
    tbl = store.kb_location(KB_DB).connect().open_table(report.table)
    quality = check_image_index(tbl, embedder.dim, store.existing_images)
    yield Output(None, metadata={**_index_metadata(report, embedder.metadata()),
                                 "lancedb_uri": store.lancedb_uri(KB_DB)})
    yield contract_check("kb_image_index_quality", quality)
