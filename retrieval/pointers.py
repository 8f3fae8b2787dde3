"""The KB pointer: the one-row table ``kb_text_index`` and ``kb_image_index`` publish, typed.

A pointer names which LanceDB table readers open (``table``: the base name, opened for the reader's embedder;
``physical_table``: ``<base>__<embedder fingerprint>``), the version and tag they pin to, where the database
was (``uri``) and the embedder that built it (``embedder_fingerprint`` and its metadata as JSON). Consumers
build it with :meth:`KbPointer.from_row` instead of unpacking columns by hand, and
:meth:`KbPointer.check_embedder` refuses an embedder other than the one that built the table. No Dagster
import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import polars as pl

from .kb.naming import EmbedderTableMissing, identity_fingerprint

KB_POINTER_COLUMNS = (
    "db",
    "table",
    "physical_table",
    "tag",
    "version",
    "uri",
    "embedder_fingerprint",
    "embedder",
)


class EmbedderMismatch(EmbedderTableMissing):
    """A reader's embedder is not the one that built the table a KB pointer names."""


@dataclass(frozen=True)
class KbPointer:
    """One published KB index: see the module docstring. ``embedder_json`` is the ``embedder`` column as
    stored (sorted JSON of the embedder's metadata); :attr:`embedder` parses it. Columns a pointer table lacks
    (hand-written pointers of older runs) read as ``None``."""

    db: str
    table: str
    tag: str
    physical_table: str | None = None
    version: int | None = None
    uri: str | None = None
    embedder_fingerprint: str | None = None
    embedder_json: str | None = None

    @classmethod
    def from_row(cls, frame: pl.DataFrame) -> KbPointer:
        """The pointer in a one-row pointer table (as the IO manager loads it)."""
        if frame.height != 1:
            raise ValueError(f"a KB pointer table has exactly one row, not {frame.height}")
        row = frame.row(0, named=True)
        if missing := [c for c in ("db", "table", "tag") if row.get(c) is None]:
            raise ValueError(f"KB pointer without {missing}: columns {frame.columns}")
        version = row.get("version")
        return cls(
            db=row["db"],
            table=row["table"],
            tag=row["tag"],
            physical_table=row.get("physical_table"),
            version=None if version is None else int(version),
            uri=row.get("uri"),
            embedder_fingerprint=row.get("embedder_fingerprint"),
            embedder_json=row.get("embedder"),
        )

    def to_row(self) -> pl.DataFrame:
        """The one-row pointer table (columns :data:`KB_POINTER_COLUMNS`)."""
        return pl.DataFrame(
            [
                {
                    "db": self.db,
                    "table": self.table,
                    "physical_table": self.physical_table,
                    "tag": self.tag,
                    "version": self.version,
                    "uri": self.uri,
                    "embedder_fingerprint": self.embedder_fingerprint,
                    "embedder": self.embedder_json,
                }
            ]
        )

    @property
    def embedder(self) -> dict[str, Any]:
        """The embedder's metadata (identity, fingerprint, device...) recorded when the index was built."""
        return json.loads(self.embedder_json) if self.embedder_json else {}

    def check_embedder(self, identity: dict[str, Any]) -> None:
        """Refuse (:class:`EmbedderMismatch`) an embedder ``identity`` whose fingerprint is not the pointer's
        (no check when the pointer records none)."""
        if self.embedder_fingerprint is None:
            return
        got = identity_fingerprint(identity)
        if got != self.embedder_fingerprint:
            built = self.embedder.get("model_id", "?")
            raise EmbedderMismatch(
                f"{self.table} tag {self.tag!r} was built by embedder {built} (fingerprint "
                f"{self.embedder_fingerprint}); the reader's embedder {identity.get('model_id')} has "
                f"fingerprint {got}. Load the embedder that built the index, or rebuild the index with this "
                "one."
            )
