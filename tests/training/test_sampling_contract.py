"""The policy that samples is the policy that is scored, and decisions are made in the process that trains.

- the contract: the rollout's sampling log-probs at mask-1 positions equal TRL's training-forward log-probs
  (within 1e-3 nats), with a model whose ``generation_config`` ships the sampling fields real checkpoints
  carry (``repetition_penalty``, ``top_k``, ``min_p``, ``no_repeat_ngram_size``, ``temperature``);
- training bans nothing while sampling (a last-round query ends the row instead);
- log-probs are ``None`` unless requested, and only the sampled token's are kept;
- sampling settings TRL's loss cannot see are refused;
- device and precision are decided by the trainer process; every rank calls ``save_model``.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.training.conftest import mcq_rows
from tests.training.helpers import ScriptedGenerate
from tests.training.test_launch import launch_args
from training import smoke
from training.config import StageConfig
from training.generation import Context, HFGenerator
from training.rollout import Rollout
from training.trainer import build_trainer, stage_rollout

# what Qwen2/2.5-VL-Instruct checkpoints ship, made strong enough to matter on a tiny model
CHECKPOINT_SAMPLING = {
    "repetition_penalty": 1.3,
    "no_repeat_ngram_size": 3,
    "top_k": 5,
    "min_p": 0.2,
    "temperature": 0.3,
    "do_sample": True,
}


def sharpened_policy(policy):
    """The tiny policy with a peaked next-token distribution (output embedding x 40; random weights give
    a nearly flat softmax, on which no sampling rule changes a log-prob measurably) and a checkpoint-style
    ``generation_config``."""
    model, processor = policy
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(40.0)
    for name, value in CHECKPOINT_SAMPLING.items():
        setattr(model.generation_config, name, value)
    return model, processor


def trl_logps(trainer, prompt_ids, completion_ids) -> torch.Tensor:
    """TRL's own training-forward log-probs of ``completion_ids`` after ``prompt_ids`` (one row, no
    padding)."""
    ids = torch.tensor([list(prompt_ids) + list(completion_ids)])
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, torch.ones_like(ids), len(completion_ids)
        )
    return logps[0].float()


def test_sampling_logprobs_equal_trl_training_logprobs(policy, retriever, tmp_path):
    model, processor = sharpened_policy(policy)
    config = StageConfig(
        output_dir=str(tmp_path / "out"),
        **{**smoke.TRAINER, "temperature": 0.8, "max_completion_length": 48, "max_new_tokens_per_round": 16},
    )
    rows = mcq_rows(4)
    trainer = build_trainer(model, processor, config, rows, retriever, want_logprobs=True)
    torch.manual_seed(0)
    out = trainer.rollout_func([r["prompt"] for r in rows], trainer)
    assert out["logprobs"] is not None
    compared, worst = 0, 0.0
    for prompt, completion, sampled, mask in zip(
        out["prompt_ids"], out["completion_ids"], out["logprobs"], out["env_mask"], strict=True
    ):
        scored = trl_logps(trainer, prompt, completion)
        for i, m in enumerate(mask):
            if m:
                worst = max(worst, abs(sampled[i] - float(scored[i])))
                compared += 1
    assert compared >= 40, compared
    assert worst < 1e-3, f"sampling and training log-probs differ by up to {worst:.4f} nats"
    # the checkpoint's own generation_config is left as it was (it was only set aside while sampling)
    assert model.generation_config.repetition_penalty == 1.3


def query_always(call, row, ctx):
    return "<think> t </think><query> lung </query>"


def test_training_rollout_bans_nothing_and_a_last_round_query_ends_the_row(policy, retriever, tmp_path):
    model, processor = policy
    model.generate = ScriptedGenerate(processor.tokenizer, query_always)
    config = StageConfig(output_dir=str(tmp_path), **{**smoke.TRAINER, "max_rounds": 2})
    rollout = stage_rollout(config, retriever, force_answer=True)
    result = rollout.run(model, processor, [r["prompt"] for r in mcq_rows(2)])
    calls = model.generate.calls
    assert len(calls) == 3  # round 1, round 2 (last), the forced answer
    assert all(not c["logits_processor"] for c in calls), "training must not ban tokens while sampling"
    assert calls[1]["stopping_criteria"][0].stops == ["</query>", "</answer>"]
    for t in result.trajectories:
        assert len(t.queries) == 1  # the last-round query is not searched
        assert t.rounds == 2
    # evaluation's decoding rule is unchanged: the last round of the default Rollout bans <query>
    model.generate = ScriptedGenerate(processor.tokenizer, query_always)
    Rollout(retriever, max_rounds=2).run(model, processor, [r["prompt"] for r in mcq_rows(2)])
    assert model.generate.calls[1]["logits_processor"][0].strings == ["<query>"]


def test_last_round_query_without_force_ends_unanswered(policy, retriever, tmp_path):
    model, processor = policy
    model.generate = ScriptedGenerate(processor.tokenizer, query_always)
    config = StageConfig(output_dir=str(tmp_path), **{**smoke.TRAINER, "max_rounds": 2})
    result = stage_rollout(config, retriever).run(model, processor, [r["prompt"] for r in mcq_rows(2)])
    assert [t.finish for t in result.trajectories] == ["query_at_last_round"] * 2
    assert all(t.answer() is None for t in result.trajectories)


def test_logprobs_are_none_unless_requested(policy, retriever):
    model, processor = policy
    prompts = [r["prompt"] for r in mcq_rows(2)]
    plain = Rollout(retriever, max_rounds=1, max_new_tokens_per_round=6).run(model, processor, prompts)
    assert all(t.logprobs is None for t in plain.trajectories)
    assert plain.trl_output()["logprobs"] is None  # TRL then computes its own; never zeros
    wanted = Rollout(retriever, max_rounds=1, max_new_tokens_per_round=6, want_logprobs=True).run(
        model, processor, prompts
    )
    for t in wanted.trajectories:
        assert len(t.logprobs) == len(t.completion_ids)
        assert all(lp < 0 for lp, m in zip(t.logprobs, t.env_mask, strict=True) if m)


def test_only_the_sampled_tokens_logprobs_are_kept(policy):
    """No ``output_scores`` / ``output_logits`` (a batch x vocabulary tensor per step): the recorder gathers
    the sampled token's log-prob as generation goes."""
    model, processor = policy
    spy = ScriptedGenerate(processor.tokenizer, lambda c, r, ctx: "<answer> A </answer>")
    model.generate = spy
    gen = HFGenerator(model, processor)
    ids = processor.tokenizer("Question: lung?", add_special_tokens=False)["input_ids"]
    gen.generate([Context(ids)], stop_strings=["</answer>"], max_new_tokens=8, want_logprobs=True)
    config = spy.calls[0]["generation_config"]
    assert not config.output_scores and not config.output_logits
    assert type(spy.calls[0]["logits_processor"][-1]).__name__ == "SampledLogprobs"


