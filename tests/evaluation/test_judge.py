"""The optional open-answer judge: pinned, recorded on every judged row, and never silently replaced.

The loadable judge is a real (tiny, random-weight) GPT-2 causal LM saved to a folder with the real
all-MiniLM-L6-v2 tokenizer: its verdicts are arbitrary, but loading, pinning, batching and recording run
for real.
"""

import polars as pl
import pytest

from tests.evaluation.results_fixtures import row, scored
from training.evaluation.judge import JudgeUnavailableError, apply_judge, folder_digest, load_judge
from training.evaluation.metrics import open_scores
from training.evaluation.results import validate_results


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory):
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from retrieval.embedders import default_text_model

    tokenizer = AutoTokenizer.from_pretrained(default_text_model())
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=256,
            n_embd=16,
            n_layer=1,
            n_head=2,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    folder = tmp_path_factory.mktemp("judge")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _open_results():
    return scored(
        [
            row("o1", protocol="open", gold="left lung", prediction="left lung"),
            row("o2", protocol="open", gold="the liver", prediction="spleen"),
            row("o3", protocol="open", gold="mri", prediction=None, confidence=None),
            row("m1", protocol="mcq"),
        ]
    )


def test_no_judge_configured_means_no_judge():
    assert load_judge(None) is None and load_judge("") is None
    df = _open_results()
    assert apply_judge(df, None).equals(df)


def test_configured_but_unavailable_judges_fail_clearly(tmp_path):
    with pytest.raises(JudgeUnavailableError, match="no such folder and not a hub id"):
        load_judge(str(tmp_path / "missing"))
    with pytest.raises(JudgeUnavailableError, match="not a commit hash"):
        load_judge("Qwen/Qwen2.5-7B-Instruct", revision="main")
    with pytest.raises(JudgeUnavailableError, match=r"(?s)could not be loaded: .*remove the judge setting"):
        load_judge("medrwr-test/no-such-judge", revision="0" * 40, local_files_only=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(JudgeUnavailableError, match="could not be loaded"):
        load_judge(str(tmp_path / "empty"))


@pytest.mark.timeout(120)
def test_a_real_judge_is_pinned_and_recorded(judge_dir):
    judge = load_judge(str(judge_dir), batch_size=2)
    assert judge.judge_id == f"{judge_dir.resolve()}@sha256:{folder_digest(judge_dir)}"
    df = apply_judge(_open_results(), judge)
    validate_results(df)
    open_rows = df.filter(pl.col("protocol") == "open")
    assert open_rows["judge_model"].to_list() == [judge.judge_id] * 3
    assert open_rows["judge_correct"].null_count() == 0
    assert open_rows["judge_correct"][2] is False  # no answer is never judged correct
    mcq = df.filter(pl.col("protocol") == "mcq")
    assert mcq["judge_model"].to_list() == [None] and mcq["judge_correct"].to_list() == [None]
    scores = open_scores(df).row(0, named=True)
    assert scores["judge_model"] == judge.judge_id
    assert scores["judge_accuracy"] == pytest.approx(open_rows["judge_correct"].cast(pl.Float64).mean())
    # verdicts do not depend on how the rows were batched
    again = apply_judge(_open_results(), load_judge(str(judge_dir), batch_size=3))
    assert again["judge_correct"].to_list() == df["judge_correct"].to_list()


def test_the_pin_changes_with_the_weights(judge_dir, tmp_path):
    import shutil

    copy = tmp_path / "judge"
    shutil.copytree(judge_dir, copy)
    assert folder_digest(copy) == folder_digest(judge_dir)
    (copy / "config.json").write_text(
        (copy / "config.json").read_text().replace('"n_layer": 1', '"n_layer":1')
    )
    assert folder_digest(copy) != folder_digest(judge_dir)


def test_the_judge_needs_the_question(judge_dir):
    df = _open_results().with_columns(question=pl.lit(None, pl.Utf8))
    with pytest.raises(ValueError, match="no question text"):
        apply_judge(df, load_judge(str(judge_dir)))
