"""The training domain's Dagster definitions: the base model, stage items, the two GRPO stages, their jobs,
and the sensor that retrains on a new knowledge-base index."""

from dagster import AssetSelection, Definitions, define_asset_job

from .assets import base_model, split_use, stage1_items, stage2_items
from .sensors import STAGES, kb_index_retrain_sensor
from .stages import stage1_checkpoint, stage2_checkpoint

TRAINING_ASSETS = [base_model, split_use, stage1_items, stage1_checkpoint, stage2_items, stage2_checkpoint]

training_job = define_asset_job(
    "training_job",
    selection=AssetSelection.assets(*TRAINING_ASSETS),
    description="Build the base model, the split-use decisions and the stage items, then GRPO stage 1 and "
    "stage 2 (Pipes, gpu pool).",
    tags={"medrwr/kind": "training"},
)
retrain_job = define_asset_job(
    "retrain_job",
    selection=AssetSelection.assets(
        split_use, stage1_items, stage1_checkpoint, stage2_items, stage2_checkpoint
    ),
    description="Retrain from the published base model: split use -> stage 1 -> stage 2 (a run may select "
    "stage 2 only, as the KB-index sensor does by default). evaluate_after_retrain_sensor then "
    "requests evaluate_job per benchmark, and promote_job once every benchmark is evaluated.",
    tags={"medrwr/kind": "training"},
)

RETRAIN_ASSETS = STAGES["all"]  # what a full retraining materializes (sensor and weekly schedule)

defs = Definitions(
    assets=TRAINING_ASSETS, jobs=[training_job, retrain_job], sensors=[kb_index_retrain_sensor]
)
