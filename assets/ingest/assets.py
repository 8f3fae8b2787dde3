"""Ingest group: VQA and text-QA datasets normalized into one schema each, gated by blocking contracts.

Each asset computes its table, stores images in a staging area, runs its contract, and publishes only when the
contract passes (:mod:`assets.common.gates`).
"""

from typing import Literal

from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    Config,
    StaticPartitionsDefinition,
    asset,
)
from pydantic import Field

from assets.common.backfill import PER_PARTITION
from assets.common.gates import Publication, publish_or_refuse
from assets.common.images import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_PIXELS, ImageIngestor
from assets.common.metadata import (
    audit_trail,
    content_version,
    contract_check,
    quarantine_metadata,
    table_metadata,
)
from assets.common.records import quarantine_frame
from assets.common.resources import SourcesResource, StorageResource
from quality.contracts import all_refs, check_text_qa_items, check_vqa_items, with_volume

from .text_qa import TEXT_QA_DATASETS, read_text_qa
from .vqa import VQA_DATASETS, read_vqa

vqa_partitions = StaticPartitionsDefinition(list(VQA_DATASETS))
text_qa_partitions = StaticPartitionsDefinition(list(TEXT_QA_DATASETS))


class VqaItemsConfig(Config):
    """Run knobs of ``vqa_items``."""

    image_check: Literal["fast", "full"] = Field(
        default="fast", description="fast: header + end-of-image marker; full: also decode every image"
    )
    max_quarantine_share: float = Field(
        default=0.2, description="the contract fails above this share of source rows quarantined"
    )
    max_image_pixels: int = Field(
        default=DEFAULT_MAX_IMAGE_PIXELS,
        description="an image whose header declares more pixels is quarantined before it is decoded",
    )
    max_image_bytes: int = Field(
        default=DEFAULT_MAX_IMAGE_BYTES, description="an image file larger than this is quarantined"
    )


class TextQaItemsConfig(Config):
    """Run knobs of ``text_qa_items``."""

    max_quarantine_share: float = Field(
        default=0.2, description="the contract fails above this share of source rows quarantined"
    )


@asset(
    backfill_policy=PER_PARTITION,
    partitions_def=vqa_partitions,
    group_name="ingest",
    code_version="vqa_items.v2",
    io_manager_key="table_io",
    kinds={"polars", "parquet"},
    check_specs=[
        AssetCheckSpec(
            "vqa_items_contract",
            asset="vqa_items",
            blocking=True,
            partitions_def=vqa_partitions,
            description="GX suite: rows kept, quarantined share bounded, unique ids, answer "
            "among options, images resolvable, known splits, non-empty questions, "
            "licence set",
        )
    ],
)
def vqa_items(
    context: AssetExecutionContext, config: VqaItemsConfig, storage: StorageResource, sources: SourcesResource
):
    """Medical VQA items of one dataset, normalized; images stored once by content id."""
    dataset = context.partition_key
    store = storage.get()
    with store.staging(
        f"{context.run.run_id}-vqa_items-{dataset}"
    ) as stage:  # discarded in a finally if the step fails
        images = ImageIngestor(
            stage,
            full_check=config.image_check == "full",
            max_pixels=config.max_image_pixels,
            max_bytes=config.max_image_bytes,
        )
        src = sources.source(dataset)
        df, result = read_vqa(dataset, src, images)
        contract = with_volume(
            check_vqa_items(
                df,
                stage.existing_images(all_refs(df["image_refs"])),
                **audit_trail(store, context, "vqa_items", dataset),
            ),
            df.height,
            len(result.rejected),
            config.max_quarantine_share,
        )
        pub = Publication(
            "vqa_items",
            dataset,
            df,
            quarantine_frame(result.rejected, "vqa_items", dataset),
            metadata={
                **table_metadata(df, ("split", "answer_type", "modality")),
                **quarantine_metadata(result.rejected),
                "images_stored": len(images.stored_ids),
                "source": src.root,
                "profile": sources.profile,
            },
            data_version=content_version(df),
            stage=stage,
            inputs=src.input_manifest(),
        )
        yield from publish_or_refuse(context, store, pub, [contract_check("vqa_items_contract", contract)])


@asset(
    backfill_policy=PER_PARTITION,
    partitions_def=text_qa_partitions,
    group_name="ingest",
    code_version="text_qa_items.v2",
    io_manager_key="table_io",
    kinds={"polars", "parquet"},
    check_specs=[
        AssetCheckSpec(
            "text_qa_items_contract",
            asset="text_qa_items",
            blocking=True,
            partitions_def=text_qa_partitions,
            description="GX suite: rows kept, quarantined share bounded, unique ids, answer "
            "among options, known splits, non-empty questions, licence set",
        )
    ],
)
def text_qa_items(
    context: AssetExecutionContext,
    config: TextQaItemsConfig,
    storage: StorageResource,
    sources: SourcesResource,
):
    """Text-only medical MCQs of one dataset in one schema, with explanations where the source has them."""
    dataset = context.partition_key
    store = storage.get()
    src = sources.source(dataset)
    df, result = read_text_qa(dataset, src)
    contract = with_volume(
        check_text_qa_items(df, **audit_trail(store, context, "text_qa_items", dataset)),
        df.height,
        len(result.rejected),
        config.max_quarantine_share,
    )
    pub = Publication(
        "text_qa_items",
        dataset,
        df,
        quarantine_frame(result.rejected, "text_qa_items", dataset),
        metadata={
            **table_metadata(df, ("split", "subject")),
            **quarantine_metadata(result.rejected),
            "with_explanation": int(df["explanation"].is_not_null().sum()),
            "source": src.root,
            "profile": sources.profile,
        },
        data_version=content_version(df),
        inputs=src.input_manifest(),
    )
    yield from publish_or_refuse(context, store, pub, [contract_check("text_qa_items_contract", contract)])
