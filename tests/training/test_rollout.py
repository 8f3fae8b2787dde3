"""Rollout bookkeeping (scripted ``generate``) and real sampling with the tiny Qwen2.5-VL."""

import pytest
import torch

from tests.training.conftest import mcq_rows
from tests.training.helpers import CountingRetriever, ScriptedGenerate
from training.protocol import RETRIEVE_CLOSE, RETRIEVE_OPEN, build_messages
from training.retrievers import RandomRetriever
from training.rollout import Insert, Rollout, answer_position, score_answers


def asking_script(call, row, ctx):
    """Call 0: even rows query, odd rows answer; later calls: everyone answers."""
    if call == 0 and row % 2 == 0:
        return "<think> need facts </think><query> lung infection </query>"
    return "<think> so </think><answer> A </answer>"


def test_mask_covers_exactly_the_inserted_tokens(policy, retriever):
    model, processor = policy
    tok = processor.tokenizer
    model.generate = ScriptedGenerate(tok, asking_script)
    result = Rollout(retriever).run(model, processor, [r["prompt"] for r in mcq_rows(4)])
    assert result.stats.prefix_violations == 0
    for t in result.trajectories:
        assert len(t.env_mask) == len(t.completion_ids)
        inserted = [i for p in t.pieces if p.inserted for i in range(p.start, p.end)]
        assert [i for i, m in enumerate(t.env_mask) if m == 0] == inserted
        for p in t.pieces:  # the inserted ids are exactly the tokenised block (or the EOS)
            ids = t.completion_ids[p.start : p.end]
            if p.kind == "retrieve":
                text = tok.decode(ids)
                assert text.strip().startswith(RETRIEVE_OPEN) and text.strip().endswith(RETRIEVE_CLOSE)
                assert ids == tok(text, add_special_tokens=False)["input_ids"]
            if p.kind == "eos":
                assert ids == [tok.eos_token_id]
        assert t.finish == "answer" and t.answer() == "A"
    asked = result.trajectories[0]
    assert asked.queries == ["lung infection"] and asked.passage_ids[0][0] == "kb:pneumonia"
    assert [p.kind for p in asked.pieces] == ["sampled", "retrieve", "sampled", "eos"]
    assert asked.rounds == 2 and result.trajectories[1].rounds == 1
    assert asked.generated_tokens == sum(asked.env_mask)


def test_retriever_called_once_per_round_per_batch(policy, retriever):
    model, processor = policy
    spy = CountingRetriever(retriever)

    def script(call, row, ctx):  # every row queries in rounds 1 and 2, answers in round 3
        return (
            "<think> t </think><query> liver </query>"
            if call < 2
            else "<think> t </think><answer> B </answer>"
        )

    model.generate = ScriptedGenerate(processor.tokenizer, script)
    result = Rollout(spy, max_rounds=3).run(model, processor, [r["prompt"] for r in mcq_rows(6)])
    assert spy.calls == [6, 6]  # two rounds with retrieval, one batched call each
    assert result.stats.retrieval_calls == 2 and result.stats.generate_calls == 3
    last_call = model.generate.calls[-1]
    assert last_call["logits_processor"][0].strings == ["<query>"]  # the last round cannot query
    assert not model.generate.calls[0]["logits_processor"]
    assert last_call["stopping_criteria"][0].stops == ["</answer>"]
    assert model.generate.calls[0]["stopping_criteria"][0].stops == ["</query>", "</answer>"]
    assert all(len(t.queries) == 2 and t.rounds == 3 for t in result.trajectories)


def test_direct_rag_and_random_retriever_modes(policy, retriever):
    model, processor = policy
    model.generate = ScriptedGenerate(processor.tokenizer, asking_script)
    prompts = [r["prompt"] for r in mcq_rows(2)]
    direct = Rollout(retriever).run(model, processor, prompts, allow_retrieval=False)
    assert direct.stats.generate_calls == 1 and direct.stats.retrieval_calls == 0
    assert all(not t.retrieved for t in direct.trajectories)
    spy = CountingRetriever(retriever)
    model.generate = ScriptedGenerate(
        processor.tokenizer, lambda c, r, ctx: "<think> a </think><answer> A </answer>"
    )
    rag = Rollout(spy).run(
        model, processor, prompts, first_queries=["lung infection", None], allow_retrieval=False
    )
    assert spy.calls == [1]
    first = rag.trajectories[0]
    assert first.pieces[0].kind == "retrieve" and first.pieces[0].start == 0 and first.env_mask[0] == 0
    assert not rag.trajectories[1].retrieved
    from training.rewards import format_reward

    assert format_reward([[]] * 2, [""] * 2, trajectory=rag.trajectories) == [1.0, 1.0]
    from retrieval.search import Hit

    pool = [Hit(f"r{i}", 0.0, "s", None, f"random passage {i}") for i in range(5)]
    model.generate = ScriptedGenerate(processor.tokenizer, asking_script)
    rnd = Rollout(RandomRetriever(pool, seed=1)).run(model, processor, prompts)
    assert rnd.trajectories[0].passage_ids[0][0].startswith("r")


