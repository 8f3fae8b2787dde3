"""The two ablation switches of StageConfig (``retriever``, ``train_on_inserted``): off by default, and when
set, they change what the GRPO trainer built by ``training.trainer.build_trainer`` gets: the passages its
rollout inserts, and the mask of the tokens its loss covers."""

import os

import pytest

from tests.training.conftest import PASSAGES, mcq_rows
from tests.training.helpers import ScriptedGenerate
from training import smoke
from training.config import StageConfig, stage_config
from training.evaluation.evaluate import KBRandomRetriever
from training.launch import ablations
from training.trainer import TrainOnInserted, build_trainer

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def always_query(call, row, ctx):
    """Round 1: every row asks for pneumonia; then every row answers A (the system prompt names the tags
    too, so only the assistant turn is looked at)."""
    if "</retrieve>" not in ctx.rsplit("assistant", 1)[-1]:
        return "<think> look it up </think><query> pneumonia </query>"
    return "<think> so </think><answer> A </answer>"


def trainer_for(policy, kb_retriever, tmp_path, **overrides):
    model, processor = policy
    model.generate = ScriptedGenerate(processor.tokenizer, always_query)
    cfg = stage_config(1, str(tmp_path / "out"), **dict(smoke.TRAINER, save_strategy="no", **overrides))
    return build_trainer(model, processor, cfg, mcq_rows(4), kb_retriever)


def test_switches_default_to_production_and_refuse_unknown_values():
    cfg = StageConfig(output_dir="/tmp/x", use_cpu=True, bf16=False)
    assert (cfg.retriever, cfg.train_on_inserted) == ("kb", False)
    assert ablations(cfg) == {}
    on = StageConfig(
        output_dir="/tmp/x", use_cpu=True, bf16=False, retriever="random", train_on_inserted=True
    )
    assert ablations(on) == {"retriever": "random", "train_on_inserted": True}
    assert on.config_hash() != cfg.config_hash()  # an ablation run never hashes like a production one
    # at their production values the switches stay out of the hash (production hashes did not change)
    assert not {"retriever", "train_on_inserted"} & set(cfg.hashed_values())
    assert on.hashed_values()["retriever"] == "random" and on.hashed_values()["train_on_inserted"] is True
    with pytest.raises(ValueError, match="retriever must be one of"):
        StageConfig(output_dir="/tmp/x", use_cpu=True, bf16=False, retriever="bm25")


@pytest.mark.timeout(300)
def test_random_retriever_switch_changes_the_passages_the_rollout_inserts(policy, retriever, tmp_path):
    prompts = [r["prompt"] for r in mcq_rows(16)]
    kb_trainer = trainer_for(policy, retriever, tmp_path)
    assert kb_trainer.rollout_func.retriever is retriever  # production: the launcher's pinned retriever
    kb_out = kb_trainer.rollout_func(prompts, kb_trainer)
    kb_ids = [t.passage_ids[0] for t in kb_out["trajectory"]]
    assert all("kb:pneumonia" in ids for ids in kb_ids)  # the query finds its passage every time

    rnd_trainer = trainer_for(policy, retriever, tmp_path, retriever="random")
    control = rnd_trainer.rollout_func.retriever
    assert isinstance(control, KBRandomRetriever) and control.n == len(PASSAGES)  # the same KB version
    rnd_out = rnd_trainer.rollout_func(prompts, rnd_trainer)
    rnd_ids = [t.passage_ids[0] for t in rnd_out["trajectory"]]
    assert all(len(ids) == 3 for ids in rnd_ids)  # still retrieval_k passages per query
    assert {i for ids in rnd_ids for i in ids} <= {p[0] for p in PASSAGES}
    # 16 draws of 3 out of 5 whatever the query: all 16 holding pneumonia has probability 0.6**16 < 3e-4,
    # and with the seed fixed the outcome is deterministic
    assert sum("kb:pneumonia" in ids for ids in rnd_ids) < len(rnd_ids)
    assert len({tuple(ids) for ids in rnd_ids}) > 1


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_train_on_inserted_switch_puts_inserted_tokens_under_the_loss(policy, retriever, tmp_path):
    def tool_mask(trainer):
        batch = [dict(trainer.train_dataset[i % 4]) for i in range(8)]
        inputs = trainer._generate_and_score_completions(batch)
        return inputs["tool_mask"][inputs["completion_mask"].bool()]

    default = trainer_for(policy, retriever, tmp_path)
    assert not isinstance(default.rollout_func, TrainOnInserted)
    masked = tool_mask(default)
    # production: the retrieve blocks and closing EOS tokens are outside the loss
    assert int((masked == 0).sum()) > 8

    ablation = trainer_for(policy, retriever, tmp_path, train_on_inserted=True)
    assert isinstance(ablation.rollout_func, TrainOnInserted)
    ones = tool_mask(ablation)
    assert ones.numel() == masked.numel()  # same scripted trajectories, same completion tokens
    assert bool((ones == 1).all())


def test_ablation_switches_need_the_retrieval_rollout(policy, tmp_path):
    model, processor = policy
    cfg = stage_config(
        1, str(tmp_path / "out"), **dict(smoke.TRAINER, save_strategy="no", retriever="random")
    )
    with pytest.raises(ValueError, match="ablation switches"):
        build_trainer(model, processor, cfg, mcq_rows(4), None)
