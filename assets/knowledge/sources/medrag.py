"""A MedRAG-style corpus, the reader of every source name not in the registry: ``*.jsonl[.gz]`` with ``id``,
``title``, ``content`` or ``*.parquet``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from assets.common.records import ReadResult, Rejection, SourceError
from retrieval.chunking import TokenChunker
from storage.sources import SourceDir

from .base import chunked, json_objects

# the files a MedRAG-style corpus is read from (regular expressions on paths relative to its folder)
CORPUS_PATTERNS: tuple[str, ...] = (r"(.*/)?[^/]*\.jsonl", r"(.*/)?[^/]*\.jsonl\.gz", r"(.*/)?[^/]*\.parquet")


def read_medrag(src: SourceDir, source: str, chunker: TokenChunker, limit: int | None = None) -> ReadResult:
    """A MedRAG-style corpus: ``**/*.jsonl[.gz]`` records or ``**/*.parquet`` rows with ``id``, ``title``,
    ``content`` (``contents``/``text`` accepted), chunked; the native id is the record's ``id``."""
    files = src.glob("**/*.jsonl") + src.glob("**/*.jsonl.gz") + src.glob("**/*.parquet")
    if not files:
        raise SourceError(
            src.root,
            "no *.jsonl, *.jsonl.gz or *.parquet files",
            f"put the corpus for source {source!r} there or set MEDRWR_SOURCE_{source.upper()}",
        )
    out = ReadResult()
    count = 0

    def records(rel: str) -> Iterable[tuple[str, dict[str, Any] | None, Any, str | None]]:
        if rel.endswith(".parquet"):
            for i, rec, problem in src.iter_parquet(rel, "corpus file"):
                yield str(i), (None if problem else rec), rec, problem
        else:
            for line_no, rec, raw, problem in json_objects(src, rel, "corpus file"):
                yield str(line_no), rec, raw, problem

    for rel in files:
        for row, rec, raw, problem in records(rel):
            if limit is not None and count >= limit:
                return out
            if problem:
                out.rejected.append(Rejection(src.path(rel), row, problem, raw))
                continue
            text = rec.get("content") or rec.get("contents") or rec.get("text")
            rid = rec.get("id")
            if rid is None or not str(text or "").strip():
                out.rejected.append(Rejection(src.path(rel), row, "missing id or content", rec))
                continue
            title = str(rec["title"]) if rec.get("title") else None
            chunked(
                out,
                chunker,
                source,
                str(rid),
                title,
                str(text),
                f"{rel}:{row}",
                str(rec.get("license") or "see corpus"),
                src.path(rel),
                row,
                rec,
            )
            count += 1
    return out
