"""What every KB source reader shares: the passage schema and row, stable ids and content hashes, chunking
into passages (or a quarantined row), JSON-line records, and :class:`KbSource`, a registry entry."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import polars as pl

from assets.common.records import ReadResult, Rejection
from retrieval.chunking import ChunkError, TokenChunker
from storage.sources import SourceDir

PASSAGE_SCHEMA = {
    "id": pl.Utf8,
    "source": pl.Utf8,
    "native_id": pl.Utf8,
    "chunk": pl.Int32,
    "title": pl.Utf8,
    "text": pl.Utf8,
    "content_hash": pl.Utf8,
    "source_ref": pl.Utf8,
    "license": pl.Utf8,
}


@dataclass(frozen=True)
class KbSource:
    """A registered KB source: its partition key, its reader (``read(src, chunker, limit)``: passages of the
    source folder, records beyond ``limit`` unread) and the files it reads (regular expressions on paths
    relative to the source folder; the source watcher fingerprints exactly those)."""

    name: str
    read: Callable[[SourceDir, TokenChunker, int | None], ReadResult]
    patterns: tuple[str, ...]


# ---- ids and rows ----------------------------------------------------------------------------------
def normalize_text(text: str) -> str:
    """Lower-case, NFKC, punctuation stripped, whitespace collapsed: the form duplicates are compared in."""
    text = unicodedata.normalize("NFKC", text or "").lower()
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def content_hash(title: str | None, text: str) -> str:
    """sha256 of title and text: changes exactly when what gets embedded changes."""
    return hashlib.sha256(f"{title or ''}\n{text}".encode()).hexdigest()


def passage(
    source: str, native_id: str, chunk: int, title: str | None, text: str, source_ref: str, license: str
) -> dict[str, Any]:
    """One passage row with its stable id ``<source>:<native id>#<chunk>``."""
    text = " ".join(text.split())
    return {
        "id": f"{source}:{native_id}#{chunk}",
        "source": source,
        "native_id": native_id,
        "chunk": chunk,
        "title": title,
        "text": text,
        "content_hash": content_hash(title, text),
        "source_ref": source_ref,
        "license": license,
    }


def passages_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Rows as a frame with :data:`PASSAGE_SCHEMA` (possibly empty)."""
    return pl.DataFrame(rows, schema=PASSAGE_SCHEMA)


def chunked(
    out: ReadResult,
    chunker: TokenChunker,
    source: str,
    native_id: str,
    title: str | None,
    text: str,
    source_ref: str,
    license: str,
    path: str,
    row: str,
    raw: Any,
) -> None:
    """Append the passages of one record, or quarantine it when it cannot be chunked."""
    try:
        chunks = chunker.chunk(text, title)
    except ChunkError as e:
        out.rejected.append(Rejection(path, row, f"cannot chunk to fit the embedder: {e}", raw))
        return
    if not chunks:
        out.rejected.append(Rejection(path, row, "no text left after whitespace normalization", raw))
        return
    for c, chunk in enumerate(chunks):
        out.rows.append(passage(source, native_id, c, title, chunk, source_ref, license))


def json_objects(
    src: SourceDir, rel: str, what: str
) -> Iterator[tuple[int, dict[str, Any] | None, Any, str | None]]:
    """``(line_no, record, raw, problem)`` per JSON line: malformed lines and non-objects are row problems."""
    for line_no, rec, err in src.iter_jsonl(rel, what):
        if err:
            yield line_no, None, rec, err
        elif not isinstance(rec, dict):
            yield line_no, None, rec, f"record is not a JSON object (got {type(rec).__name__})"
        else:
            yield line_no, rec, rec, None


def limited(items: Iterable[Any], limit: int | None) -> Iterable[Any]:
    for i, item in enumerate(items):
        if limit is not None and i >= limit:
            return
        yield item
