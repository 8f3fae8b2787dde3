"""The stage entry point end to end: killed mid-run, restarted under Dagster Pipes, resumes from the last
complete checkpoint without losing a step, and streams metrics while it trains."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from tests.training.helpers import trainer_that_kills_itself
from training import smoke

REPO = Path(__file__).resolve().parents[2]


def stage1_parquet(path: Path) -> Path:
    rows = [
        {
            "item_id": f"i{i}",
            "dataset": "medmcqa",
            "split": "validation",
            "question": "Which disease is an infection of the lung?",
            "context": None,
            "options": ["Pneumonia", "Cirrhosis", "Asthma", "Gout"],
            "answer_label": "A",
            "answer": "Pneumonia",
            "explanation": "Pneumonia infects the lung.",
            "image_ref": None,
            "difficulty": None,
        }
        for i in range(8)
    ]
    pl.DataFrame(rows).write_parquet(path)
    return path


MAX_STEPS = 10
KILL_AFTER_STEP = 3

# The first trainer kills itself right after checkpoint-<KILL_AFTER_STEP> is complete (see
# tests.training.helpers.trainer_that_kills_itself): the kill lands at the same step whatever the machine's
# speed or load; polling for the checkpoint from the test raced a fast or a starved trainer.
KILL_ITSELF = trainer_that_kills_itself(KILL_AFTER_STEP)


def launch_args(tmp_path, tiny_model_dir, kb, out):
    items = stage1_parquet(tmp_path / "stage1_items.parquet")
    config = {
        **smoke.CPU,
        **smoke.TINY_STAGE,
        "max_steps": MAX_STEPS,
        "beta": 0.0,
        "learning_rate": 1e-3,
        "warmup_ratio": 0.0,
    }
    return [
        "--stage",
        "1",
        "--items",
        str(items),
        "--kb-uri",
        kb[0],
        "--kb-tag",
        kb[1],
        "--base-model",
        str(tiny_model_dir),
        "--output-dir",
        str(out),
        "--config",
        json.dumps(config),
        "--lineage",
        json.dumps({"stage1_items_version": "v-test"}),
        "--git-commit",
        "test-commit",
    ]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_killed_stage_resumes_under_pipes_and_streams_metrics(tmp_path, tiny_model_dir, kb):
    from dagster import AssetExecutionContext, PipesSubprocessClient, asset, materialize

    out = tmp_path / "stage1"
    args = launch_args(tmp_path, tiny_model_dir, kb, out)
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TRL_EXPERIMENTAL_SILENCE="1")
    first = subprocess.run(
        [sys.executable, "-c", KILL_ITSELF, *args],
        cwd=REPO,
        env=env,
        timeout=600,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert first.returncode == -signal.SIGKILL, first.stderr.decode(errors="replace")[-3000:]
    from training.launch import last_complete_checkpoint

    killed_at = int(last_complete_checkpoint(out).name.split("-")[1])
    assert killed_at == KILL_AFTER_STEP and not (out / "final").exists()

    messages: list[dict] = []

    @asset
    def stage1_checkpoint(context: AssetExecutionContext, pipes: PipesSubprocessClient):
        invocation = pipes.run(
            command=[sys.executable, "-m", "training.launch", *args],
            context=context,
            env={"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"},
            cwd=str(REPO),
        )
        messages.extend(invocation.get_custom_messages())
        return invocation.get_materialize_result()

    result = materialize([stage1_checkpoint], resources={"pipes": PipesSubprocessClient()})
    assert result.success
    manifest = json.loads((out / "final" / "medrwr_lineage.json").read_text())
    assert (
        manifest["resumed_from"].endswith(f"checkpoint-{killed_at}") and manifest["global_step"] == MAX_STEPS
    )
    # the steps before the kill come first, restored from the checkpoint's history and marked; then every
    # remaining step once: none lost, none repeated
    restored = [m for m in messages if m.get("restored")]
    live = [m for m in messages if not m.get("restored")]
    assert [m["step"] for m in restored] == list(range(1, killed_at + 1))
    assert [m["step"] for m in live] == list(range(killed_at + 1, MAX_STEPS + 1))
    assert all("rewards/format/mean" in m["metrics"] for m in restored)
    times = [m["time"] for m in messages]
    assert times == sorted(times) and times[0] < (out / "final" / "medrwr_lineage.json").stat().st_mtime
    # the first step after the resume counts its own tokens, not every restored step's too
    rates = [m["metrics"]["train/tokens_per_s"] for m in live]
    assert rates[0] < 2 * max(rates[1:]), rates
    for m in live:
        metrics = m["metrics"]
        assert metrics["rollout/prefix_violations"] == 0
        assert {
            "rewards/format/mean",
            "rewards/accuracy/mean",
            "rollout/query_rate",
            "rollout/retrieval_calls",
            "rollout/rounds",
            "entropy",
            "frac_reward_zero_std",
            "train/step_time_s",
        } <= set(metrics)
    mat = result.asset_materializations_for_node("stage1_checkpoint")[0]
    meta = {k: v.value for k, v in mat.metadata.items()}
    assert (
        meta["git_commit"] == "test-commit" and meta["kb_tag"] == kb[1] and meta["global_step"] == MAX_STEPS
    )
    assert meta["stage1_items_version"] == "v-test" and len(meta["config_hash"]) == 16
    assert (out / "final" / "model.safetensors").exists()
    for name in ("items_sha256", "kb_version", "text_embedder", "base_model", "config"):
        assert name in manifest
    from training.tiny_model import load_policy

    model, processor = load_policy(str(out / "final"))  # the checkpoint loads through the same code
    assert model.config.model_type == "qwen2_5_vl"
