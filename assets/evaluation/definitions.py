"""The evaluation domain's Dagster definitions: per-benchmark results, the report, and their jobs."""

from dagster import AssetSelection, Definitions, define_asset_job

from .assets import eval_benchmarks, eval_report, eval_results

eval_results_job = define_asset_job(
    "eval_results_job",
    selection=AssetSelection.assets(eval_results),
    partitions_def=eval_benchmarks,
    description="Evaluate every checkpoint in every mode on one benchmark (partition).",
    tags={"medrwr/kind": "evaluation"},
)
eval_report_job = define_asset_job(
    "eval_report_job",
    selection=AssetSelection.assets(eval_report),
    description="Build the evaluation report from every materialized benchmark.",
)

defs = Definitions(assets=[eval_results, eval_report], jobs=[eval_results_job, eval_report_job])
