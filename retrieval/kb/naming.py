"""One table per embedder: a KB table (``kb_text``, ``kb_image``) is stored as ``<base>__<embedder
fingerprint>``; its schema metadata (``medrwr.embedder``) records the embedder's identity (model id, weights
sha256, dimension, max sequence length or image size, dtype). A different embedder therefore builds a new
table and never mixes its vectors with another's; :func:`open_embedder_table` opens the table matching an
embedder or says which exist.
"""

from __future__ import annotations

import json
from typing import Any

EMBEDDER_KEY = b"medrwr.embedder"


class EmbedderTableMissing(LookupError):
    """No table of a KB was built with the asked-for embedder."""


def embedder_table(base: str, fingerprint: str) -> str:
    """Physical table name of KB ``base`` built by the embedder with ``fingerprint``."""
    return f"{base}__{fingerprint}"


def identity_fingerprint(identity: dict[str, Any]) -> str:
    from ..embedders import fingerprint

    return fingerprint(identity)


def table_embedder(tbl) -> dict[str, Any] | None:
    """The embedder identity recorded in a table's schema metadata (``None`` if absent)."""
    raw = (tbl.schema.metadata or {}).get(EMBEDDER_KEY)
    return json.loads(raw) if raw else None


def embedder_tables(conn, base: str) -> dict[str, dict[str, Any] | None]:
    """``{physical name: embedder identity}`` of every table built for KB ``base``."""
    return {
        name: table_embedder(conn.open_table(name))
        for name in conn.table_names()
        if name.startswith(f"{base}__")
    }


def open_embedder_table(conn, base: str, identity: dict[str, Any]):
    """The table of KB ``base`` built with the embedder ``identity``; :class:`EmbedderTableMissing` naming the
    tables that do exist (and their embedders) when there is none."""
    name = embedder_table(base, identity_fingerprint(identity))
    if name not in conn.table_names():
        built = embedder_tables(conn, base)
        listing = "; ".join(f"{n}: {_describe(i)}" for n, i in sorted(built.items())) or "none"
        raise EmbedderTableMissing(
            f"no {base!r} table for embedder {_describe(identity)} (would be {name!r}). "
            f"Tables built: {listing}. Build the KB with this embedder (materialize the index asset) "
            f"or open it "
            f"with the embedder that built one of those tables."
        )
    tbl = conn.open_table(name)
    recorded = table_embedder(tbl)
    if recorded != identity:
        raise EmbedderTableMissing(
            f"table {name!r} records embedder {_describe(recorded)}, not {_describe(identity)}"
        )
    return tbl


def _describe(identity: dict[str, Any] | None) -> str:
    if not identity:
        return "(no embedder recorded)"
    keys = ("model_id", "dim", "max_seq_length", "image_size", "dtype", "weights_sha256")
    return "{" + ", ".join(f"{k}={identity[k]}" for k in keys if identity.get(k) is not None) + "}"
