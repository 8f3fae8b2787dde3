"""The knowledge domain's Dagster definitions: KB passages per source, the LanceDB indexes, their jobs, and
the sensor that refreshes a source when its files change."""

from dagster import AssetSelection, Definitions, define_asset_job

from .assets import kb_image_cases, kb_image_index, kb_passages, kb_source_partitions, kb_text_index
from .sensors import kb_sources_sensor

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
kb_refresh_job = define_asset_job(
    "kb_refresh_job",
    selection=AssetSelection.assets("kb_passages", "kb_text_index"),
    partitions_def=kb_source_partitions,
    description="Refresh one KB source (partition) into kb_passages, then sync and re-tag the text index. "
    "The image index does not read text sources; kb_index_job syncs it.",
    tags={"medrwr/kind": "kb_refresh"},
)

defs = Definitions(
    assets=[kb_passages, kb_text_index, kb_image_cases, kb_image_index],
    jobs=[kb_passages_job, kb_index_job, kb_refresh_job],
    sensors=[kb_sources_sensor],
)
