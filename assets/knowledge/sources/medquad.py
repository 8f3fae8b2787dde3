"""MedQuAD answers (``medquad_qa.jsonl[.gz]``); native id ``<release id>-<sha256(subset, release id, url,
question)[:12]>`` because the release's ``id`` repeats across subsets and questions."""

from __future__ import annotations

import hashlib
from typing import Any

from assets.common.records import ReadResult, Rejection
from retrieval.chunking import TokenChunker
from storage.sources import SourceDir

from .base import KbSource, chunked, json_objects, limited


def medquad_native_id(rec: dict[str, Any]) -> str:
    """``<release id>-<12 hex>``: the release id (readable) plus a hash of subset, id, url and question.

    The release's ``id`` restarts per subset and is shared by different questions (2,491 ids by 6,765
    records), and url + question repeats for the sub-answers of one page (855 records); the four together are
    unique in the release.
    """
    key = "\n".join(str(rec.get(k) or "") for k in ("subset", "id", "url", "question"))
    return f"{str(rec.get('id') or '').strip()}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def read_medquad(src: SourceDir, chunker: TokenChunker, limit: int | None = None) -> ReadResult:
    """MedQuAD answers chunked; the title is the question (or the focus when the question is missing).

    A native id that repeats (the same subset, id, url and question) is kept once when the answer is the same
    (the repeat is quarantined as an exact duplicate) and quarantined as a row problem when it differs.
    """
    rel = "medquad_qa.jsonl.gz" if src.exists("medquad_qa.jsonl.gz") else "medquad_qa.jsonl"
    out = ReadResult()
    path = src.path(rel)
    seen: dict[str, tuple[int, str]] = {}
    for line_no, rec, raw, problem in limited(json_objects(src, rel, "MedQuAD file"), limit):
        if problem:
            out.rejected.append(Rejection(path, str(line_no), problem, raw))
            continue
        answer = str(rec.get("answer") or "").strip()
        if not str(rec.get("id") or "").strip() or not answer:
            out.rejected.append(
                Rejection(path, str(line_no), "missing id or empty answer: nothing to index", rec)
            )
            continue
        native = medquad_native_id(rec)
        if native in seen:
            first_line, first_answer = seen[native]
            reason = (
                "exact duplicate: same record as line"
                if first_answer == answer
                else "native id repeated with different content: same subset, id, url and question as line"
            )
            out.rejected.append(
                Rejection(path, str(line_no), f"{reason} {first_line}", rec, f"medquad:{native}")
            )
            continue
        seen[native] = (line_no, answer)
        title = str(rec.get("question") or rec.get("focus") or "").strip() or None
        chunked(
            out,
            chunker,
            "medquad",
            native,
            title,
            answer,
            f"{rel}:{line_no}",
            "CC BY 4.0 (MedQuAD)",
            path,
            str(line_no),
            rec,
        )
    return out


SOURCE = KbSource("medquad", read_medquad, (r"medquad_qa\.jsonl(\.gz)?",))
