"""The evaluation domain's Dagster definitions: per-benchmark results, the report, the promotion gate, their
jobs, and the sensor that evaluates after a retraining."""

from dagster import AssetSelection, Definitions, define_asset_job

from .assets import eval_benchmarks, eval_report, eval_results, promoted_checkpoint
from .sensors import make_evaluate_after_retrain_sensor

eval_report_job = define_asset_job(
    "eval_report_job",
    selection=AssetSelection.assets(eval_report),
    description="Build the evaluation report from every materialized benchmark.",
)
evaluate_job = define_asset_job(
    "evaluate_job",
    selection=AssetSelection.assets(eval_results),
    partitions_def=eval_benchmarks,
    description="Evaluate every checkpoint in every mode on one benchmark (partition): the main command's "
    "evaluation step, and the re-evaluation evaluate_after_retrain_sensor requests per benchmark "
    "after a retraining.",
    tags={"medrwr/kind": "evaluation"},
)
promote_job = define_asset_job(
    "promote_job",
    selection=AssetSelection.assets(eval_report, promoted_checkpoint),
    description="The report, then the promotion gate: stage 2 becomes the promoted checkpoint only when its "
    "evaluation is no worse than the promoted one's (paired bootstrap, blocking check).",
)

defs = Definitions(
    assets=[eval_results, eval_report, promoted_checkpoint],
    jobs=[eval_report_job, evaluate_job, promote_job],
    sensors=[make_evaluate_after_retrain_sensor(evaluate_job, promote_job)],
)
