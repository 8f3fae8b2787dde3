"""GRPO stages on the tiny Qwen2.5-VL: two steps of each stage move every trainable parameter, the loss
gradient is exactly zero at inserted (masked) positions, configs carry the paper's defaults."""

import os

import pytest
import torch
import yaml

from assets.common.profiles import SAMPLE_DATA_DIR
from tests.training.conftest import mcq_rows
from tests.training.helpers import CountingRetriever, ScriptedGenerate
from training import smoke
from training.config import StageConfig, stage_config
from training.rewards import QuerySemanticReward
from training.trainer import build_trainer

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def mixed_script(call, row, ctx):
    """Round 1: even rows query; answers alternate right (A) and wrong (B) so advantages are non-zero."""
    if call % 2 == 0 and row % 2 == 0 and "</retrieve>\n<" not in ctx[-200:]:
        return "<think> need facts </think><query> lung infection </query>"
    return "<think> so </think><answer> " + ("A" if (row // 2) % 2 == 0 else "B") + " </answer>"


def make_trainer(stage, policy, retriever, tmp_path, rows, **overrides):
    """The stage assets' trainer (training.trainer.build_trainer) on the smoke trainer settings."""
    model, processor = policy
    model.generate = ScriptedGenerate(processor.tokenizer, mixed_script)
    query_reward = None
    if stage == 2:
        from retrieval.embedders import ImageEmbedder
        from training.lexicon import LexiconNER, build_lexicon

        lex = build_lexicon(
            SAMPLE_DATA_DIR / "medquad" / "medquad_qa.jsonl.gz", SAMPLE_DATA_DIR / "slake" / "KG_mvqa-kg"
        )
        query_reward = QuerySemanticReward(LexiconNER(lex), ImageEmbedder())
    cfg = stage_config(stage, str(tmp_path / "out"), **dict(smoke.TRAINER, save_strategy="no", **overrides))
    return build_trainer(model, processor, cfg, rows, retriever, query_reward=query_reward)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("stage", [1, 2])
def test_two_grpo_steps_change_every_trainable_parameter(stage, policy, retriever, tmp_path, slake_images):
    spy = CountingRetriever(retriever)
    rows = mcq_rows(4, image=slake_images[0] if stage == 2 else None)
    trainer = make_trainer(stage, policy, spy, tmp_path, rows)
    model = trainer.model
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer.train()
    assert trainer.state.global_step == 2
    # stage 1 is text-only: the vision tower takes no input, so only the language model can move
    expected = [n for n in before if stage == 2 or not n.startswith("model.visual")]
    unchanged = [n for n in expected if torch.equal(before[n], dict(model.named_parameters())[n].detach())]
    assert not unchanged, unchanged
    logs = [h for h in trainer.state.log_history if "rollout/prefix_violations" in h]
    assert logs and all(h["rollout/prefix_violations"] == 0 for h in logs)
    assert all(h["rollout/retrieval_calls"] == 1 for h in logs)  # one batched call per round with queries
    assert spy.calls and all(n == 4 for n in spy.calls)  # 8 rows per step, the 4 even rows asked
    if stage == 2:
        assert {"rewards/query_semantic/mean", "rewards/confidence_gain/mean"} <= set(logs[0])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_loss_gradient_is_zero_at_inserted_tokens(policy, retriever, tmp_path):
    trainer = make_trainer(1, policy, retriever, tmp_path, mcq_rows(4))
    trainer.model.train()
    batch = [trainer.train_dataset[i % 4] for i in range(8)]
    batch = [dict(b) for b in batch]
    inputs = trainer._generate_and_score_completions(batch)
    assert "tool_mask" in inputs and (inputs["tool_mask"] == 0).any()
    captured = {}
    original = trainer._get_per_token_logps_and_entropies

    def keep_grad(*args, **kwargs):
        logps, ent, aux = original(*args, **kwargs)
        logps.retain_grad()
        captured["logps"] = logps
        return logps, ent, aux

    trainer._get_per_token_logps_and_entropies = keep_grad
    trainer.current_gradient_accumulation_steps = 1
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    grad = captured["logps"].grad
    trained = (inputs["tool_mask"] * inputs["completion_mask"]).bool()
    assert torch.all(grad[~trained] == 0)
    assert torch.any(grad[trained] != 0)
    # the masked positions are exactly the rollout's inserted pieces (retrieve blocks and the closing EOS)
    n_inserted = int((inputs["tool_mask"] == 0)[inputs["completion_mask"].bool()].sum())
    assert n_inserted > 8


def test_stage_config_paper_defaults_and_hash():
    cfg = StageConfig(output_dir="/tmp/x", use_cpu=True, bf16=False)
    assert (
        cfg.num_generations,
        cfg.learning_rate,
        cfg.beta,
        cfg.epsilon,
        cfg.loss_type,
        cfg.temperature,
    ) == (8, 1e-6, 1e-3, 0.2, "dapo", 1.0)
    assert (
        StageConfig.__dataclass_fields__["bf16"].default is True
    )  # bf16 by default (GPU); CPU runs override it
    assert cfg.max_rounds == 3 and cfg.retrieval_k == 3 and cfg.scale_rewards == "group"
    same = StageConfig(output_dir="/tmp/elsewhere", use_cpu=True, bf16=False)
    assert cfg.config_hash() == same.config_hash()  # paths do not change the hash
    assert (
        cfg.config_hash()
        != StageConfig(output_dir="/tmp/x", use_cpu=True, bf16=False, beta=0.0).config_hash()
    )
    with pytest.raises(ValueError, match="unknown config fields"):
        stage_config(1, "/tmp/x", not_a_field=1)
    with pytest.raises(ValueError, match="stage must be 1 or 2"):
        StageConfig(output_dir="/tmp/x", stage=3, use_cpu=True, bf16=False)


def test_reward_weights_default_to_the_papers_and_a_conflicting_list_is_refused():
    """The weights live in GRPOConfig.reward_weights (what TRL reads): the paper's by default, a set value
    kept (never overwritten), a list that does not fit the stage's rewards refused."""
    cpu = {"use_cpu": True, "bf16": False}
    assert stage_config(1, "/tmp/x", **cpu).reward_weights == [1.0, 5.0]
    assert stage_config(2, "/tmp/x", **cpu).reward_weights == [1.0, 5.0, 0.4, 5.0]
    assert stage_config(1, "/tmp/x", reward_weights=[2.0, 5.0], **cpu).reward_weights == [2.0, 5.0]
    with pytest.raises(ValueError, match=r"stage 2 has 4 rewards \['format', 'accuracy', 'query_semantic'"):
        stage_config(2, "/tmp/x", reward_weights=[1.0, 5.0], **cpu)


def test_dagster_stage_run_config_sets_any_trainer_field_and_refuses_unknown_names():
    """StageRunConfig (Dagster) is checked against training.config.StageConfig: its typed knobs are trainer
    fields, trainer_overrides reaches every other one, unknown names are refused with where to look."""
    from dagster._config import validate_config

    from assets.training.assets import StageRunConfig
    from training.config import SET_BY_LAUNCH, field_names

    typed = set(StageRunConfig.model_fields) - {"trainer_overrides"}
    assert typed <= field_names()
    assert field_names() - SET_BY_LAUNCH - typed  # the rest goes through trainer_overrides
    extra = {"warmup_ratio": 0.0, "epsilon_high": 0.28}
    out = StageRunConfig(max_steps=2, trainer_overrides=extra).overrides()
    assert out["max_steps"] == 2 and out["warmup_ratio"] == 0.0 and out["epsilon_high"] == 0.28
    assert stage_config(1, "/tmp/x", **dict(out, use_cpu=True, bf16=False)).epsilon_high == 0.28
    with pytest.raises(ValueError, match=r"\['bogus', 'nope'\].*training.config.StageConfig"):
        StageRunConfig(trainer_overrides={"nope": 1, "bogus": 2}).overrides()
    with pytest.raises(ValueError, match="max_steps"):
        StageRunConfig(max_steps=2, trainer_overrides={"max_steps": 3}).overrides()
    with pytest.raises(ValueError, match="output_dir"):
        StageRunConfig(trainer_overrides={"output_dir": "/elsewhere"}).overrides()
    schema = StageRunConfig.to_config_schema().as_field().config_type
    run_config = {"trainer_overrides": {"report_to": ["none"], "warmup_ratio": 0.1}}
    assert validate_config(schema, run_config).success


@pytest.mark.parametrize("name,stage", [("zero2.yaml", 2), ("zero3.yaml", 3)])
def test_accelerate_deepspeed_configs_parse(name, stage):
    from accelerate.commands.config.config_args import ClusterConfig

    path = SAMPLE_DATA_DIR.parents[1] / "training" / "accelerate" / name
    raw = yaml.safe_load(path.read_text())
    assert raw["distributed_type"] == "DEEPSPEED" and raw["deepspeed_config"]["zero_stage"] == stage
    assert raw["mixed_precision"] == "bf16"
    cfg = ClusterConfig.from_yaml_file(str(path))
    assert cfg.deepspeed_config["zero_stage"] == stage and cfg.num_processes == 8


def test_smoke_values_live_in_training_smoke_and_name_real_fields():
    """The smoke profile reads its training and evaluation knobs from training.smoke, and every name there is
    a field of the config it goes to."""
    from assets.common.profiles import get_profile
    from assets.evaluation.assets import EvalConfig
    from assets.training.assets import StageRunConfig
    from training.config import field_names

    knobs = get_profile("smoke", environ={}).op_config
    assert knobs["stage1_checkpoint"] == knobs["stage2_checkpoint"] == smoke.STAGE
    assert knobs["eval_results"] == smoke.EVAL
    assert set(smoke.STAGE) <= set(StageRunConfig.model_fields)
    assert set(smoke.EVAL) <= set(EvalConfig.model_fields)
    for values in (smoke.CPU, smoke.TRAINER, smoke.TINY_STAGE, smoke.STAGE):
        assert set(values) <= field_names()
