"""``split_use`` is an asset: the graph shows the edges to the stage items and to ``eval_results``."""

import polars as pl
import pytest
from dagster import AssetKey, Failure

from assets.evaluation.assets import benchmark_frame
from orchestration.definitions import defs
from training.data import EVAL_SPLITS, SplitUse, split_use


def test_split_use_is_an_input_of_the_stage_items_and_of_eval_results():
    graph = defs.resolve_asset_graph()
    assert graph.has(AssetKey("split_use"))
    children = {k.to_user_string() for k in graph.get(AssetKey("split_use")).child_keys}
    assert {"stage1_items", "stage2_items", "eval_results"} <= children
    parents = {k.to_user_string() for k in graph.get(AssetKey("split_use")).parent_keys}
    assert parents == {"text_qa_items", "vqa_items"}


def _frames():
    text = pl.DataFrame(
        {
            "item_id": ["q1", "q2", "m1"],
            "dataset": ["medqa", "medqa", "medmcqa"],
            "split": ["test", "test", "validation"],
            "question": ["a", "b", "c"],
        }
    )
    empty = pl.DataFrame(schema={"dataset": pl.Utf8, "split": pl.Utf8})
    return text, empty


def test_decisions_round_trip_and_give_the_evaluated_splits():
    text, _ = _frames()
    use = split_use(text.select("dataset", "split"), {"medqa": "eval", "medmcqa": "train"})
    back = SplitUse.from_frame(use.decisions_frame())
    assert (back.train, back.evaluate, back.decisions) == (use.train, use.evaluate, use.decisions)
    assert back.evaluated_splits("medqa") == ["test"] and back.evaluated_splits("medmcqa") == []
    assert back.evaluated_splits("unknown") == list(EVAL_SPLITS)
    assert back.trained_only("medmcqa") and not back.trained_only("medqa")


def test_eval_results_takes_its_splits_from_the_split_use_input():
    text, empty = _frames()
    use = split_use(text.select("dataset", "split"), {"medqa": "eval", "medmcqa": "train"})
    decisions = use.decisions_frame()
    frame, splits = benchmark_frame("medqa", empty, text, empty, decisions)
    assert splits == ["test"] and frame["item_id"].to_list() == ["q1", "q2"]
    assert benchmark_frame("medqa", empty, text, empty, decisions.clear())[1] == list(EVAL_SPLITS)
    trained = split_use(text.select("dataset", "split"), {"medqa": "train", "medmcqa": "train"})
    trained = trained.decisions_frame()
    with pytest.raises(Failure, match="never evaluated. Change no_train_split of split_use"):
        benchmark_frame("medqa", empty, text, empty, trained)
