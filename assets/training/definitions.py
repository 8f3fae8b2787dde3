"""The training domain's Dagster definitions: the base model, stage items, the two GRPO stages and the job."""

from dagster import AssetSelection, Definitions, define_asset_job

from .assets import base_model, stage1_checkpoint, stage1_items, stage2_checkpoint, stage2_items

TRAINING_ASSETS = [base_model, stage1_items, stage1_checkpoint, stage2_items, stage2_checkpoint]

training_job = define_asset_job(
    "training_job",
    selection=AssetSelection.assets(*TRAINING_ASSETS),
    description="Build the base model and the stage items, then GRPO stage 1 and stage 2 (Pipes, gpu pool).",
    tags={"medrwr/kind": "training"},
)

defs = Definitions(assets=TRAINING_ASSETS, jobs=[training_job])
