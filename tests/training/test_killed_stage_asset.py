"""A training subprocess killed mid-run is retried by Dagster (the asset's RetryPolicy) and resumes from its
last complete checkpoint in the same work folder; no optimizer step is lost and the model is published
once."""

import json
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize

from assets.knowledge.assets import kb_text_index
from assets.training import stages
from assets.training.assets import base_model, stage1_items
from assets.training.stages import stage1_checkpoint
from orchestration.definitions import build_resources
from storage.pointers import ModelPointer
from storage.root import Storage
from tests.training.helpers import trainer_that_kills_itself
from tests.training.test_launch import stage1_parquet
from training import smoke


def _publish_inputs(store: Storage, tmp_path: Path, tiny_model_dir: Path, kb) -> None:
    """The three inputs of stage1_checkpoint as published pointer tables (what the upstream assets write)."""
    import polars as pl

    from assets.training.launching import model_row

    items = pl.read_parquet(stage1_parquet(tmp_path / "items.parquet"))
    store.write_table(items, "stage1_items")
    store.write_table(model_row("base", "tiny", str(tiny_model_dir), "sha", {"kind": "tiny"}), "base_model")
    store.write_table(
        pl.DataFrame(
            [
                {
                    "db": "kb",
                    "table": "kb_text",
                    "tag": kb[1],
                    "version": 1,
                    "uri": kb[0],
                    "embedder": json.dumps({"model_id": "sentence-transformers/all-MiniLM-L6-v2"}),
                }
            ]
        ),
        "kb_text_index",
    )


MAX_STEPS = 10
KILL_AFTER_STEP = 3


def _dies_once_after_checkpoint(real_stage_command, marker: Path):
    """``stage_command`` whose trainer (``python -m training.launch ...``) runs as a script that kills itself
    with SIGKILL right after checkpoint-3, the first time only (``marker``): Dagster's retry then resumes."""

    def stage_command(**kwargs):
        command = real_stage_command(**kwargs)
        i = command.index("training.launch")
        assert command[i - 1] == "-m", command
        return [
            *command[: i - 1],
            "-c",
            trainer_that_kills_itself(KILL_AFTER_STEP, str(marker)),
            *command[i + 1 :],
        ]

    return stage_command


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_killed_training_step_is_retried_and_resumes(tmp_path, monkeypatch, tiny_model_dir, kb):
    monkeypatch.setenv("MEDRWR_WORK_DIR", str(tmp_path / "work"))
    store = Storage()
    _publish_inputs(store, tmp_path, tiny_model_dir, kb)
    # the KB fixture lives outside the storage root: point the pointer's db at it
    monkeypatch.setattr(Storage, "lancedb_uri", lambda self, name="kb": kb[0])
    marker = tmp_path / "killed_once"
    monkeypatch.setattr(stages, "stage_command", _dies_once_after_checkpoint(stages.stage_command, marker))
    config = {**smoke.TINY_STAGE, "max_steps": MAX_STEPS}
    result = materialize(
        [
            stage1_checkpoint,
            stage1_items.to_source_asset(),
            base_model.to_source_asset(),
            kb_text_index.to_source_asset(),
        ],
        resources=build_resources(),
        instance=DagsterInstance.ephemeral(),
        run_config={"ops": {"stage1_checkpoint": {"config": config}}},
        raise_on_error=False,
    )
    assert marker.exists(), "the trainer was never killed: the test did not exercise a fault"
    assert result.success
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retries) == 1
    [mat] = result.asset_materializations_for_node("stage1_checkpoint")
    lineage = mat.metadata["lineage"].value
    assert lineage["global_step"] == MAX_STEPS
    assert (lineage["resumed_from"] or "").endswith(f"checkpoint-{KILL_AFTER_STEP}")
    path = ModelPointer.from_row(store.read_table("stage1_checkpoint")).path
    assert store.exists(*path[len(store.root) + 1 :].split("/"), "model.safetensors")
    # metrics of every step came back through Pipes while the trainer ran
    assert f"| {MAX_STEPS} |" in mat.metadata["metrics_by_step"].value
