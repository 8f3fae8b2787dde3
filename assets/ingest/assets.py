"""Ingest group: VQA and text-QA datasets normalized into one schema each, with blocking contracts."""

from dagster import AssetCheckSpec, AssetExecutionContext, Output, StaticPartitionsDefinition, asset

from assets.common.images import ImageIngestor
from assets.common.metadata import contract_check, data_version, quarantine_metadata, table_metadata
from assets.common.records import quarantine_frame
from assets.ingest.text_qa import TEXT_QA_DATASETS, read_text_qa
from assets.ingest.vqa import VQA_DATASETS, read_vqa
from orchestration.resources import SourcesResource, StorageResource
from quality.contracts import all_refs, check_text_qa_items, check_vqa_items

vqa_partitions = StaticPartitionsDefinition(list(VQA_DATASETS))
text_qa_partitions = StaticPartitionsDefinition(list(TEXT_QA_DATASETS))


@asset(
    partitions_def=vqa_partitions,
    group_name="ingest",
    code_version="vqa_items.v1",
    io_manager_key="table_io",
    kinds={"polars", "parquet"},
    check_specs=[AssetCheckSpec("vqa_items_contract", asset="vqa_items", blocking=True,
                                description="GX suite: unique ids, answer among options, images resolvable, "
                                            "known splits, non-empty questions, licence set")],
)
def vqa_items(context: AssetExecutionContext, storage: StorageResource, sources: SourcesResource):
    """Medical VQA items of one dataset, normalized; images stored once by content id."""
    dataset = context.partition_key
    store = storage.get()
    images = ImageIngestor(store)
    df, result = read_vqa(dataset, sources.source(dataset), images)
    quarantine_uri = store.write_quarantine(quarantine_frame(result.rejected, "vqa_items", dataset), "vqa_items", dataset)
    if result.rejected:
        context.log.warning(f"vqa_items[{dataset}]: {len(result.rejected)} rows quarantined at {quarantine_uri}")
    contract = check_vqa_items(df, store.existing_images(all_refs(df["image_refs"])))
    yield Output(
        df,
        data_version=data_version(df),
        metadata={
            **table_metadata(df, ("split", "answer_type", "modality")),
            **quarantine_metadata(result.rejected, quarantine_uri),
            "images_stored": len(images.stored_ids),
            "source": sources.source(dataset).root,
        },
    )
    yield contract_check("vqa_items_contract", contract)


@asset(
    partitions_def=text_qa_partitions,
    group_name="ingest",
    code_version="text_qa_items.v1",
    io_manager_key="table_io",
    kinds={"polars", "parquet"},
    check_specs=[AssetCheckSpec("text_qa_items_contract", asset="text_qa_items", blocking=True,
                                description="GX suite: unique ids, answer among options, known splits, "
                                            "non-empty questions, licence set")],
)
def text_qa_items(context: AssetExecutionContext, storage: StorageResource, sources: SourcesResource):
    """Text-only medical MCQs of one dataset in one schema, with explanations where the source has them."""
    dataset = context.partition_key
    store = storage.get()
    df, result = read_text_qa(dataset, sources.source(dataset))
    quarantine_uri = store.write_quarantine(
        quarantine_frame(result.rejected, "text_qa_items", dataset), "text_qa_items", dataset
    )
    if result.rejected:
        context.log.warning(f"text_qa_items[{dataset}]: {len(result.rejected)} rows quarantined at {quarantine_uri}")
    yield Output(
        df,
        data_version=data_version(df),
        metadata={
            **table_metadata(df, ("split", "subject")),
            **quarantine_metadata(result.rejected, quarantine_uri),
            "with_explanation": int(df["explanation"].is_not_null().sum()),
            "source": sources.source(dataset).root,
        },
    )
    yield contract_check("text_qa_items_contract", check_text_qa_items(df))
