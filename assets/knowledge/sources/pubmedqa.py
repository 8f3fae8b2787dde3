"""PubMedQA abstracts (``ori_pqal.json``), untitled, chunked (``pubmedqa:<pmid>#<chunk>``)."""

from __future__ import annotations

from assets.common.records import ReadResult, Rejection, SourceError
from retrieval.chunking import TokenChunker
from storage.sources import SourceDir

from .base import KbSource, chunked, limited


def read_pubmedqa(src: SourceDir, chunker: TokenChunker, limit: int | None = None) -> ReadResult:
    """PubMedQA abstracts (contexts joined), untitled, chunked; native id = PMID."""
    rel = "ori_pqal.json"
    data = src.load_json(rel, "PubMedQA ori_pqal.json")
    if not isinstance(data, dict):
        raise SourceError(src.path(rel), "expected an object keyed by PMID", "use the released ori_pqal.json")
    out = ReadResult()
    for pmid, rec in limited(data.items(), limit):
        contexts = rec.get("CONTEXTS") if isinstance(rec, dict) else None
        if not contexts or not isinstance(contexts, list):
            out.rejected.append(Rejection(src.path(rel), pmid, "no CONTEXTS: abstract missing", rec))
            continue
        text = " ".join(str(c) for c in contexts)
        # no title: the PubMedQA question would leak the benchmark item into the KB
        chunked(
            out,
            chunker,
            "pubmedqa",
            str(pmid),
            None,
            text,
            f"{rel}#{pmid}",
            "MIT (PubMedQA)",
            src.path(rel),
            str(pmid),
            rec,
        )
    return out


SOURCE = KbSource("pubmedqa", read_pubmedqa, (r"ori_pqal\.json",))
