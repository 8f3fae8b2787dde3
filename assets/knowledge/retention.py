"""Which LanceDB tags something published still references: what tag retention must never expire.

A KB tag is referenced by the published KB pointers (``kb_text_index``, ``kb_image_index``: column ``tag``),
by every published model pointer (checkpoints, the promoted checkpoint: the ``kb_tag`` of the manifest it
was trained or evaluated with) and by every evaluation report (``reports/<run>/lineage.json``: ``kb_tag``,
``image_index_tag``). :func:`referenced_tags` collects them all from the storage root; the index assets pass
them to :class:`retrieval.kb.tags.Retention` as ``pinned_tags``, next to the newest ``keep_tags``.

Pointer tables are recognized by their Parquet schema (read from the footer only, never the data of a large
table), and a pointer is read only as its gate record commits it (:meth:`Storage.read_published_table`). A
pointer or report that cannot be read fails the retention (nothing is expired): a tag it might reference could
otherwise be deleted. A pointer its gate record does not name (a publication interrupted before its commit, a
file changed after publication) raises :class:`UnverifiedReferences` naming it; :func:`retain` then keeps
every tag and version (fail closed) and says why, and the index's publication stands.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pyarrow.parquet as pq

from retrieval.kb.tags import Retention, prune_versions
from storage.errors import UncommittedTable
from storage.root import Storage


class UnverifiedReferences(UncommittedTable):
    """Published pointer tables that do not verify against their gate records: which KB tags the committed
    versions reference is unknown, so no tag may be expired. ``problems``: table label -> why."""

    def __init__(self, problems: dict[str, str]):
        self.problems = dict(problems)
        super().__init__(
            f"{len(problems)} published pointer table(s) do not verify against their gate records, so the KB "
            f"tags they reference are unknown: {'; '.join(problems.values())}"
        )


REPORT_TAG_KEYS = ("kb_tag", "image_index_tag")
KB_POINTER_COLUMNS = {"tag", "physical_table"}
MODEL_POINTER_COLUMNS = {"role", "manifest"}


def _pointer_tags(store: Storage, table: str, problems: dict[str, str]) -> set[str]:
    """The tags the pointer partitions of ``table`` reference; a partition that does not verify against its
    gate record is added to ``problems`` instead."""
    tags: set[str] = set()
    for name in store.table_partitions(table):
        partition = None if name == "__all__" else name
        with store.fs.open(store.uri(*store.table_parts(table, partition)), "rb") as f:
            columns = set(pq.read_schema(f).names)
        if not (KB_POINTER_COLUMNS <= columns or MODEL_POINTER_COLUMNS <= columns):
            continue
        try:
            frame = store.read_published_table(table, partition)
        except UncommittedTable as e:
            problems[f"{table}[{partition}]" if partition else table] = str(e)
            continue
        if KB_POINTER_COLUMNS <= columns:
            tags |= {t for t in frame["tag"].to_list() if t}
        else:
            for manifest in frame["manifest"].to_list():
                tag = json.loads(manifest or "{}").get("kb_tag")
                if tag:
                    tags.add(str(tag))
    return tags


def referenced_tags(store: Storage) -> frozenset[str]:
    """Every KB tag a published pointer, checkpoint manifest or evaluation report names (module docstring).
    Raises :class:`UnverifiedReferences` when a pointer table does not verify against its gate record."""
    tags: set[str] = set()
    problems: dict[str, str] = {}
    for table in store.list("tables"):
        tags |= _pointer_tags(store, table, problems)
    if problems:
        raise UnverifiedReferences(problems)
    for run in store.list("reports"):
        if store.exists("reports", run, "lineage.json"):
            lineage = json.loads(store.read_bytes("reports", run, "lineage.json"))
            tags |= {str(lineage[k]) for k in REPORT_TAG_KEYS if lineage.get(k)}
    return frozenset(tags)


def retain(
    store: Storage, tbl, *, keep_tags: int | None, cleanup_older_than: timedelta, pinned: frozenset[str]
) -> dict[str, Any]:
    """Tag retention of the LanceDB table ``tbl``: the newest ``keep_tags`` run- tags, ``pinned`` and every
    tag something published references survive (:func:`~retrieval.kb.tags.prune_versions`). When a pointer
    does not verify (:class:`UnverifiedReferences`) nothing is deleted, no tag and no version: the result says
    ``skipped`` (why, and which tables) and lists every tag as kept."""
    try:
        referenced = referenced_tags(store)
    except UnverifiedReferences as e:
        return {
            "skipped": f"tag retention skipped, every tag and version kept: {e}. Materialize those tables "
            "again (or restore their committed files); the next refresh applies retention",
            "unverified_tables": sorted(e.problems),
            "tags_deleted": [],
            "tags_kept": sorted(tbl.tags.list()),
            "pinned_missing": [],
            "versions_removed": 0,
            "bytes_removed": 0,
        }
    retention = Retention(
        keep_tags=keep_tags, pinned_tags=referenced | pinned, cleanup_older_than=cleanup_older_than
    )
    return prune_versions(tbl, retention)
