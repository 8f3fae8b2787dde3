"""Rows of a KB table: the ``kb_text`` columns, the full-text column, vectors in and out of Arrow."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
import pyarrow as pa

from ..chunking import passage_input

TEXT_COLUMNS = ["id", "source", "native_id", "source_ref", "title", "text", "content_hash"]
TEXT_FTS_COLUMN = "search_text"


def sql_list(values: Sequence[str]) -> str:
    return ",".join("'" + str(v).replace("'", "''") + "'" for v in values)


def vectors_column(vectors: np.ndarray) -> pa.FixedSizeListArray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1])


def table_vectors(table: pa.Table, column: str = "vector") -> np.ndarray:
    """A fixed-size-list vector column as a 2-D float32 array."""
    col = table[column].combine_chunks()
    if len(col) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), -1).astype(np.float32)


def read_columns(tbl, columns: list[str], where: str | None = None) -> pl.DataFrame:
    """Selected columns of every row (matching ``where``) of a LanceDB table as polars."""
    query = tbl.search().select(columns)
    if where:
        query = query.where(where)
    return pl.from_arrow(query.limit(None).to_arrow().select(columns))


def with_search_text(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` (``title``, ``text``) plus ``search_text`` = what the dense side embeds
    (:func:`passage_input`: title and text), the column the full-text index covers."""
    title = pl.col("title")
    return frame.with_columns(
        pl.when(title.is_not_null() & (title != ""))
        .then(pl.concat_str([title, pl.lit(". "), pl.col("text")]))
        .otherwise(pl.col("text"))
        .alias(TEXT_FTS_COLUMN)
    )


def text_table_rows(passages: pl.DataFrame) -> pl.DataFrame:
    """The ``kb_text`` rows of a passages frame: ids, provenance (``native_id``, ``source_ref``), payload and
    ``search_text`` (:func:`with_search_text`), for the FTS index."""
    return with_search_text(passages.select(TEXT_COLUMNS))


def passage_texts(rows: pl.DataFrame) -> list[str]:
    """What each ``kb_text`` row is embedded as (title and text, :func:`passage_input`)."""
    return [passage_input(t, x) for t, x in zip(rows["title"], rows["text"], strict=True)]
