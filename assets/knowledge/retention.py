"""Which LanceDB tags something published still references: what tag retention must never expire.

A KB tag is referenced by the published KB pointers (``kb_text_index``, ``kb_image_index``: column ``tag``),
by every published model pointer (checkpoints, the promoted checkpoint: the ``kb_tag`` of the manifest it
was trained or evaluated with) and by every evaluation report (``reports/<run>/lineage.json``: ``kb_tag``,
``image_index_tag``). :func:`referenced_tags` collects them all from the storage root; the index assets pass
them to :class:`retrieval.kb.tags.Retention` as ``pinned_tags``, next to the newest ``keep_tags``.

Pointer tables are recognized by their Parquet schema (read from the footer only, never the data of a large
table). A pointer or report that cannot be read fails the retention (nothing is expired): a tag it might
reference could otherwise be deleted.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq

from storage.root import Storage

REPORT_TAG_KEYS = ("kb_tag", "image_index_tag")
KB_POINTER_COLUMNS = {"tag", "physical_table"}
MODEL_POINTER_COLUMNS = {"role", "manifest"}


def _pointer_tags(store: Storage, table: str) -> set[str]:
    tags: set[str] = set()
    for name in store.table_partitions(table):
        partition = None if name == "__all__" else name
        with store.fs.open(store.uri(*store.table_parts(table, partition)), "rb") as f:
            columns = set(pq.read_schema(f).names)
        if KB_POINTER_COLUMNS <= columns:
            tags |= {t for t in store.read_table(table, partition)["tag"].to_list() if t}
        elif MODEL_POINTER_COLUMNS <= columns:
            for manifest in store.read_table(table, partition)["manifest"].to_list():
                tag = json.loads(manifest or "{}").get("kb_tag")
                if tag:
                    tags.add(str(tag))
    return tags


def referenced_tags(store: Storage) -> frozenset[str]:
    """Every KB tag a published pointer, checkpoint manifest or evaluation report names (module docstring)."""
    tags: set[str] = set()
    for table in store.list("tables"):
        tags |= _pointer_tags(store, table)
    for run in store.list("reports"):
        if store.exists("reports", run, "lineage.json"):
            lineage = json.loads(store.read_bytes("reports", run, "lineage.json"))
            tags |= {str(lineage[k]) for k in REPORT_TAG_KEYS if lineage.get(k)}
    return frozenset(tags)
