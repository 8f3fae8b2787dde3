"""Knowledge-base checks: passages well formed; vectors of the right size and norm; every row searchable.

Plain functions returning a :class:`~quality.contracts.ContractResult` (one outcome per rule), which the
knowledge assets report as blocking Dagster checks. No Dagster import.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from .contracts import ContractResult, ExpectationOutcome


def outcome(name: str, bad: list[Any], column: str | None = None) -> ExpectationOutcome:
    """An outcome that passes when ``bad`` (the offending values) is empty."""
    return ExpectationOutcome(name, column, not bad, len(bad), [str(b) for b in bad[:5]])


def check_passages(df: pl.DataFrame) -> ContractResult:
    """Ids unique and shaped ``<source>:<native id>#<chunk>``; text and content hash present."""
    dup = df.filter(pl.col("id").is_duplicated())["id"].unique().to_list()
    empty = df.filter(pl.col("text").is_null() | (pl.col("text").str.strip_chars() == ""))["id"].to_list()
    shape = df.filter(~pl.col("id").str.contains(r"^[^:]+:.+#\d+$"))["id"].to_list()
    no_hash = df.filter(pl.col("content_hash").str.len_chars() != 64)["id"].to_list()
    return ContractResult(
        "kb_passages",
        df.height,
        [
            outcome("ids_unique", dup, "id"),
            outcome("ids_stable_shape", shape, "id"),
            outcome("text_not_empty", empty, "text"),
            outcome("content_hash_sha256", no_hash, "content_hash"),
        ],
    )


def check_no_evaluation_images(df: pl.DataFrame, evaluation: set[str] | dict[str, str]) -> ExpectationOutcome:
    """No image case is an image of any benchmark's validation or test split: ``evaluation`` holds their
    content hashes (``<sha256>`` of an image id ``<sha256>.<ext>``)."""
    keys = set(evaluation)
    leaked = [f"{i} ({r})" for i, r in df.select("id", "image_ref").iter_rows() if r.split(".", 1)[0] in keys]
    return outcome("no_evaluation_images", leaked, "image_ref")


def check_image_cases(
    df: pl.DataFrame, present_images: set[str], evaluation_refs: set[str] | dict[str, str]
) -> ContractResult:
    """One case per id, non-empty descriptions, every image ref stored, and no evaluation image among the
    cases (``evaluation_refs``: content hashes of every validation/test image, see
    ``assets.knowledge.image_cases.evaluation_images``)."""
    return ContractResult(
        "kb_image_cases",
        df.height,
        [
            outcome("ids_unique", df.filter(pl.col("id").is_duplicated())["id"].to_list(), "id"),
            outcome(
                "description_not_empty", df.filter(pl.col("description") == "")["id"].to_list(), "description"
            ),
            outcome(
                "image_refs_resolvable", [r for r in df["image_ref"] if r not in present_images], "image_ref"
            ),
            check_no_evaluation_images(df, evaluation_refs),
        ],
    )


def check_vectors(
    ids: list[str], vectors: np.ndarray, dim: int, norm_tolerance: float = 1e-2
) -> list[ExpectationOutcome]:
    """Vector dimension equals the embedder's, no NaN/inf, L2 norm 1 within ``norm_tolerance``."""
    wrong_dim = [] if vectors.shape[1] == dim else [f"dim {vectors.shape[1]} != {dim}"]
    finite = np.isfinite(vectors).all(axis=1)
    norms = np.linalg.norm(np.where(np.isfinite(vectors), vectors, 0), axis=1)
    return [
        outcome("vector_dim", wrong_dim, "vector"),
        outcome("vectors_finite", [i for i, ok in zip(ids, finite, strict=True) if not ok], "vector"),
        outcome(
            "vectors_unit_norm",
            [f"{i}: {n:.3f}" for i, n in zip(ids, norms, strict=True) if abs(n - 1) > norm_tolerance],
            "vector",
        ),
    ]


def check_text_index(
    tbl, embedder: Any, dim: int, sample: int = 50, min_self_recall: float = 0.9, seed: int = 0
) -> ContractResult:
    """The ``kb_text`` table: built by ``embedder`` (its recorded identity), vectors sane (all rows),
    full-text index covers every row, and a sample of passages retrieves itself at rank 1 from its own text
    (ties with an identical vector count as hits)."""
    from retrieval.embedders import passage_input
    from retrieval.kb.naming import table_embedder
    from retrieval.kb.rows import read_columns, table_vectors
    from retrieval.search import Retriever

    rows = tbl.count_rows()
    data = tbl.search().select(["id", "vector"]).limit(None).to_arrow()
    recorded = table_embedder(tbl)
    outcomes = [
        outcome(
            "embedder_matches_table",
            []
            if recorded == embedder.identity()
            else [f"table records {recorded}, embedder is {embedder.identity()}"],
            "vector",
        )
    ]
    outcomes += check_vectors(data["id"].to_pylist(), table_vectors(data), dim)
    fts = [ix for ix in tbl.list_indices() if ix.index_type == "FTS"]
    stats = [tbl.index_stats(ix.name) for ix in fts]
    uncovered = (
        []
        if stats and all(s.num_indexed_rows == rows and s.num_unindexed_rows == 0 for s in stats)
        else [f"FTS index: {[(s.num_indexed_rows, s.num_unindexed_rows) for s in stats]} of {rows} rows"]
    )
    if not any("search_text" in ix.columns for ix in fts):
        uncovered.append(f"no FTS index on search_text (title + text, what the dense side embeds): {fts}")
    outcomes.append(outcome("fts_covers_every_row", uncovered, "search_text"))
    frame = read_columns(tbl, ["id", "title", "text"]).sample(min(sample, rows), seed=seed)
    retriever = Retriever.from_table(tbl, embedder)
    hits = retriever.search(
        [passage_input(t, x) for t, x in zip(frame["title"], frame["text"], strict=True)], k=1, mode="dense"
    )
    misses = [
        i for i, h in zip(frame["id"], hits, strict=True) if not h or (h[0].id != i and h[0].score < 0.999)
    ]
    recall = 1 - len(misses) / max(1, frame.height)
    outcomes.append(
        ExpectationOutcome(
            f"self_retrieval_at_1>={min_self_recall} (got {recall:.3f})",
            "id",
            recall >= min_self_recall,
            len(misses),
            misses[:5],
        )
    )
    return ContractResult("kb_text_index", rows, outcomes)


def check_image_index(tbl, dim: int, image_exists: Any) -> ContractResult:
    """The ``kb_image`` table: vectors sane and every ``image_ref`` resolvable in storage."""
    data = tbl.search().select(["id", "image_ref", "vector"]).limit(None).to_arrow()
    from retrieval.kb.rows import table_vectors

    outcomes = check_vectors(data["id"].to_pylist(), table_vectors(data), dim)
    refs = data["image_ref"].to_pylist()
    present = image_exists(set(refs))
    outcomes.append(outcome("image_refs_resolvable", [r for r in refs if r not in present], "image_ref"))
    return ContractResult("kb_image_index", data.num_rows, outcomes)
