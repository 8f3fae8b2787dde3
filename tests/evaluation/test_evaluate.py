"""evaluate() and CDIR on the tiny Qwen2.5-VL, a real LanceDB text KB and a real image index.

Bookkeeping tests patch ``generate`` to return fixed token ids (TRL's habit) and, where CDIR's trigger is
under test, set the first-answer-token probability after the real ``score_answers`` pass. The end-to-end
test samples from the real tiny model with nothing patched.
"""

import polars as pl
import pytest

import training.rollout.loop as rollout_module  # the loop calls score_answers
from tests.training.helpers import CountingRetriever, ScriptedGenerate
from training.evaluation.cdir import CdirRollout, apply_cdir
from training.evaluation.evaluate import EvaluationError, KBRandomRetriever, evaluate, item_messages
from training.evaluation.items import benchmark_items
from training.evaluation.results import EVAL_RESULTS_SCHEMA, MODES, validate_results
from training.generation import token_ids
from training.rollout import RolloutSettings

from .conftest import PASSAGES

KB_IDS = {p[0] for p in PASSAGES}
LOW, HIGH = "LOWCONF", "HIGHCONF"


def sample_items(vqa_frame, text_qa_frame) -> pl.DataFrame:
    """Real sample items: VQA-RAD test MCQ + open (images), SLAKE test MCQ (image), MedQA MCQ (text)."""
    rad = benchmark_items(vqa_frame, "vqa_rad", splits=["test"])
    slake = benchmark_items(vqa_frame, "slake", splits=["test"])
    medqa = benchmark_items(text_qa_frame, "medqa")
    return pl.concat(
        [
            rad.filter(pl.col("protocol") == "mcq").head(2),
            rad.filter(pl.col("protocol") == "open").head(1),
            slake.filter(pl.col("protocol") == "mcq").head(1),
            medqa.head(2),
        ]
    )


def run(items, policy, retriever, **kw):
    model, processor = policy
    args = dict(
        model=model,
        processor=processor,
        retriever=retriever,
        checkpoint="base",
        checkpoint_version="manifest-test",
        benchmark="sample_mix",
        benchmark_version="v-test",
        kb_tag="run-test",
        rollout_settings=RolloutSettings(max_new_tokens_per_round=24, max_completion_tokens=48, max_rounds=2),
    )
    return evaluate(items, **{**args, **kw})


def answer_script(first: str = "A", after_case: str = "B"):
    """Query once in the first call of a row, then answer ``first``; after a CDIR case answer
    ``after_case``."""

    def script(call, row, ctx):
        if "Similar case:" in ctx:
            return f"<think> the case helps </think><answer> {after_case} </answer>"
        return f"<think> look </think><answer> {first} </answer>"

    return script


def patch_confidence(monkeypatch, fn):
    """After the real ``score_answers``, set each answered row's η to ``fn(prompt_text, trajectory)``."""
    real = rollout_module.score_answers

    def patched(model, tokenizer, result, *args, **kwargs):
        real(model, tokenizer, result, *args, **kwargs)
        tok = token_ids(tokenizer)
        for t in result.trajectories:
            if t.answer_position is not None:
                t.answer_token_prob = fn(tok.decode(t.prompt_ids), t)

    monkeypatch.setattr(rollout_module, "score_answers", patched)


def marked(items: pl.DataFrame, markers: list[str]) -> pl.DataFrame:
    return items.with_columns(
        pl.Series("question", [f"{m} {q}" for m, q in zip(markers, items["question"], strict=True)])
    )