@pytest.mark.timeout(120)
def test_real_sampling_with_images_keeps_the_prefix_property(policy, retriever, slake_images):
    model, processor = policy
    torch.manual_seed(0)
    prompts = [build_messages("Which organ?", ["Lung", "Liver"], has_image=True) for _ in range(2)]
    prompts += [r["prompt"] for r in mcq_rows(2)]
    for p, img in zip(prompts[:2], slake_images, strict=True):
        p[1]["content"][0]["image"] = img
    rollout = Rollout(retriever, max_new_tokens_per_round=16, want_logprobs=True, score=True)
    result = rollout.run(model, processor, prompts)
    assert result.stats.prefix_violations == 0
    image_token = model.config.image_token_id
    for t in result.trajectories:
        assert t.prefix_ok and len(t.logprobs) == len(t.completion_ids)
        assert image_token not in t.completion_ids  # vision placeholders are never sampled
        assert all(lp <= 0.0 for lp in t.logprobs)
    assert result.vision[0].n_images == 1 and result.vision[2].n_images == 0


def test_score_answers_and_cdir_continuation(policy, retriever, slake_images):
    model, processor = policy
    tok = processor.tokenizer
    model.generate = ScriptedGenerate(tok, asking_script)
    rollout = Rollout(retriever, score=True)
    prompts = [r["prompt"] for r in mcq_rows(2)]
    result = rollout.run(model, processor, prompts)
    asked, direct = result.trajectories
    for t in (asked, direct):
        pos = answer_position(tok, t)
        assert tok.decode([t.completion_ids[pos]]).strip() == "A"
        assert 0.0 < t.answer_token_prob <= 1.0
        assert set(t.answer_logprobs) >= {"A", "B"}
    assert direct.answer_logprobs_no_retrieval == direct.answer_logprobs
    assert (
        asked.answer_logprobs_no_retrieval != asked.answer_logprobs
    )  # passages removed in the counterfactual
    # the counterfactual answers right after the reasoning before the first query: the passages *and* the
    # reasoning after them go (it restates them); Qwen's '</think><query>' shares the token '><', whose '>'
    # is kept
    from training.generation import Context, next_token_logprobs
    from training.rollout import counterfactual_ids

    cf = counterfactual_ids(tok, asked)
    assert tok.decode(cf) == "<think> need facts </think><answer>"
    assert cf[: len(cf) - 3] == asked.completion_ids[: len(cf) - 3]  # the policy's own ids, unchanged
    assert counterfactual_ids(tok, direct) is None
    lp = next_token_logprobs(model, [Context(asked.prompt_ids + cf)], tok.pad_token_id)[0]
    a_ids = [
        i
        for i in {tok.convert_tokens_to_ids("A"), tok.convert_tokens_to_ids("ĠA")}
        if i is not None and i != tok.unk_token_id
    ]
    expected = float(torch.logsumexp(lp[sorted(a_ids)], 0))
    assert asked.answer_logprobs_no_retrieval["A"] == pytest.approx(expected, abs=1e-4)
    # CDIR: cut before <answer>, insert a case (with its image as vision tokens), generate once more
    model.generate = ScriptedGenerate(
        tok, lambda c, r, ctx: "<think> the case agrees </think><answer> B </answer>"
    )
    cont = rollout.continue_with(
        model, processor, result, [Insert("similar case: pneumonia", slake_images[0]), None]
    )
    new = cont.trajectories[0]
    assert cont.trajectories[1] is direct
    case = [p for p in new.pieces if p.kind == "case"][0]
    assert model.config.image_token_id in new.completion_ids[case.start : case.end]
    assert new.answer() == "B" and new.prefix_ok and cont.vision[0].n_images == 1
    # Qwen spells '</think><answer>' as '</' 'think' '><' 'answer' ...: the cut drops the '><' token and
    # re-inserts its '>' (a residue piece), so the think block stays closed before the case
    cut = min(p.start for p in new.pieces if p.kind in ("residue", "case"))
    assert new.completion_ids[:cut] == asked.completion_ids[:cut]
    before_case = tok.decode(new.completion_ids[: case.start])
    assert "<answer>" not in before_case and before_case.rstrip().endswith("</think>")
    score_answers(model, tok, cont)
    assert new.answer_logprobs_no_retrieval is not None


