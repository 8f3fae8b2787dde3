"""Version tags: publication (:func:`tag_version`), rollback (:func:`restore_version`) and retention.

Old versions are pruned by :class:`Retention`: expired ``run-`` tags are deleted first (the newest
``keep_tags`` and every pinned tag survive), then untagged versions older than ``cleanup_older_than`` are
removed with Lance's cleanup, which skips tagged versions (LanceDB's own ``optimize`` refuses to run at all
once a tagged version is older than its window: STACK_NOTES).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from .connection import KBLocation

RUN_TAG_PREFIX = "run-"


@dataclass(frozen=True)
class Retention:
    """Which versions a sync keeps.

    ``keep_tags``: the newest N ``run-`` tags (by version) survive; ``None`` keeps every tag.
    ``pinned_tags``: tags that always survive (the caller passes those named by checkpoint and report
    manifests). Tags without the ``run-`` prefix are never deleted. ``cleanup_older_than``: untagged versions
    older than this are deleted (tagged versions never are); ``timedelta(0)`` keeps only the latest untagged
    one.
    """

    keep_tags: int | None = None
    pinned_tags: frozenset[str] = frozenset()
    cleanup_older_than: timedelta = timedelta(days=7)


def prune_versions(tbl, retention: Retention) -> dict[str, Any]:
    """Delete expired ``run-`` tags (all but the newest ``keep_tags`` and the pinned ones), then remove
    untagged versions older than ``cleanup_older_than`` (Lance cleanup, tagged versions skipped)."""
    tags = {name: int(info["version"]) for name, info in tbl.tags.list().items()}
    managed = sorted((n for n in tags if n.startswith(RUN_TAG_PREFIX)), key=lambda n: (-tags[n], n))
    keep = set(managed if retention.keep_tags is None else managed[: retention.keep_tags])
    expired = [n for n in managed if n not in keep and n not in retention.pinned_tags]
    for name in expired:
        tbl.tags.delete(name)
    stats = tbl.to_lance().cleanup_old_versions(
        older_than=retention.cleanup_older_than, error_if_tagged_old_versions=False
    )
    return {
        "tags_deleted": expired,
        "tags_kept": sorted(set(tags) - set(expired)),
        "pinned_missing": sorted(set(retention.pinned_tags) - set(tags)),
        "versions_removed": int(stats.old_versions),
        "bytes_removed": int(stats.bytes_removed),
    }


def tag_version(location: KBLocation, table: str, tag: str, version: int) -> str:
    """Tag ``version`` of ``table`` as ``tag`` (idempotent): the tag is what readers pin to."""
    tbl = location.connect().open_table(table)
    if tag not in tbl.tags.list():
        tbl.tags.create(tag, version)
    return tag


def restore_version(location: KBLocation, table: str, version: int | None) -> bool:
    """Make ``version`` the latest version of ``table`` again (a failed check rolls back a sync). With no
    previous version (the table was new) the table is dropped. Returns True when a version was restored."""
    conn = location.connect()
    if table not in conn.table_names():
        return False
    if version is None:
        conn.drop_table(table)
        return False
    tbl = conn.open_table(table)
    tbl.checkout(version)
    tbl.restore()
    return True
