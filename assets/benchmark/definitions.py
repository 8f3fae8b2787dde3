"""The benchmark domain's Dagster definitions: ECBench and its job."""

from dagster import AssetSelection, Definitions, define_asset_job

from .assets import ecbench

ecbench_job = define_asset_job(
    "ecbench_job",
    selection=AssetSelection.assets("ecbench"),
    description="Build the ECBench MCQs from every materialized echo_studies partition, with its checks.",
)

defs = Definitions(assets=[ecbench], jobs=[ecbench_job])
