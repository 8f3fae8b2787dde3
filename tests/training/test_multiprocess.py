"""The many-process training path on CPU: ``accelerate launch`` with two processes (torch.distributed over
gloo, ``training/accelerate/cpu2.yaml``) runs a stage of the tiny model through ``python -m
training.launch`` with the same global batch as one process, every rank pinned to the same KB version,
and a run killed after its first checkpoint resumes from it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training.helpers import trainer_that_kills_itself
from tests.training.test_launch import launch_args

REPO = Path(__file__).resolve().parents[2]
TWO_CPU_PROCESSES = REPO / "training" / "accelerate" / "cpu2.yaml"
STEPS = 2


def run_stage(tmp_path, tiny_model_dir, kb, out: Path, processes: int, script: Path | None = None):
    """One stage-1 run of ``STEPS`` steps with a global batch of 4 completions: 4 per device on one process,
    2 per device on two."""
    args = launch_args(tmp_path, tiny_model_dir, kb, out)
    at = args.index("--config") + 1
    config = json.loads(args[at])
    config.update(max_steps=STEPS, per_device_train_batch_size=4 // processes, num_generations=2)
    args[at] = json.dumps(config)
    target = [str(script)] if script else ["-m", "training.launch"]
    head = [sys.executable]
    if processes > 1:
        head += ["-m", "accelerate.commands.launch", "--config_file", str(TWO_CPU_PROCESSES)]
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "TRL_EXPERIMENTAL_SILENCE": "1",
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        [*head, *target, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )


def history(out: Path) -> list[dict]:
    state = json.loads((out / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    return [h for h in state["log_history"] if "loss" in h]


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_two_processes_match_one_and_resume_after_a_kill(tmp_path, tiny_model_dir, kb):
    one = run_stage(tmp_path, tiny_model_dir, kb, tmp_path / "one", 1)
    assert one.returncode == 0, one.stderr[-3000:]

    # two processes, the first run killed (SIGKILL) right after checkpoint-1 is complete
    killer = tmp_path / "kill_after_1.py"
    killer.write_text(trainer_that_kills_itself(1, once_marker=str(tmp_path / "killed")))
    two = tmp_path / "two"
    killed = run_stage(tmp_path, tiny_model_dir, kb, two, 2, script=killer)
    assert killed.returncode != 0 and (tmp_path / "killed").exists()
    assert (two / "checkpoint-1" / "medrwr_lineage.json").exists() and not (two / "final").exists()
    resumed = run_stage(tmp_path, tiny_model_dir, kb, two, 2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    manifest = json.loads((two / "final" / "medrwr_lineage.json").read_text())
    assert manifest["world_size"] == 2 and manifest["global_step"] == STEPS
    assert manifest["resumed_from"].endswith("checkpoint-1")
    assert manifest["kb_version_per_rank"] == [manifest["kb_version"]] * 2  # both ranks pinned alike
    single = json.loads((tmp_path / "one" / "final" / "medrwr_lineage.json").read_text())
    assert single["world_size"] == 1 and single["kb_version_per_rank"] == [single["kb_version"]]
    # the same global batch: every step consumed as many prompt + completion tokens in both runs, and the
    # trainer's batch is 4 completions either way
    h1, h2 = history(tmp_path / "one"), history(two)
    assert [h["step"] for h in h1] == [h["step"] for h in h2] == list(range(1, STEPS + 1))
    assert [h["num_tokens"] for h in h1] == [h["num_tokens"] for h in h2]
    # the tiny random model never answers: every reward is 0, so both losses are exactly 0; this checks the
    # plumbing, not that two ranks learn like one
    for a, b in zip(h1, h2, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
