"""The vector index is chosen in the pipeline: kb_text_index holds out real queries (passage titles of
sources that are not evaluation benchmarks) and measures each candidate's recall@10 against exact search on
them. Seen before: "no held-out queries supplied: index kept, recall not measured" on every run."""

import polars as pl

from assets.knowledge.assets import EVALUATION_SOURCES, held_out_queries


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
