"""The ingest domain's Dagster definitions: its assets and one job per partitions definition."""

from dagster import AssetSelection, Definitions, define_asset_job

from .assets import text_qa_items, text_qa_partitions, vqa_items, vqa_partitions

vqa_ingest_job = define_asset_job(
    "vqa_ingest_job",
    selection=AssetSelection.assets("vqa_items"),
    partitions_def=vqa_partitions,
    description="Normalize one VQA dataset (partition) into vqa_items, with its contract check.",
)
text_qa_ingest_job = define_asset_job(
    "text_qa_ingest_job",
    selection=AssetSelection.assets("text_qa_items"),
    partitions_def=text_qa_partitions,
    description="Normalize one text-QA dataset (partition) into text_qa_items, with its contract check.",
)

defs = Definitions(assets=[vqa_items, text_qa_items], jobs=[vqa_ingest_job, text_qa_ingest_job])
