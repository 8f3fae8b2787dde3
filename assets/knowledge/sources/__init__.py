"""Knowledge-base passages from the released corpora, chunked to fit the embedder, with stable ids and
duplicates removed.

Every reader returns a :class:`ReadResult` whose rows follow :data:`PASSAGE_SCHEMA`; every source record
either becomes passages or is quarantined with a reason (a non-object JSON line, a missing field, a native id
repeated with different content, a duplicate). Ids are stable across runs: ``<source>:<native id>#<chunk>``,
so an unchanged record keeps its id (and its content hash) and the index only re-embeds what changed.
Chunks are cut by the embedder's tokenizer (:class:`retrieval.chunking.TokenChunker`): what gets embedded,
``"<title>. <chunk>"``, never exceeds the embedder's max sequence length. Plain Python: no Dagster import.

Sources (one partition key each):

- ``medquad``     MedQuAD answers (``medquad_qa.jsonl.gz``); native id ``<release id>-<sha256(subset, release
                  id, url, question)[:12]>`` because the release's ``id`` repeats across subsets and questions
- ``pubmedqa``    PubMedQA abstracts (``ori_pqal.json``), untitled, chunked (``pubmedqa:<pmid>#<chunk>``)
- ``slake_kg``    SLAKE knowledge-graph triples (``KG_mvqa-kg/en_*.csv``, '#'-separated) as sentences
- ``medmcqa_exp`` MedMCQA explanations (``dev.json``/``train.json`` JSON lines, field ``exp``)
- anything else   a MedRAG-style corpus: ``*.jsonl[.gz]`` with ``id``, ``title``, ``content`` or ``*.parquet``

To add a KB source: write its reader module here (a ``read_<name>(src, chunker, limit) -> ReadResult`` and a
``SOURCE = KbSource(name, reader, patterns)``) and add ``SOURCE`` to :data:`REGISTRY` below; the partition
key, :func:`read_kb_source` and the source watcher (``watch.py``) all follow the registry. The profile's
default partitions and the source's data folder are settings in ``assets/common/profiles.py``
(``KB_SOURCES``, ``DATASET_FOLDERS``); ``tests/knowledge/test_source_registry.py`` keeps them in step.
"""

from __future__ import annotations

import polars as pl

from assets.common.records import ReadResult
from retrieval.chunking import TokenChunker
from storage.sources import SourceDir

from . import medmcqa_exp, medquad, pubmedqa, slake_kg
from .base import PASSAGE_SCHEMA, KbSource, content_hash, normalize_text, passage, passages_frame
from .dedup import NEAR_DUPLICATE_JACCARD, SHINGLE_WORDS, NearDuplicateIndex, deduplicate, jaccard, shingles
from .medmcqa_exp import read_medmcqa_exp
from .medquad import medquad_native_id, read_medquad
from .medrag import CORPUS_PATTERNS, read_medrag
from .pubmedqa import read_pubmedqa
from .slake_kg import read_slake_kg

REGISTRY: dict[str, KbSource] = {
    s.name: s
    for s in (
        medquad.SOURCE,
        pubmedqa.SOURCE,
        slake_kg.SOURCE,
        medmcqa_exp.SOURCE,
    )
}
"""The known KB sources by partition key; any other key is a MedRAG-style corpus (:func:`read_medrag`)."""

KB_READERS = {name: s.read for name, s in REGISTRY.items()}


def read_kb_source(
    source: str, src: SourceDir, chunker: TokenChunker, limit: int | None = None
) -> tuple[pl.DataFrame, ReadResult]:
    """Passages of ``source`` (a known corpus or a MedRAG-style folder), chunked by ``chunker``, deduplicated.

    ``limit`` caps the number of source records read (smoke runs). Duplicates and rows with problems are in
    the result's rejections, each with a reason (duplicates name the passage they duplicate).
    """
    known = REGISTRY.get(source)
    result = known.read(src, chunker, limit) if known else read_medrag(src, source, chunker, limit)
    kept, dups = deduplicate(result.rows)
    result.rows = kept
    result.rejected.extend(dups)
    return passages_frame(kept), result


__all__ = [
    "CORPUS_PATTERNS",
    "KB_READERS",
    "NEAR_DUPLICATE_JACCARD",
    "PASSAGE_SCHEMA",
    "REGISTRY",
    "SHINGLE_WORDS",
    "KbSource",
    "NearDuplicateIndex",
    "content_hash",
    "deduplicate",
    "jaccard",
    "medquad_native_id",
    "normalize_text",
    "passage",
    "passages_frame",
    "read_kb_source",
    "read_medmcqa_exp",
    "read_medquad",
    "read_medrag",
    "read_pubmedqa",
    "read_slake_kg",
    "shingles",
]
