"""SLAKE knowledge-graph triples (``KG_mvqa-kg/en_*.csv``, '#'-separated) as sentences."""

from __future__ import annotations

from assets.common.records import ReadResult, Rejection, SourceError
from retrieval.chunking import TokenChunker
from storage.sources import SourceDir

from .base import KbSource, chunked


def read_slake_kg(src: SourceDir, chunker: TokenChunker, limit: int | None = None) -> ReadResult:
    """SLAKE knowledge-graph triples (``head#relation#tail``) rendered as one sentence each."""
    files = src.glob("KG_mvqa-kg/en_*.csv")
    if not files:
        raise SourceError(
            src.path("KG_mvqa-kg"), "no en_*.csv triple files", "point the source at the SLAKE folder"
        )
    out = ReadResult()
    count = 0
    for rel in files:
        name = rel.rsplit("/", 1)[-1][: -len(".csv")]
        for i, line in enumerate(src.read_text(rel).splitlines()):
            if i == 0 or not line.strip():  # header: entity#attribute#value
                continue
            if limit is not None and count >= limit:
                return out
            parts = [p.strip() for p in line.split("#")]
            if len(parts) < 3 or not all(parts[:3]):
                out.rejected.append(
                    Rejection(
                        src.path(rel),
                        str(i + 1),
                        f"expected head#relation#tail, got {len(parts)} fields",
                        line,
                    )
                )
                continue
            head, rel_name, tail = parts[0], parts[1], "#".join(parts[2:])
            text = (
                f"{head} {rel_name}: {tail}"
                if rel_name == "description"
                else f"The {rel_name} of {head} is {tail}."
            )
            if rel_name == "belong to":
                text = f"{head} belongs to {tail}."
            chunked(
                out,
                chunker,
                "slake_kg",
                f"{name}-{i + 1}",
                head,
                text,
                f"{rel}:{i + 1}",
                "CC BY-SA 4.0 (SLAKE)",
                src.path(rel),
                str(i + 1),
                line,
            )
            count += 1
    return out


SOURCE = KbSource("slake_kg", read_slake_kg, (r"KG_mvqa-kg/en_[^/]*\.csv",))