def forced_script(call, row, ctx):
    """Call 0: row 0 stops without an answer (EOS), row 1 answers, row 2 opens an answer and stops (EOS);
    call 1 (the forced-answer call, rows 0 and 2 only): close the answer."""
    if call == 0:
        return [
            "<think> no idea </think>",
            "<think> so </think><answer> A </answer>",
            "<think> t </think><answer> C",
        ][row]
    return " B </answer>" if row == 0 else " </answer>"


def test_force_answer_inserts_the_opener_and_leaves_answered_rows_alone(policy, retriever):
    model, processor = policy
    tok = processor.tokenizer
    model.generate = ScriptedGenerate(tok, forced_script)
    prompts = [r["prompt"] for r in mcq_rows(3)]
    plain = Rollout(retriever, max_rounds=1).run(model, processor, prompts)
    assert [t.finish for t in plain.trajectories] == ["eos", "answer", "eos"]
    model.generate = ScriptedGenerate(tok, forced_script)
    result = Rollout(retriever, max_rounds=1, force_answer=True, answer_tokens=6).run(
        model, processor, prompts
    )
    assert result.stats.prefix_violations == 0 and result.stats.generate_calls == 2
    assert model.generate.calls[1]["rows"] == 2 and model.generate.calls[1]["max_new_tokens"] == 6
    assert model.generate.calls[1]["stopping_criteria"][0].stops == ["</answer>"]
    forced, answered, opened = result.trajectories
    # the row that answered itself is exactly what the plain rollout produced
    same = plain.trajectories[1]
    assert answered.completion_ids == same.completion_ids and answered.env_mask == same.env_mask
    assert not answered.forced_answer and [p.kind for p in answered.pieces] == ["sampled", "eos"]
    # the forced row: sampled, inserted <answer> (mask 0), sampled answer, EOS (mask 0); the sampled EOS
    # dropped
    assert forced.forced_answer and forced.finish == "answer" and forced.answer() == "B"
    assert [p.kind for p in forced.pieces] == ["sampled", "answer", "sampled", "eos"]
    opener = forced.pieces[1]
    assert (
        forced.completion_ids[opener.start : opener.end]
        == tok("<answer>", add_special_tokens=False)["input_ids"]
    )
    assert forced.env_mask[opener.start : opener.end] == [0] * (opener.end - opener.start)
    assert tok.eos_token_id not in forced.completion_ids[:-1]
    first = plain.trajectories[0]  # same sampled ids in round 1, minus the EOS
    assert first.completion_ids[-1] == tok.eos_token_id
    assert forced.completion_ids[: opener.start] == first.completion_ids[:-1]
    assert forced.generated_tokens == sum(forced.env_mask) + 1  # the dropped EOS was sampled: still counted
    assert forced.prefix_ok and forced.spans()[-1].kind == "answer"
    pos = answer_position(tok, forced)
    assert (
        pos is not None
        and forced.env_mask[pos] == 1
        and tok.decode([forced.completion_ids[pos]]).strip() == "B"
    )
    # a row that opened <answer> itself gets the short generation without an inserted opener
    assert not opened.forced_answer and opened.answer() == "C" and opened.finish == "answer"
    assert "answer" not in [p.kind for p in opened.pieces]
    assert tok.eos_token_id not in opened.completion_ids[:-1]


def test_force_answer_keeps_the_sampled_total_within_max_completion_tokens(policy, retriever):
    model, processor = policy
    tok = processor.tokenizer
    long = "<think> " + " ".join(["lung liver heart"] * 20)

    def script(call, row, ctx):
        return long if call == 0 else " A </answer>"

    model.generate = ScriptedGenerate(tok, script)
    rollout = Rollout(
        retriever,
        max_rounds=1,
        max_new_tokens_per_round=64,
        max_completion_tokens=20,
        force_answer=True,
        answer_tokens=4,
        score=True,
    )
    result = rollout.run(model, processor, [r["prompt"] for r in mcq_rows(2)])
    assert model.generate.calls[0]["max_new_tokens"] == 16  # 4 reserved for the answer
    for t in result.trajectories:
        assert t.forced_answer and t.prefix_ok
        assert t.generated_tokens == sum(t.env_mask) <= 20
        assert t.answer_position is not None  # scored after the inserted opener
    with pytest.raises(ValueError, match="must exceed answer_tokens"):
        Rollout(retriever, max_completion_tokens=4, answer_tokens=4, force_answer=True).run(
            model, processor, [r["prompt"] for r in mcq_rows(1)]
        )


