"""What every reader returns: good rows plus rejected rows with reasons; and the whole-file error.

Row-level problems never stop a run and never drop data silently: the row goes to the quarantine table
with the file, the row locator, a reason and the raw record. Whole-file problems (a file that is missing
or cannot be parsed at all) raise :class:`SourceError` with the file, what is wrong and what to do.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl

from storage.sources import SourceError  # noqa: F401  (re-exported: readers raise it)


@dataclass(frozen=True)
class Rejection:
    """One quarantined source record."""

    source_file: str
    row: str  # row locator inside the file: index, line number, qid
    reason: str
    raw: Any = None
    item_id: str | None = None


QUARANTINE_SCHEMA = {
    "table": pl.Utf8,
    "partition": pl.Utf8,
    "source_file": pl.Utf8,
    "row": pl.Utf8,
    "item_id": pl.Utf8,
    "reason": pl.Utf8,
    "raw": pl.Utf8,
    "quarantined_at": pl.Utf8,
}


def _raw_json(raw: Any) -> str:
    try:
        return json.dumps(raw, ensure_ascii=False, default=str)[:20000]
    except (TypeError, ValueError):
        return repr(raw)[:20000]


def quarantine_frame(rejections: list[Rejection], table: str, partition: str | None) -> pl.DataFrame:
    """Rejections as a quarantine table (possibly empty, always with the same schema)."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    rows = [
        {
            "table": table,
            "partition": partition,
            "source_file": r.source_file,
            "row": r.row,
            "item_id": r.item_id,
            "reason": r.reason,
            "raw": _raw_json(r.raw),
            "quarantined_at": now,
        }
        for r in rejections
    ]
    return pl.DataFrame(rows, schema=QUARANTINE_SCHEMA)


@dataclass
class ReadResult:
    """Rows that passed a reader plus the rows it rejected.

    With a ``sink`` (e.g. :class:`assets.ingest.readers.common.FrameBuilder`), :meth:`add` hands the rows on
    every ``batch_rows`` rows and :meth:`flush` hands the rest, so a reader never holds more than one batch
    of row dicts (Python dicts cost about 20 times the bytes of the source: 44 MB of JSON lines peaked at
    1.41 GB held whole); ``rows`` then holds only the rows not yet handed on.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    sink: Callable[[list[dict[str, Any]]], None] | None = None
    batch_rows: int = 10_000

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self.sink is not None and len(self.rows) >= self.batch_rows:
            self.flush()

    def flush(self) -> None:
        if self.sink is not None and self.rows:
            batch, self.rows = self.rows, []
            self.sink(batch)

    def extend(self, other: ReadResult) -> None:
        self.rows.extend(other.rows)
        self.rejected.extend(other.rejected)


def reason_counts(rejections: list[Rejection]) -> dict[str, int]:
    """Rejections counted by the reason's first clause (before ':'), for materialization metadata."""
    counts: dict[str, int] = {}
    for r in rejections:
        key = r.reason.split(":", 1)[0]
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))
