"""The LanceDB knowledge store, one job per module: :mod:`.connection` (where a KB lives, the writer lock),
:mod:`.naming` (one table per embedder), :mod:`.rows` (table rows and vectors), :mod:`.index_choice` (vector
index by measured recall, search parameters per version), :mod:`.maintenance` (FTS index, compaction),
:mod:`.tags` (publication tags, rollback, retention) and :mod:`.sync` (per-source incremental sync).
:mod:`retrieval.store` re-exports the public names. Plain values in; no Dagster or ``orchestration`` import.
"""
