"""The many-process training path on CPU: ``accelerate launch`` with two processes runs a stage of the tiny
model through ``python -m training.launch`` as DDP over gloo (``training/accelerate/cpu2.yaml``) and as
DeepSpeed ZeRO-2 and ZeRO-3 on DeepSpeed's CPU accelerator (``zero2_cpu2.yaml``, ``zero3_cpu2.yaml``): the
same global batch as one process, every rank pinned to the same KB version, and a run killed after its
first checkpoint resumes from it and saves a final model that loads."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training.helpers import trainer_that_kills_itself
from tests.training.test_launch import launch_args
from training import smoke

REPO = Path(__file__).resolve().parents[2]
ACCELERATE = REPO / "training" / "accelerate"
TWO_CPU_PROCESSES = ACCELERATE / "cpu2.yaml"
STEPS = 2
needs_deepspeed = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None,
    reason="deepspeed is not installed (make setup installs it)",
)


def run_stage(
    tmp_path,
    tiny_model_dir,
    kb,
    out: Path,
    processes: int,
    script: Path | None = None,
    accelerate_config: Path = TWO_CPU_PROCESSES,
):
    """One stage-1 run of ``STEPS`` steps with a global batch of 4 completions: 4 per device on one process,
    2 per device on two (launched with ``accelerate_config``)."""
    args = launch_args(tmp_path, tiny_model_dir, kb, out)
    at = args.index("--config") + 1
    config = json.loads(args[at])
    config.update(max_steps=STEPS, per_device_train_batch_size=4 // processes, num_generations=2)
    args[at] = json.dumps(config)
    target = [str(script)] if script else ["-m", "training.launch"]
    head = [sys.executable]
    if processes > 1:
        head += ["-m", "accelerate.commands.launch", "--config_file", str(accelerate_config)]
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "TRL_EXPERIMENTAL_SILENCE": "1",
        "OMP_NUM_THREADS": "1",
        "DS_ACCELERATOR": "cpu",  # DeepSpeed's CPU accelerator (gloo without oneCCL); unused otherwise
    }
    return subprocess.run(
        [*head, *target, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )


def history(out: Path) -> list[dict]:
    state = json.loads((out / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    return [h for h in state["log_history"] if "loss" in h]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, tiny_model_dir, kb):
    """The single-process reference run (``STEPS`` steps, 4 completions per step)."""
    root = tmp_path_factory.mktemp("one_process")
    run = run_stage(root, tiny_model_dir, kb, root / "out", 1)
    assert run.returncode == 0, run.stderr[-3000:]
    return root / "out"


@pytest.mark.slow
@pytest.mark.timeout(1500)
@pytest.mark.parametrize(
    "config",
    [
        "cpu2.yaml",
        pytest.param("zero2_cpu2.yaml", marks=needs_deepspeed),
        pytest.param("zero3_cpu2.yaml", marks=needs_deepspeed),
    ],
)
def test_two_processes_match_one_and_resume_after_a_kill(tmp_path, tiny_model_dir, kb, one_process, config):
    from training.tiny_model import load_policy

    # two processes, the first run killed (SIGKILL of rank 0) right after checkpoint-1 is complete
    killer = tmp_path / "kill_after_1.py"
    killer.write_text(trainer_that_kills_itself(1, once_marker=str(tmp_path / "killed")))
    two = tmp_path / "two"
    launch = dict(accelerate_config=ACCELERATE / config)
    killed = run_stage(tmp_path, tiny_model_dir, kb, two, 2, script=killer, **launch)
    assert killed.returncode != 0 and (tmp_path / "killed").exists(), killed.stderr[-3000:]
    assert (two / "checkpoint-1" / "medrwr_lineage.json").exists() and not (two / "final").exists()
    resumed = run_stage(tmp_path, tiny_model_dir, kb, two, 2, **launch)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    manifest = json.loads((two / "final" / "medrwr_lineage.json").read_text())
    assert manifest["world_size"] == 2 and manifest["global_step"] == STEPS
    assert manifest["resumed_from"].endswith("checkpoint-1")
    assert manifest["kb_version_per_rank"] == [manifest["kb_version"]] * 2  # both ranks pinned alike
    single = json.loads((one_process / "final" / "medrwr_lineage.json").read_text())
    assert single["world_size"] == 1 and single["kb_version_per_rank"] == [single["kb_version"]]
    # the same global batch: every step consumed as many prompt + completion tokens in both runs
    h1, h2 = history(one_process), history(two)
    assert [h["step"] for h in h1] == [h["step"] for h in h2] == list(range(1, STEPS + 1))
    assert [h["num_tokens"] for h in h1] == [h["num_tokens"] for h in h2]
    # the tiny random model never answers: every reward is 0, so both losses are exactly 0; this checks the
    # plumbing, not that two ranks learn like one
    for a, b in zip(h1, h2, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
    # the final model (gathered from the shards under ZeRO-3) loads and computes what the 1-process one does
    # (no step changed the weights: zero reward)
    import torch

    ids = torch.tensor([[1, 2, 3, 4, 5]])
    logits = []
    for folder in (one_process / "final", two / "final"):
        model, _ = load_policy(str(folder))
        with torch.no_grad():
            logits.append(model(input_ids=ids).logits)
    assert torch.allclose(logits[0], logits[1], atol=1e-5)


def stage2_args(tmp_path, tiny_model_dir, kb, out: Path, processes: int) -> list[str]:
    """Stage 2 (all four rewards, image items, the scoring pass of the confidence-gain reward) for ``STEPS``
    steps with a global batch of 4 completions."""
    from assets.common.profiles import SAMPLE_DATA_DIR
    from tests.training.test_stratify import stage2_candidates

    items, images = stage2_candidates(tmp_path, n=8)
    config = {
        **smoke.CPU,
        **smoke.TINY_STAGE,
        "max_steps": STEPS,
        "per_device_train_batch_size": 4 // processes,
        "beta": 0.0,
        "warmup_ratio": 0.0,
    }
    return [
        "--stage",
        "2",
        "--items",
        str(items),
        "--images-uri",
        str(images),
        "--kb-uri",
        kb[0],
        "--kb-tag",
        kb[1],
        "--medquad",
        str(SAMPLE_DATA_DIR / "medquad" / "medquad_qa.jsonl.gz"),
        "--slake-kg",
        str(SAMPLE_DATA_DIR / "slake" / "KG_mvqa-kg"),
        "--allow-random-image-embedder",
        "--base-model",
        str(tiny_model_dir),
        "--output-dir",
        str(out),
        "--config",
        json.dumps(config),
    ]


STAGE2_ENV = {
    "PYTHONPATH": str(REPO),
    "TRL_EXPERIMENTAL_SILENCE": "1",
    "OMP_NUM_THREADS": "1",
    "DS_ACCELERATOR": "cpu",
}


def run_stage2(tmp_path, tiny_model_dir, kb, processes: int, config: str = "cpu2.yaml") -> Path:
    out = tmp_path / f"p{processes}"
    head = [sys.executable]
    if processes > 1:
        head += ["-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE / config)]
    run = subprocess.run(
        [*head, "-m", "training.launch", *stage2_args(tmp_path, tiny_model_dir, kb, out, processes)],
        cwd=REPO,
        env={**os.environ, **STAGE2_ENV},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def stage2_one_process(tmp_path_factory, tiny_model_dir, kb):
    """The single-process stage-2 reference run."""
    return run_stage2(tmp_path_factory.mktemp("stage2_one"), tiny_model_dir, kb, 1)


@pytest.mark.slow
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("config", ["cpu2.yaml", pytest.param("zero3_cpu2.yaml", marks=needs_deepspeed)])
def test_stage2_on_two_processes_matches_one(tmp_path, tiny_model_dir, kb, stage2_one_process, config):
    """Stage 2 on two processes (DDP, and ZeRO-3, where the scoring pass and every generate call are
    collectives over the sharded weights): the same global batch and losses as one process, both ranks
    pinned to one KB version, a final model saved."""
    two = run_stage2(tmp_path, tiny_model_dir, kb, 2, config)
    manifest = json.loads((two / "final" / "medrwr_lineage.json").read_text())
    assert manifest["stage"] == 2 and manifest["world_size"] == 2 and manifest["global_step"] == STEPS
    assert manifest["kb_version_per_rank"] == [manifest["kb_version"]] * 2
    h1, h2 = history(stage2_one_process), history(two)
    assert [h["num_tokens"] for h in h1] == [h["num_tokens"] for h in h2]
    # as in stage 1, the tiny random model earns no reward, so both losses are 0: plumbing, not learning
    for a, b in zip(h1, h2, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
