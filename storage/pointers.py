"""The model pointer: the one-row table ``base_model`` and the stage checkpoints publish, typed.

What downstream stages and evaluation load: the model's role (base / stage1 / stage2), what it was made from
(``model_ref``), its loadable ``path`` (storage URI of the folder, or a hub id / local path), the weights hash
and the lineage manifest (JSON). Plain values; no Dagster import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import polars as pl

MODEL_SCHEMA = {
    "role": pl.Utf8,  # base / stage1 / stage2
    "model_ref": pl.Utf8,  # what it was made from (hub id, tiny builder, parent checkpoint)
    "path": pl.Utf8,  # loadable location: storage URI of the folder, or a hub id / local path
    "weights_sha256": pl.Utf8,
    "manifest": pl.Utf8,  # the lineage manifest (JSON)
}


@dataclass(frozen=True)
class ModelPointer:
    """One published model. ``manifest_json`` is the ``manifest`` column as stored; :attr:`manifest` parses
    it."""

    role: str
    model_ref: str
    path: str
    weights_sha256: str | None
    manifest_json: str

    @classmethod
    def of(
        cls, role: str, model_ref: str, path: str, weights_sha256: str | None, manifest: dict[str, Any]
    ) -> ModelPointer:
        """A pointer with ``manifest`` serialized the way it is published (sorted JSON)."""
        return cls(role, model_ref, path, weights_sha256, json.dumps(manifest, sort_keys=True, default=str))

    @classmethod
    def from_row(cls, frame: pl.DataFrame) -> ModelPointer:
        """The pointer in a one-row model table (as the IO manager loads it)."""
        if frame.height != 1:
            raise ValueError(f"a model pointer table has exactly one row, not {frame.height}")
        row = frame.row(0, named=True)
        return cls(row["role"], row["model_ref"], row["path"], row["weights_sha256"], row["manifest"])

    def to_row(self) -> pl.DataFrame:
        """The one-row table of :data:`MODEL_SCHEMA`."""
        return pl.DataFrame(
            [
                {
                    "role": self.role,
                    "model_ref": self.model_ref,
                    "path": self.path,
                    "weights_sha256": self.weights_sha256,
                    "manifest": self.manifest_json,
                }
            ],
            schema=MODEL_SCHEMA,
        )

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest_json)