def test_continue_with_several_inserts_numbers_rounds_per_row(policy, retriever):
    model, processor = policy
    tok = processor.tokenizer
    model.generate = ScriptedGenerate(tok, asking_script)  # row 0: 2 rounds, row 1: 1 round
    rollout = Rollout(retriever)
    result = rollout.run(model, processor, [r["prompt"] for r in mcq_rows(3)])
    assert [t.rounds for t in result.trajectories] == [2, 1, 2]
    model.generate = ScriptedGenerate(
        tok, lambda c, r, ctx: "<think> cases agree </think><answer> B </answer>"
    )
    cont = rollout.continue_with(
        model,
        processor,
        result,
        [[Insert("case one: pneumonia"), Insert("case two: asthma")], Insert("case three"), None],
    )
    assert cont.stats.prefix_violations == 0 and cont.trajectories[2] is result.trajectories[2]
    two, one = cont.trajectories[0], cont.trajectories[1]
    cases = [p for p in two.pieces if p.kind == "case"]
    assert len(cases) == 2 and cases[0].end == cases[1].start
    assert all(two.env_mask[i] == 0 for p in cases for i in range(p.start, p.end))
    assert "case one" in tok.decode(two.completion_ids[cases[0].start : cases[0].end])
    assert "case two" in tok.decode(two.completion_ids[cases[1].start : cases[1].end])
    assert two.rounds == 3 and one.rounds == 2  # numbered after each row's own rounds
    assert two.pieces[-2].kind == "sampled" and two.pieces[-2].round == 3 and one.pieces[-2].round == 2
    assert all(p.round == 2 for p in cases)
    assert two.answer() == "B" and one.answer() == "B" and two.prefix_ok and one.prefix_ok
    with pytest.raises(ValueError, match="non-empty sequence"):
        rollout.continue_with(model, processor, result, [[], None, None])


def test_continue_with_cuts_before_a_forced_opener(policy, retriever):
    model, processor = policy
    tok = processor.tokenizer
    model.generate = ScriptedGenerate(tok, forced_script)
    rollout = Rollout(retriever, max_rounds=1, force_answer=True)
    result = rollout.run(model, processor, [r["prompt"] for r in mcq_rows(3)])
    forced = result.trajectories[0]
    opener = [p for p in forced.pieces if p.kind == "answer"][0]
    model.generate = ScriptedGenerate(tok, lambda c, r, ctx: "<think> ok </think><answer> D </answer>")
    cont = rollout.continue_with(model, processor, result, [Insert("a case"), None, None])
    new = cont.trajectories[0]
    assert new.completion_ids[: opener.start] == forced.completion_ids[: opener.start]
    assert new.pieces[len([p for p in forced.pieces if p.start < opener.start])].kind == "case"
    assert new.answer() == "D" and not new.forced_answer and new.prefix_ok
    assert tok.eos_token_id not in new.completion_ids[:-1]


def test_one_rollout_settings_vocabulary(retriever):
    """The rollout, the trainer config and the evaluation config speak RolloutSettings (old defaults)."""
    from assets.evaluation.assets import EvalConfig
    from training.config import StageConfig
    from training.rollout import RolloutSettings

    assert Rollout(retriever).settings == RolloutSettings(3, 3, 256, 1024, "dense")
    assert Rollout(retriever, max_rounds=1).settings.max_rounds == 1
    with pytest.raises(TypeError, match="max_new_tokens"):
        Rollout(retriever, max_new_tokens=8)
    with pytest.raises(ValueError, match="max_rounds"):
        RolloutSettings(max_rounds=0)
    trainer = StageConfig(
        output_dir="/tmp/x",
        use_cpu=True,
        bf16=False,
        max_completion_length=96,
        max_new_tokens_per_round=32,
        search_mode="lexical",
    ).rollout_settings()
    assert trainer == RolloutSettings(
        max_rounds=3,
        retrieval_k=3,
        max_new_tokens_per_round=32,
        max_completion_tokens=96,
        search_mode="lexical",
    )
    default = StageConfig(output_dir="/tmp/x", use_cpu=True, bf16=False).rollout_settings()
    assert default.max_completion_tokens == 8192
    assert EvalConfig().rollout_settings() == RolloutSettings()
