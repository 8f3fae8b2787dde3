"""The one place a GRPO trainer is built: :func:`build_trainer` wires a stage config, its rewards and the
retrieval rollout into TRL's ``GRPOTrainer``. ``training.launch`` (the stage assets' process), the stage tests
and the benchmarks all call it, so the tests exercise the wiring the stage assets run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .config import StageConfig
from .rewards import QuerySemanticReward, stage_rewards
from .rollout import Rollout


def stage_rollout(config: StageConfig, retriever: Any, **options: Any) -> Rollout:
    """The stage's rollout: ``config.rollout_settings()``, the config's sampling, scoring in stage 2 (the
    confidence-gain reward needs it), rounds kept in step across processes; ``options`` are further
    :class:`~training.rollout.Rollout` arguments (``force_answer=True`` ...)."""
    from accelerate import PartialState

    defaults = {
        "temperature": config.temperature,
        "top_p": config.top_p,
        "score": config.stage == 2,
        "sync_rounds": PartialState().num_processes > 1,
    }
    return Rollout(retriever, config.rollout_settings(), **{**defaults, **options})


def build_trainer(
    model: Any,
    processor: Any,
    config: StageConfig,
    train_dataset: Any,
    retriever: Any,
    *,
    query_reward: QuerySemanticReward | None = None,
    callbacks: Sequence[Any] | None = None,
    **rollout_options: Any,
):
    """TRL's ``GRPOTrainer`` for ``config``: the stage's reward functions
    (:func:`training.rewards.stage_rewards`; stage 2 needs ``query_reward``) weighted by
    ``config.reward_weights``, and :func:`stage_rollout` over ``retriever`` as ``rollout_func``.
    ``retriever=None``: no rollout_func (TRL's own single-turn generation, the plain-GRPO baseline of
    ``benchmarks/grpo_overhead.py``). ``train_dataset``: a ``datasets.Dataset`` or a list of row dicts (TRL
    layout: ``prompt`` plus the reward columns)."""
    from datasets import Dataset
    from trl import GRPOTrainer

    reward_funcs, _ = stage_rewards(config.stage, query_reward)  # weights: config.reward_weights
    if isinstance(train_dataset, list):
        train_dataset = Dataset.from_list(train_dataset)
    rollout = stage_rollout(config, retriever, **rollout_options) if retriever is not None else None
    return GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=config,
        train_dataset=train_dataset,
        processing_class=processor,
        rollout_func=rollout,
        callbacks=list(callbacks) if callbacks else None,
    )
