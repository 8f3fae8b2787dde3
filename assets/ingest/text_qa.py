"""The text-QA reader registry: dataset name -> the reader of its released layout (``text_qa_items`` rows).

MedQA-USMLE (jsonl), MedMCQA (jsonl, 1-based ``cop``), PubMedQA (``ori_pqal.json``) and a generic reader
for CSV/TSV/JSONL files whose columns are declared in a ``mcq_mapping.yaml`` beside them (its keys and
their validation: :mod:`assets.ingest.mcq_mapping`); one module per reader under
:mod:`assets.ingest.readers`. Adding a dataset: a reader module (``read_x(src, out=None)``, rows added to
``out`` through :func:`~assets.ingest.readers.common.collect`) and one line in :data:`READERS`.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from assets.common.records import ReadResult
from storage.sources import SourceDir

from .readers import mcq_custom, medmcqa, medqa, pubmedqa
from .readers.common import BATCH_ROWS, FrameBuilder
from .readers.text_qa_row import TEXT_QA_SCHEMA

READERS: dict[str, Callable[[SourceDir, ReadResult], ReadResult]] = {
    "medqa": medqa.read_medqa,
    "medmcqa": medmcqa.read_medmcqa,
    "pubmedqa": pubmedqa.read_pubmedqa,
    "mcq_custom": mcq_custom.read_mcq_generic,
}
TEXT_QA_DATASETS = tuple(READERS)  # the partitions of text_qa_items, in this order


def read_text_qa(
    dataset: str, src: SourceDir, batch_rows: int = BATCH_ROWS
) -> tuple[pl.DataFrame, ReadResult]:
    """Read one text-QA dataset: the normalized table and the read result (its rejections; its rows are in
    the table). The reader's rows become columnar every ``batch_rows`` rows (:class:`FrameBuilder`), so
    memory is bounded by a batch of row dicts plus the table, not by every row as a dict."""
    if dataset not in READERS:
        raise ValueError(f"unknown text-QA dataset {dataset!r}; known: {', '.join(READERS)}")
    builder = FrameBuilder(TEXT_QA_SCHEMA, batch_rows)
    result = READERS[dataset](src, builder.result())
    return builder.frame(), result