def test_checkpoint_sampling_fields_never_reach_generate(policy):
    model, processor = sharpened_policy(policy)
    spy = ScriptedGenerate(processor.tokenizer, lambda c, r, ctx: "<answer> A </answer>")
    model.generate = spy
    ids = processor.tokenizer("Question: lung?", add_special_tokens=False)["input_ids"]
    HFGenerator(model, processor).generate(
        [Context(ids)], stop_strings=["</answer>"], max_new_tokens=8, temperature=0.9
    )
    config = spy.calls[0]["generation_config"]
    assert config.temperature == 0.9 and config.top_k == 0 and config.top_p == 1.0
    assert config.repetition_penalty in (None, 1.0) and config.min_p is None
    assert config.no_repeat_ngram_size in (None, 0)


def test_want_logprobs_refuses_truncated_sampling(policy):
    model, processor = policy
    gen = HFGenerator(model, processor)
    with pytest.raises(ValueError, match="top_p"):
        gen.generate([Context([1, 2, 3])], stop_strings=[], max_new_tokens=2, top_p=0.9, want_logprobs=True)


@pytest.mark.parametrize(
    "field, value",
    [("top_p", 0.9), ("top_k", 20), ("min_p", 0.05), ("repetition_penalty", 1.05)],
)
def test_stage_config_refuses_sampling_the_loss_cannot_see(field, value):
    with pytest.raises(ValueError, match="TRL's loss scores"):
        StageConfig(output_dir="/tmp/x", use_cpu=True, bf16=False, **{field: value})
    with pytest.raises(ValueError, match="generation_kwargs"):
        StageConfig(output_dir="/tmp/x", use_cpu=True, bf16=False, generation_kwargs={"top_k": 5})


