"""The LanceDB knowledge store: one table per embedder, per-source incremental sync, explicit maintenance,
tag retention, and a vector index chosen by measured recall on real questions.

The code lives in :mod:`retrieval.kb`, one module per job: :mod:`~retrieval.kb.connection`
(:class:`KBLocation`, :func:`writer_lock`), :mod:`~retrieval.kb.naming` (``<base>__<embedder fingerprint>``
tables), :mod:`~retrieval.kb.rows`, :mod:`~retrieval.kb.index_choice` (:class:`IndexPolicy`, search parameters
per version), :mod:`~retrieval.kb.maintenance`, :mod:`~retrieval.kb.tags` (:class:`Retention`, publication
tags, rollback) and :mod:`~retrieval.kb.sync` (:func:`sync_table`). This module re-exports their public names.
Plain values in (a :class:`KBLocation`: URI and object-store options); no Dagster or ``orchestration`` import.
"""

from __future__ import annotations

from .kb.connection import WRITER_LOCK, KBLocation, connect, local_root, writer_lock
from .kb.index_choice import (
    DISTANCE,
    PARAMS_TABLE,
    VECTOR_INDEX,
    Z_95,
    IndexPolicy,
    apply_search_params,
    choose_vector_index,
    index_candidates,
    load_search_params,
    measure_recall,
    save_search_params,
)
from .kb.maintenance import NO_PRUNE, maintain, unindexed_rows
from .kb.naming import (
    EMBEDDER_KEY,
    EmbedderTableMissing,
    embedder_table,
    embedder_tables,
    identity_fingerprint,
    open_embedder_table,
    table_embedder,
)
from .kb.rows import (
    TEXT_COLUMNS,
    TEXT_FTS_COLUMN,
    passage_texts,
    read_columns,
    table_vectors,
    text_table_rows,
    with_search_text,
)
from .kb.sync import SyncReport, sync_table
from .kb.tags import RUN_TAG_PREFIX, Retention, prune_versions, restore_version, tag_version

__all__ = [
    "DISTANCE",
    "EMBEDDER_KEY",
    "NO_PRUNE",
    "PARAMS_TABLE",
    "RUN_TAG_PREFIX",
    "TEXT_COLUMNS",
    "TEXT_FTS_COLUMN",
    "VECTOR_INDEX",
    "WRITER_LOCK",
    "Z_95",
    "EmbedderTableMissing",
    "IndexPolicy",
    "KBLocation",
    "Retention",
    "SyncReport",
    "apply_search_params",
    "choose_vector_index",
    "connect",
    "embedder_table",
    "embedder_tables",
    "identity_fingerprint",
    "index_candidates",
    "load_search_params",
    "local_root",
    "maintain",
    "measure_recall",
    "open_embedder_table",
    "passage_texts",
    "prune_versions",
    "read_columns",
    "restore_version",
    "save_search_params",
    "sync_table",
    "table_embedder",
    "table_vectors",
    "tag_version",
    "text_table_rows",
    "unindexed_rows",
    "with_search_text",
    "writer_lock",
]
