"""The echo domain's Dagster definitions: ``echo_studies`` (dynamic partitions per source) and its job."""

from dagster import AssetSelection, Definitions, define_asset_job

from .assets import echo_sources, echo_studies

echo_ingest_job = define_asset_job(
    "echo_ingest_job",
    selection=AssetSelection.assets("echo_studies"),
    partitions_def=echo_sources,
    description="Decode, de-identify and keyframe one echo source (dynamic partition) into echo_studies.",
)

defs = Definitions(assets=[echo_studies], jobs=[echo_ingest_job])