def test_device_is_decided_by_the_trainer_process_not_the_launcher():
    from assets.training.assets import StageRunConfig
    from training.launch import device_settings

    overrides = StageRunConfig(max_steps=2).overrides()
    assert not {"use_cpu", "bf16", "gradient_checkpointing", "fp16"} & set(overrides)
    cpu, device = device_settings({"max_steps": 2}, cuda=False)
    assert cpu == {"max_steps": 2, "use_cpu": True, "bf16": False, "gradient_checkpointing": False}
    assert device == "cpu"
    kept, _ = device_settings({"bf16": True}, cuda=False)  # an explicit choice is kept
    assert kept["bf16"] is True


def test_full_profile_defaults_to_zero2_and_others_run_plain(tmp_path):
    from assets.common.resources import DEFAULT_FULL_ACCELERATE, TrainingResource

    local = TrainingResource()
    assert local.accelerate_config_for("smoke") is None
    assert local.accelerate_config_for("full").endswith(DEFAULT_FULL_ACCELERATE)
    assert TrainingResource(launcher="k8s").accelerate_config_for("full") == DEFAULT_FULL_ACCELERATE
    chosen = TrainingResource(accelerate_config="my.yaml")
    assert chosen.accelerate_config_for("full") == "my.yaml" == chosen.accelerate_config_for("smoke")


@pytest.mark.slow
def test_every_rank_calls_save_model(tmp_path, tiny_model_dir, kb, monkeypatch):
    """Under ZeRO-3 the final save gathers sharded weights (a collective): a rank that is not the main
    process must call ``save_model`` too, and must not write the manifest or report through Pipes."""
    import training.trainer as trainer_module
    from training import launch

    real_build = trainer_module.build_trainer
    saves = []

    def build_as_rank_1(*args, **kwargs):
        trainer = real_build(*args, **kwargs)
        monkeypatch.setattr(type(trainer.accelerator), "is_main_process", property(lambda self: False))
        save = trainer.save_model
        trainer.save_model = lambda *a, **k: (saves.append(a), save(*a, **k))[1]
        return trainer

    monkeypatch.setattr(trainer_module, "build_trainer", build_as_rank_1)
    out = tmp_path / "out"
    args = launch_args(tmp_path, tiny_model_dir, kb, out)
    config_at = args.index("--config") + 1
    args[config_at] = json.dumps({**json.loads(args[config_at]), "max_steps": 1})
    manifest = launch.main(args)
    assert saves[-1] == (str(out / "final"),)  # the final save (checkpoints also go through save_model)
    assert not (out / "final" / launch.LINEAGE_FILE).exists()  # rank 0 writes the manifest
    assert manifest["device"] == "cpu" and manifest["world_size"] == 1


def test_vllm_adapter_refuses_rows_with_images(policy, slake_images):
    """The vLLM adapter cannot take the processor's image tensors: a row with images is refused with a clear
    error before vLLM is touched, never sent as text only."""
    from training.generation import Vision
    from training.vllm_backend import VLLMGenerator

    _, processor = policy
    enc = processor.image_processor(images=[slake_images[0]], return_tensors="pt")
    row = Context([1, 2, 3], Vision(enc["pixel_values"], enc["image_grid_thw"]))
    backend = object.__new__(VLLMGenerator)  # no vLLM on CPU machines: the refusal comes first
    with pytest.raises(ValueError, match="rows \\[0\\] carry images"):
        backend.generate([row], stop_strings=[], max_new_tokens=4)
