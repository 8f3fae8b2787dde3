"""MedMCQA explanations (``dev.json``/``train.json`` JSON lines, field ``exp``)."""

from __future__ import annotations

from assets.common.records import ReadResult, Rejection, SourceError
from retrieval.chunking import TokenChunker
from storage.sources import SourceDir

from .base import KbSource, chunked, json_objects


def read_medmcqa_exp(src: SourceDir, chunker: TokenChunker, limit: int | None = None) -> ReadResult:
    """MedMCQA explanations (``exp``), untitled (the question is a benchmark item). Rows whose explanation is
    missing or trivial (under 5 words, e.g. "Ans. a") are quarantined with that reason."""
    out = ReadResult()
    files = [f for f in ("train.json", "dev.json") if src.exists(f)]
    if not files:
        raise SourceError(
            src.root, "no MedMCQA train.json or dev.json", "point the source at the MedMCQA folder"
        )
    count = 0
    for rel in files:
        for line_no, rec, raw, problem in json_objects(src, rel, "MedMCQA file"):
            if limit is not None and count >= limit:
                return out
            if problem:
                out.rejected.append(Rejection(src.path(rel), str(line_no), problem, raw))
                continue
            exp = str(rec.get("exp") or "").strip()
            if not str(rec.get("id") or "").strip():
                out.rejected.append(Rejection(src.path(rel), str(line_no), "missing id", rec))
                continue
            if len(exp.split()) < 5:
                out.rejected.append(
                    Rejection(
                        src.path(rel),
                        str(line_no),
                        "no explanation: exp missing or under 5 words, no knowledge to index",
                        rec,
                    )
                )
                continue
            chunked(
                out,
                chunker,
                "medmcqa_exp",
                str(rec["id"]),
                None,
                exp,
                f"{rel}:{line_no}",
                "MIT (MedMCQA)",
                src.path(rel),
                str(line_no),
                rec,
            )
            count += 1
    return out


SOURCE = KbSource("medmcqa_exp", read_medmcqa_exp, (r"train\.json", r"dev\.json"))
