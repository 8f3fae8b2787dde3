"""The vector index is chosen in the pipeline: kb_text_index holds out real queries (passage titles of
sources that are not evaluation benchmarks) and measures each candidate's recall@10 against exact search on
them. Seen before: "no held-out queries supplied: index kept, recall not measured" on every run."""

import polars as pl
import pytest
from dagster import DagsterInstance, materialize

from assets.knowledge.assets import EVALUATION_SOURCES, held_out_queries, kb_passages, kb_text_index
from orchestration.definitions import build_resources


def test_held_out_queries_are_seeded_distinct_titles_never_from_evaluation_sources():
    frame = pl.DataFrame(
        {
            "source": ["medquad"] * 6 + ["pubmedqa", "medmcqa_exp"],
            "title": [
                "What is A ?",
                "What is B ?",
                "What is A ?",
                " What is C ? ",
                None,
                "",
                "PQ title",
                "MM q",
            ],
        }
    )
    assert set(EVALUATION_SOURCES) == {"pubmedqa", "medmcqa_exp"}
    assert held_out_queries(frame, 10) == ["What is A ?", "What is B ?", "What is C ?"]
    two = held_out_queries(frame, 2)
    assert (
        len(two) == 2
        and two == held_out_queries(frame, 2)
        and set(two) <= {"What is A ?", "What is B ?", "What is C ?"}
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_kb_text_index_trials_indexes_on_held_out_queries(storage):
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("kb_sources", ["medquad"])
    assert materialize(
        [kb_passages, kb_text_index],
        selection=[kb_passages],
        partition_key="medquad",
        instance=instance,
        resources=build_resources(),
        run_config={"ops": {"kb_passages": {"config": {"max_records": 150}}}},
    ).success
    result = materialize(
        [kb_passages, kb_text_index],
        selection=[kb_text_index],
        instance=instance,
        resources=build_resources(),
        run_config={
            "ops": {"kb_text_index": {"config": {"vector_index_min_rows": 100, "recall_queries": 60}}}
        },
    )
    assert result.success
    meta = {
        k: v.value for k, v in result.get_asset_materialization_events()[0].materialization.metadata.items()
    }
    params = meta["index_params"]
    assert meta["held_out_queries"] == 60
    assert params["trialled"] is True and params["reason"] == "first trial" and params["trial_queries"] == 60
    assert {t["index"] for t in params["trials"]} == {"flat", "IVF_HNSW_SQ", "IVF_PQ"}
    assert meta["recall_at_10_vs_exact"] is not None
    # kept only when it reaches the bar (with 95 % confidence), exact search otherwise
    if params["index"] != "flat":
        assert params["trial_recall"] >= 0.95