class SpyImageRetriever:
    """Forwards to a real ImageRetriever and records each call's query count, k and exclusions."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = []

    def search_images(self, images, k=1, exclude_refs=()):
        self.calls.append({"n": len(images), "k": k, "exclude": list(exclude_refs)})
        return self.inner.search_images(images, k=k, exclude_refs=exclude_refs)


def test_cdir_triggered_below_lambda_only(
    policy, retriever, image_retriever, image_loader, vqa_frame, text_qa_frame, monkeypatch
):
    model, processor = policy
    items = sample_items(vqa_frame, text_qa_frame)
    image_rows = items.filter(pl.col("image_refs").list.len() > 0).head(2)
    text_row = items.filter(pl.col("image_refs").list.len() == 0).head(1)
    items = pl.concat([marked(image_rows, [LOW, HIGH]), marked(text_row, [LOW])])
    model.generate = ScriptedGenerate(processor.tokenizer, answer_script("A", "B"))
    # first pass: 0.3 for LOW rows, 0.95 for HIGH rows; after a case: 0.9
    patch_confidence(
        monkeypatch,
        lambda text, t: 0.9 if any(p.kind == "case" for p in t.pieces) else (0.3 if LOW in text else 0.95),
    )
    spy = SpyImageRetriever(image_retriever)
    res = run(
        items,
        policy,
        retriever,
        modes=("rwr_cdir",),
        image_retriever=spy,
        image_loader=image_loader,
        image_index_tag="run-img-test",
        batch_size=8,
    )
    validate_results(res)
    low, high, text = (res.filter(pl.col("item_id") == i).row(0, named=True) for i in items["item_id"])
    assert low["cdir_triggered"] and low["confidence_before_cdir"] == pytest.approx(0.3)
    assert low["confidence"] == pytest.approx(0.9) and len(low["cdir_case_ids"]) == 1
    assert low["n_rounds"] == 2 and low["cdir_lambda"] == 0.8 and low["image_index_tag"] == "run-img-test"
    assert low["protocol"] == "mcq" and (low["prediction_before_cdir"], low["prediction"]) == ("A", "B")
    assert low["correct_before_cdir"] == (low["gold"] == "A") and low["correct"] == (low["gold"] == "B")
    for row in (high, text):  # confident, or text-only (CDIR does not apply): the first pass stands
        assert not row["cdir_triggered"] and row["cdir_case_ids"] == [] and row["n_rounds"] == 1
        assert row["prediction"] == row["prediction_before_cdir"] == "A"
        assert row["confidence"] == row["confidence_before_cdir"]
    assert text["confidence"] == pytest.approx(0.3)  # below λ, yet not triggered: no image
    assert [c["n"] for c in spy.calls] == [1]  # one batched search, for the one triggered row
    own = image_rows["image_refs"][0].to_list()
    assert set(own) <= set(spy.calls[0]["exclude"])


def test_cdir_never_appends_the_query_image(
    policy, retriever, image_retriever, image_index, image_loader, vqa_frame, monkeypatch
):
    items = benchmark_items(vqa_frame, "vqa_rad", splits=["test"]).head(4)
    # the index holds every VQA-RAD test image (they are also training images): without exclusion the
    # query image is its own nearest case
    unguarded = image_retriever.search_images([image_loader(r[0]) for r in items["image_refs"]], k=1)
    own = [r[0] for r in items["image_refs"]]
    assert [h[0].image_ref for h in unguarded] == own
    model, processor = policy
    model.generate = ScriptedGenerate(processor.tokenizer, answer_script())
    res = run(
        items,
        policy,
        retriever,
        modes=("rwr_cdir",),
        image_retriever=image_retriever,
        image_loader=image_loader,
        image_index_tag="run-img-test",
        cdir_lambda=1.0,
        batch_size=4,
    )
    case_ref = dict(zip(image_index[2]["id"], image_index[2]["image_ref"], strict=True))
    assert res["cdir_triggered"].all()
    for row in res.iter_rows(named=True):
        item_refs = items.filter(pl.col("item_id") == row["item_id"])["image_refs"][0].to_list()
        assert row["cdir_case_ids"] and not {case_ref[c] for c in row["cdir_case_ids"]} & set(item_refs)


def test_cdir_appends_k_cases_with_their_images(policy, retriever, image_retriever, image_loader, vqa_frame):
    model, processor = policy
    items = benchmark_items(vqa_frame, "slake", splits=["test"]).head(2)
    model.generate = ScriptedGenerate(processor.tokenizer, answer_script())
    ro = CdirRollout(retriever, max_rounds=1, max_new_tokens_per_round=24, do_sample=False, score=True)
    images = [[image_loader(r) for r in refs] for refs in items["image_refs"]]
    first = ro.run(
        model,
        processor,
        [item_messages(r, im, retrieval=True) for r, im in zip(items.to_dicts(), images, strict=True)],
    )
    out = apply_cdir(
        ro,
        model,
        processor,
        first,
        query_images=[im[0] for im in images],
        item_image_refs=items["image_refs"].to_list(),
        image_retriever=image_retriever,
        image_loader=image_loader,
        cdir_lambda=1.0,
        k=2,
    )
    assert (out.search_calls, out.continue_calls) == (1, 1)
    for t, v, trace in zip(out.result.trajectories, out.result.vision, out.traces, strict=True):
        assert trace.triggered and len(trace.case_ids) == 2 and t.prefix_ok
        text = processor.tokenizer.decode(t.completion_ids)
        assert text.count("Similar case:") == 2 and text.count("<|vision_start|>") == 2
        assert v.n_images == 3  # the item's image and the two cases' images
        assert t.answer_token_prob is not None  # the real forward pass took the three images


def test_every_mode_gives_valid_rows(
    policy, retriever, image_retriever, image_loader, vqa_frame, text_qa_frame
):
    model, processor = policy
    items = sample_items(vqa_frame, text_qa_frame)

    def script(call, row, ctx):  # rows that may query (not direct, no passages yet) do so once, then answer
        answered_part = ctx.rsplit("<|im_start|>assistant", 1)[-1]
        if "Similar case:" in ctx or "<retrieve>" in answered_part or "Answer from your own knowledge" in ctx:
            return "<think> so </think><answer> A </answer>"
        return "<think> need facts </think><query> lung infection </query>"

    model.generate = ScriptedGenerate(processor.tokenizer, script)
    res = run(
        items,
        policy,
        retriever,
        image_retriever=image_retriever,
        image_loader=image_loader,
        image_index_tag="run-img-test",
        cdir_lambda=1.0,
        batch_size=3,
    )
    assert res.schema == pl.Schema(EVAL_RESULTS_SCHEMA)
    validate_results(res)
    assert res.height == len(MODES) * items.height
    assert set(res["mode"]) == set(MODES)
    by_mode = {m: res.filter(pl.col("mode") == m) for m in MODES}
    assert by_mode["direct"]["kb_tag"].null_count() == items.height
    assert by_mode["direct"]["queries"].list.len().max() == 0 and set(by_mode["direct"]["n_rounds"]) == {1}
    assert by_mode["rwr"]["queries"].to_list() == [["lung infection"]] * items.height
    assert by_mode["rwr"]["retrieved_ids"].list.first().to_list() == ["kb:pneumonia"] * items.height
    rag = by_mode["rag_control"].join(items.select("item_id", "question"), on="item_id", suffix="_item")
    assert rag["queries"].to_list() == [[q] for q in rag["question_item"]]
    assert set(by_mode["random_retriever"]["retrieved_ids"].explode()) <= KB_IDS
    cdir = by_mode["rwr_cdir"].join(items.select("item_id", "image_refs"), on="item_id")
    assert cdir["cdir_triggered"].to_list() == (cdir["image_refs"].list.len() > 0).to_list()
    assert set(cdir["image_index_tag"]) == {"run-img-test"}
    assert set(res["checkpoint"]) == {"base"} and set(res["benchmark_version"]) == {"v-test"}
    assert (res["latency_s"] > 0).all() and (res["generated_tokens"] > 0).all()
    assert set(res.filter(pl.col("protocol") == "mcq")["prediction"]) == {"A"}


def test_one_rollout_call_per_batch_per_mode(
    policy, retriever, image_retriever, image_loader, vqa_frame, text_qa_frame, monkeypatch
):
    model, processor = policy
    items = sample_items(vqa_frame, text_qa_frame)  # batches: 3 image items; 1 image + 2 text items
    model.generate = ScriptedGenerate(processor.tokenizer, answer_script())
    calls = {"run": 0, "continue_with": 0}
    for name in calls:
        real = getattr(CdirRollout, name)

        def spy(self, *a, _real=real, _name=name, **kw):
            calls[_name] += 1
            return _real(self, *a, **kw)

        monkeypatch.setattr(CdirRollout, name, spy)
    counting = CountingRetriever(retriever)
    images = SpyImageRetriever(image_retriever)
    progress = []
    run(
        items,
        policy,
        counting,
        image_retriever=images,
        image_loader=image_loader,
        image_index_tag="run-img-test",
        random_retriever=KBRandomRetriever.like(retriever),
        cdir_lambda=1.0,
        batch_size=3,
        progress=lambda done, total: progress.append((done, total)),
    )
    assert progress == [(3, 6), (6, 6)]
    # per batch: direct, rwr (shared with rwr_cdir), rag_control, random_retriever, blank_image,
    # shuffled_image; one CDIR continuation
    assert calls == {"run": 2 * 6, "continue_with": 2}
    assert [c["n"] for c in images.calls] == [3, 1]  # the image rows of each batch, one search each
    assert counting.calls == [3, 3]  # only rag_control searches the real KB here (the script never queries)
    # generate: direct, rwr, CDIR continuation (image rows only), rag_control, random_retriever, the two
    # image controls
    assert [c["rows"] for c in model.generate.calls] == [3, 3, 3, 3, 3, 3, 3] + [3, 3, 1, 3, 3, 3, 3]


def test_random_retriever_draws_from_the_pinned_kb(kb, retriever, text_embedder):
    control = KBRandomRetriever.like(retriever, seed=3)
    hits = control.search(["anything"] * 40, k=3)
    texts = {p[0]: f"{p[2]}" for p in PASSAGES}
    assert all(len(h) == 3 and len({x.id for x in h}) == 3 for h in hits)
    assert {x.id for h in hits for x in h} == KB_IDS  # every passage gets drawn, nothing else
    assert all(x.text == texts[x.id] for h in hits for x in h)  # the row read is the row drawn
    again = KBRandomRetriever.like(retriever, seed=3).search(["other"] * 40, k=3)
    assert [[x.id for x in h] for h in again] == [[x.id for x in h] for h in hits]  # seeded, query ignored


def test_random_retriever_offsets_on_a_multi_fragment_table(tmp_path):
    import lancedb
    import pyarrow as pa

    tbl = lancedb.connect(str(tmp_path)).create_table(
        "kb_text",
        pa.table(
            {
                "id": [f"a{i}" for i in range(5)],
                "source": ["s"] * 5,
                "title": ["t"] * 5,
                "text": [f"a{i}" for i in range(5)],
            }
        ),
    )
    tbl.add(
        pa.table(
            {
                "id": [f"b{i}" for i in range(5)],
                "source": ["s"] * 5,
                "title": ["t"] * 5,
                "text": [f"b{i}" for i in range(5)],
            }
        )
    )
    tbl.delete("id = 'a1'")
    hits = KBRandomRetriever(tbl, seed=0).search(["q"] * 30, k=4)
    assert all(x.text == x.id for h in hits for x in h)
    assert {x.id for h in hits for x in h} == {f"a{i}" for i in (0, 2, 3, 4)} | {f"b{i}" for i in range(5)}


class _EchoJudge:
    """A stub judge: an answer is right when it equals the reference, case aside."""

    judge_id = "stub-judge@sha256:0"

    def judge(self, questions, golds, predictions):
        return [g.lower() == p.lower() for g, p in zip(golds, predictions, strict=True)]


def test_judge_fills_the_judge_columns_of_open_rows_only(
    policy, retriever, image_loader, vqa_frame, text_qa_frame
):
    model, processor = policy
    items = sample_items(vqa_frame, text_qa_frame)
    model.generate = ScriptedGenerate(processor.tokenizer, lambda call, row, ctx: "<answer> A </answer>")
    plain = run(items, policy, retriever, modes=("direct",), image_loader=image_loader)
    assert plain["judge_model"].null_count() == plain.height
    assert plain["judge_correct"].null_count() == plain.height
    judged = run(items, policy, retriever, modes=("direct",), image_loader=image_loader, judge=_EchoJudge())
    validate_results(judged)
    is_open = judged["protocol"] == "open"
    assert is_open.any() and (~is_open).any()
    assert judged.filter(is_open)["judge_model"].to_list() == [_EchoJudge.judge_id] * int(is_open.sum())
    assert judged.filter(is_open)["judge_correct"].null_count() == 0
    assert judged.filter(~is_open)["judge_model"].null_count() == int((~is_open).sum())
    assert judged.drop("judge_model", "judge_correct", "latency_s").equals(
        plain.drop("judge_model", "judge_correct", "latency_s")
    )


def test_arguments_are_checked(policy, retriever, vqa_frame, image_loader):
    items = benchmark_items(vqa_frame, "slake", splits=["test"]).head(2)
    with pytest.raises(EvaluationError, match="image_retriever"):
        run(items, policy, retriever, modes=("rwr_cdir",), image_loader=image_loader)
    with pytest.raises(EvaluationError, match="kb_tag"):
        run(items, policy, retriever, modes=("rwr",), image_loader=image_loader, kb_tag=None)
    with pytest.raises(EvaluationError, match="image_loader"):
        run(items, policy, retriever, modes=("direct",))
    with pytest.raises(EvaluationError, match="at most once"):
        run(items, policy, retriever, modes=("rwr", "rwr"), image_loader=image_loader)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_end_to_end_real_tiny_model(
    policy, retriever, image_retriever, image_loader, vqa_frame, text_qa_frame
):
    """Nothing patched: the tiny random-weight model samples, the real KB and image index answer."""
    items = sample_items(vqa_frame, text_qa_frame).tail(4)  # VQA-RAD open, SLAKE MCQ, two MedQA MCQs
    res = run(
        items,
        policy,
        retriever,
        image_retriever=image_retriever,
        image_loader=image_loader,
        image_index_tag="run-img-test",
        batch_size=4,
        do_sample=True,
        seed=1,
        # every mode 16 sampled tokens in all (rounds share them), a CDIR regeneration 8 more
        rollout_settings=RolloutSettings(max_new_tokens_per_round=8, max_completion_tokens=16, max_rounds=2),
    )
    validate_results(res)
    assert res.height == len(MODES) * items.height  # the items show images: the image controls run too
    assert res["generated_tokens"].max() <= 16 + 8
    cdir = res.filter(pl.col("mode") == "rwr_cdir")
    # chance-level model: rows without a confident answer trigger CDIR when they have an image
    triggered = cdir.filter(pl.col("cdir_triggered"))
    assert triggered.height >= 1 and (triggered["cdir_case_ids"].list.len() == 1).all()
    assert (
        set(res.filter(pl.col("mode") == "random_retriever")["retrieved_ids"].explode().drop_nulls())
        <= KB_IDS
    )


def test_every_mode_has_the_same_total_budget_and_cdir_its_own(
    policy, retriever, image_retriever, image_loader, vqa_frame, text_qa_frame, monkeypatch
):
    """A model that never stops samples exactly ``max_completion_tokens`` in every mode (one round in direct
    and rag_control, as many as it likes in rwr), and a CDIR regeneration of a row that spent that whole
    budget unanswered gets ``max_new_tokens_per_round`` more, not the leftover token."""
    model, processor = policy
    items = sample_items(vqa_frame, text_qa_frame)
    endless = " ".join(["lung"] * 200)
    model.generate = ScriptedGenerate(processor.tokenizer, lambda call, row, ctx: endless)
    patch_confidence(monkeypatch, lambda prompt, t: 0.1)
    res = run(
        items,
        policy,
        retriever,
        rollout_settings=RolloutSettings(max_new_tokens_per_round=6, max_completion_tokens=20, max_rounds=3),
        image_retriever=image_retriever,
        image_loader=image_loader,
        image_index_tag="run-img-test",
        cdir_lambda=1.0,
    )
    validate_results(res)
    for mode in ("direct", "rwr", "rag_control", "random_retriever"):
        assert set(res.filter(pl.col("mode") == mode)["generated_tokens"]) == {20}, mode
    calls = model.generate.calls
    assert {c["max_new_tokens"] for c in calls if c["max_new_tokens"] > 1} <= {20, 6}
    cdir = res.filter((pl.col("mode") == "rwr_cdir") & pl.col("cdir_triggered"))
    assert cdir.height > 0
    # the first pass's 20 tokens, then its own round of 6 after the case (EOS-free, so all 6 sampled)
    assert set(cdir["generated_tokens"]) == {26}
    # strict accuracy: nobody answered; the forced choices fill forced_prediction only
    mcq = res.filter(pl.col("protocol") == "mcq")
    assert mcq["prediction"].null_count() == mcq.height and not mcq["correct"].any()
    assert mcq["forced_prediction"].null_count() == 0 and mcq["answer_forced"].all()
