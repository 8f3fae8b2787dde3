"""Jobs: one per partitions definition, since a run materializes one partition key."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

from assets.echo import echo_sources
from assets.ingest import text_qa_partitions, vqa_partitions
from assets.knowledge import kb_source_partitions

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

echo_ingest_job = define_asset_job(
    "echo_ingest_job",
    selection=AssetSelection.assets("echo_studies"),
    partitions_def=echo_sources,
    description="Decode, de-identify and keyframe one echo source (dynamic partition) into echo_studies.",
)
ecbench_job = define_asset_job(
    "ecbench_job",
    selection=AssetSelection.assets("ecbench"),
    description="Build the ECBench MCQs from every materialized echo_studies partition, with its checks.",
)
kb_passages_job = define_asset_job(
    "kb_passages_job",
    selection=AssetSelection.assets("kb_passages"),
    partitions_def=kb_source_partitions,
    description="Read, chunk and deduplicate one knowledge-base source (dynamic partition) into kb_passages.",
)
kb_index_job = define_asset_job(
    "kb_index_job",
    selection=AssetSelection.assets("kb_text_index", "kb_image_cases", "kb_image_index"),
    description="Sync the LanceDB text and image indexes with every materialized KB source and image case.",
)

JOBS = [vqa_ingest_job, text_qa_ingest_job, echo_ingest_job, ecbench_job, kb_passages_job, kb_index_job]
