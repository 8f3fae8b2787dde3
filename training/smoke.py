"""Every smoke-size value in one place: the smoke profile's run knobs (``assets.common.profiles``) and the
tiny trainer runs of the tests. Plain dicts, no heavy import (the code location reads them at load time).

- :data:`STAGE`: the smoke profile's knobs of ``stage1_checkpoint`` / ``stage2_checkpoint`` (Dagster
  ``StageRunConfig`` typed knobs): a few GRPO steps of a tiny model on 2 CPU cores.
- :data:`STAGE2_POLICY`: the budgets ``stage2_items`` samples the stage-1 policy with (stage 2's).
- :data:`EVAL`: the smoke profile's knobs of ``eval_results`` (rollout budgets in the
  :class:`training.rollout.RolloutSettings` vocabulary).
- :data:`SMALL_STAGE`, :data:`SMALL_EVAL`: the ``small`` profile's stage-1 and evaluation knobs (a real
  135M-parameter model on a laptop CPU).
- :data:`TRAINER`: ``StageConfig`` overrides of the in-process trainer tests (``build_trainer``): tiny
  batches, short rounds, two steps, on CPU.
- :data:`TINY_STAGE`: the smallest launched stage (``python -m training.launch``) of the launch and
  killed-stage tests.
- :data:`ONE_STEP_STAGE`: the one-step ``stage1_checkpoint`` knobs of the audit chain test
  (``tests/audit/chain.py``).
"""

from __future__ import annotations

from typing import Any

CPU: dict[str, Any] = {"use_cpu": True, "bf16": False, "gradient_checkpointing": False}
"""The trainer settings of a machine without a GPU."""

STAGE: dict[str, Any] = {
    "max_steps": 2,
    "num_generations": 2,
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 1,
    "max_rounds": 2,
    "max_new_tokens_per_round": 16,
    "max_completion_length": 48,
    "save_steps": 1,
}

STAGE2_POLICY: dict[str, Any] = {
    k: STAGE[k] for k in ("max_rounds", "max_new_tokens_per_round", "max_completion_length")
}
"""The smoke and small profiles' ``stage2_items`` policy sampling (``policy_overrides``): the rollout budgets
of their ``stage2_checkpoint`` (:data:`STAGE`), so the stratification samples as stage 2 trains."""

EVAL: dict[str, Any] = {
    "max_items": 8,
    "max_rounds": 2,
    "max_new_tokens_per_round": 16,
    "max_completion_tokens": 48,
}

SMALL_STAGE: dict[str, Any] = {
    **STAGE,
    "max_steps": 4,
    "num_generations": 4,
    "per_device_train_batch_size": 8,
    "max_new_tokens_per_round": 32,
    "max_completion_length": 64,
}
"""The small profile's stage-1 knobs: SmolLM2-135M on 2 CPU cores (4 generations per prompt: with 2, every
group had equal rewards and a zero gradient)."""

SMALL_EVAL: dict[str, Any] = {
    "checkpoints": ["base", "stage2"],
    "max_items": 16,
    "max_rounds": 2,
    "max_new_tokens_per_round": 32,
    "max_completion_tokens": 64,
}
"""The small profile's evaluation: the start (``base``) and the end (``stage2``) of training, every mode, the
same budgets for every mode, 16 items per benchmark (the intermediate stage-1 checkpoint is left out: with 24
items and all three checkpoints one benchmark took over half an hour on 2 cores)."""

TRAINER: dict[str, Any] = {
    **CPU,
    "learning_rate": 1e-3,
    "num_generations": 4,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "max_completion_length": 96,
    "max_new_tokens_per_round": 32,
    "max_steps": 2,
    "save_steps": 1,
    "warmup_ratio": 0.0,
    "dataloader_num_workers": 0,
    "seed": 0,
}

TINY_STAGE: dict[str, Any] = {
    "num_generations": 2,
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 1,
    "max_rounds": 2,
    "max_new_tokens_per_round": 8,
    "max_completion_length": 24,
    "save_steps": 1,
    "seed": 0,
}

ONE_STEP_STAGE: dict[str, Any] = {
    "max_steps": 1,
    "num_generations": 2,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 1,
    "max_rounds": 1,
    "max_new_tokens_per_round": 8,
    "max_completion_length": 16,
    "save_steps": 1,
    "seed": 0,
}
