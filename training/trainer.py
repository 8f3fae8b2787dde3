"""The one place a GRPO trainer is built: :func:`build_trainer` wires a stage config, its rewards and the
retrieval rollout into TRL's ``GRPOTrainer``. ``training.launch`` (the stage assets' process), the stage tests
and the benchmarks all call it, so the tests exercise the wiring the stage assets run.

The config's two ablation switches are applied here and nowhere else (:mod:`training.config`):
``retriever="random"`` replaces the KB retriever by :func:`stage_retriever`'s random one over the same KB
version; ``train_on_inserted=True`` wraps the rollout in :class:`TrainOnInserted` (env_mask forced to 1).
Both default to production behaviour."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .config import StageConfig
from .rewards import QuerySemanticReward, stage_rewards
from .rollout import Rollout


def stage_retriever(config: StageConfig, retriever: Any) -> Any:
    """The retriever the stage's rollout searches: ``retriever`` itself (``config.retriever == "kb"``,
    production), or, for the ``"random"`` ablation, a
    :class:`training.evaluation.evaluate.KBRandomRetriever` over the table version ``retriever`` is pinned
    to, seeded with ``config.seed`` (``k`` passages drawn uniformly without replacement per query, whatever
    the query; only the drawn rows are read). ``retriever`` must then be a ``retrieval.search.Retriever``."""
    if config.retriever == "kb":
        return retriever
    from .evaluation.evaluate import KBRandomRetriever

    return KBRandomRetriever.like(retriever, seed=config.seed)


class TrainOnInserted:
    """ABLATION ONLY (``config.train_on_inserted``): TRL's ``rollout_func`` of ``rollout`` with every
    ``env_mask`` set to 1, so the loss also covers the system-inserted tokens (retrieved passages, forced
    ``<answer>`` openers, the closing EOS) as if the policy had sampled them. Everything else (ids, rewards'
    trajectories, metrics) is the wrapped rollout's."""

    def __init__(self, rollout: Rollout):
        self.rollout = rollout

    def __call__(self, prompts: list, trainer: Any) -> dict[str, list]:
        out = self.rollout(prompts, trainer)
        out["env_mask"] = [[1] * len(mask) for mask in out["env_mask"]]
        return out


def stage_rollout(config: StageConfig, retriever: Any, **options: Any) -> Rollout:
    """The stage's rollout: ``config.rollout_settings()``, the config's sampling with nothing banned (the
    policy that samples is the policy TRL scores), scoring in stage 2 (the confidence-gain reward needs it),
    rounds kept in step across processes; ``options`` are further
    :class:`~training.rollout.Rollout` arguments (``force_answer=True`` ...)."""
    from accelerate import PartialState

    defaults = {
        "temperature": config.temperature,
        "top_p": config.top_p,
        "ban_queries": False,  # on-policy: nothing is banned while sampling (Rollout's docstring)
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
    ``config.reward_weights``, and :func:`stage_rollout` over :func:`stage_retriever` of ``retriever`` as
    ``rollout_func`` (wrapped in :class:`TrainOnInserted` for that ablation).
    ``retriever=None``: no rollout_func (TRL's own single-turn generation, the plain-GRPO baseline of
    ``benchmarks/grpo_overhead.py``; the ablation switches need a rollout and are refused there).
    ``train_dataset``: a ``datasets.Dataset`` or a list of row dicts (TRL layout: ``prompt`` plus the reward
    columns)."""
    from datasets import Dataset
    from trl import GRPOTrainer

    reward_funcs, _ = stage_rewards(config.stage, query_reward)  # weights: config.reward_weights
    if isinstance(train_dataset, list):
        train_dataset = Dataset.from_list(train_dataset)
    rollout = None
    if retriever is not None:
        rollout = stage_rollout(config, stage_retriever(config, retriever), **rollout_options)
        if config.train_on_inserted:
            rollout = TrainOnInserted(rollout)
    elif config.retriever != "kb" or config.train_on_inserted:
        raise ValueError(
            "the ablation switches retriever='random' and train_on_inserted=True act on the retrieval "
            "rollout; build_trainer got retriever=None (plain GRPO)"
        )
    return GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=config,
        train_dataset=train_dataset,
        processing_class=processor,
        rollout_func=rollout,
        callbacks=list(callbacks) if callbacks else None,
    )
