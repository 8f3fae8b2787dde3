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


class TagConflict(ValueError):
    """A tag already names another version of the table."""


def tag_version(location: KBLocation, table: str, tag: str, version: int, *, move: bool = False) -> str:
    """Tag ``version`` of ``table`` as ``tag``: the tag is what readers pin to. Idempotent when the tag
    already names ``version``; when it names another version the call is refused (:class:`TagConflict`: a
    re-executed step would otherwise publish a pointer whose tag and version disagree), unless ``move=True``
    moves it deliberately."""
    tbl = location.connect().open_table(table)
    existing = tbl.tags.list().get(tag)
    if existing is None:
        tbl.tags.create(tag, version)
    elif int(existing["version"]) != int(version):
        if not move:
            raise TagConflict(
                f"{location.uri} table {table!r}: tag {tag!r} already names version {existing['version']}, "
                f"not {version}; readers pinned to it would read another version than the pointer says. "
                "Use a new tag (each run tags its own), or move it deliberately (move=True)"
            )
        tbl.tags.update(tag, version)
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
