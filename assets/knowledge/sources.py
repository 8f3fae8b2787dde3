"""Knowledge-base passages from the released corpora, chunked to fit the embedder, with stable ids and
duplicates removed.

Every reader returns a :class:`ReadResult` whose rows follow :data:`PASSAGE_SCHEMA`; every source record
either becomes passages or is quarantined with a reason (a non-object JSON line, a missing field, a native id
repeated with different content, a duplicate). Ids are stable across runs: ``<source>:<native id>#<chunk>``,
so an unchanged record keeps its id (and its content hash) and the index only re-embeds what changed.
Chunks are cut by the embedder's tokenizer (:class:`retrieval.chunking.TokenChunker`): what gets embedded,
``"<title>. <chunk>"``, never exceeds the embedder's max sequence length. Plain Python: no Dagster import.

Sources (one partition key each):

- ``medquad``     MedQuAD answers (``medquad_qa.jsonl.gz``); native id ``<release id>-<sha256(subset, release
                  id, url, question)[:12]>`` because the release's ``id`` repeats across subsets and questions
- ``pubmedqa``    PubMedQA abstracts (``ori_pqal.json``), untitled, chunked (``pubmedqa:<pmid>#<chunk>``)
- ``slake_kg``    SLAKE knowledge-graph triples (``KG_mvqa-kg/en_*.csv``, '#'-separated) as sentences
- ``medmcqa_exp`` MedMCQA explanations (``dev.json``/``train.json`` JSON lines, field ``exp``)
- anything else   a MedRAG-style corpus: ``*.jsonl[.gz]`` with ``id``, ``title``, ``content`` or ``*.parquet``
"""

from __future__ import annotations

import hashlib
import io
import re
import unicodedata
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import polars as pl

from assets.common.records import ReadResult, Rejection, SourceError
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

NEAR_DUPLICATE_JACCARD = 0.9


# ---- ids and rows ----------------------------------------------------------------------------------
def normalize_text(text: str) -> str:
    """Lower-case, NFKC, punctuation stripped, whitespace collapsed: the form duplicates are compared in."""
    text = unicodedata.normalize("NFKC", text or "").lower()
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def content_hash(title: str | None, text: str) -> str:
    """sha256 of title and text: changes exactly when what gets embedded changes."""
    return hashlib.sha256(f"{title or ''}\n{text}".encode()).hexdigest()


def passage(source: str, native_id: str, chunk: int, title: str | None, text: str, source_ref: str,
            license: str) -> dict[str, Any]:
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


def medquad_native_id(rec: dict[str, Any]) -> str:
    """``<release id>-<12 hex>``: the release id (readable) plus a hash of subset, id, url and question.

    The release's ``id`` restarts per subset and is shared by different questions (2,491 ids by 6,765 records),
    and url + question repeats for the sub-answers of one page (855 records); the four together are unique
    in the release.
    """
    key = "\n".join(str(rec.get(k) or "") for k in ("subset", "id", "url", "question"))
    return f"{str(rec.get('id') or '').strip()}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _chunked(out: ReadResult, chunker: TokenChunker, source: str, native_id: str, title: str | None, text: str,
             source_ref: str, license: str, path: str, row: str, raw: Any) -> None:
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


def _objects(src: SourceDir, rel: str, what: str) -> Iterator[tuple[int, dict[str, Any] | None, Any, str | None]]:
    """``(line_no, record, raw, problem)`` per JSON line: malformed lines and non-objects are row problems."""
    for line_no, rec, err in src.iter_jsonl(rel, what):
        if err:
            yield line_no, None, rec, err
        elif not isinstance(rec, dict):
            yield line_no, None, rec, f"record is not a JSON object (got {type(rec).__name__})"
        else:
            yield line_no, rec, rec, None


# ---- readers ---------------------------------------------------------------------------------------
def _limited(items: Iterable[Any], limit: int | None) -> Iterable[Any]:
    for i, item in enumerate(items):
        if limit is not None and i >= limit:
            return
        yield item


def read_medquad(src: SourceDir, chunker: TokenChunker, limit: int | None = None) -> ReadResult:
    """MedQuAD answers chunked; the title is the question (or the focus when the question is missing).

    A native id that repeats (the same subset, id, url and question) is kept once when the answer is the same
    (the repeat is quarantined as an exact duplicate) and quarantined as a row problem when it differs.
    """
    rel = "medquad_qa.jsonl.gz" if src.exists("medquad_qa.jsonl.gz") else "medquad_qa.jsonl"
    out = ReadResult()
    path = src.path(rel)
    seen: dict[str, tuple[int, str]] = {}
    for line_no, rec, raw, problem in _limited(_objects(src, rel, "MedQuAD file"), limit):
        if problem:
            out.rejected.append(Rejection(path, str(line_no), problem, raw))
            continue
        answer = str(rec.get("answer") or "").strip()
        if not str(rec.get("id") or "").strip() or not answer:
            out.rejected.append(Rejection(path, str(line_no), "missing id or empty answer: nothing to index", rec))
            continue
        native = medquad_native_id(rec)
        if native in seen:
            first_line, first_answer = seen[native]
            reason = ("exact duplicate: same record as line" if first_answer == answer else
                      "native id repeated with different content: same subset, id, url and question as line")
            out.rejected.append(Rejection(path, str(line_no), f"{reason} {first_line}", rec, f"medquad:{native}"))
            continue
        seen[native] = (line_no, answer)
        title = str(rec.get("question") or rec.get("focus") or "").strip() or None
        _chunked(out, chunker, "medquad", native, title, answer, f"{rel}:{line_no}", "CC BY 4.0 (MedQuAD)",
                 path, str(line_no), rec)
    return out


def read_pubmedqa(src: SourceDir, chunker: TokenChunker, limit: int | None = None) -> ReadResult:
    """PubMedQA abstracts (contexts joined), untitled, chunked; native id = PMID."""
    rel = "ori_pqal.json"
    data = src.load_json(rel, "PubMedQA ori_pqal.json")
    if not isinstance(data, dict):
        raise SourceError(src.path(rel), "expected an object keyed by PMID", "use the released ori_pqal.json")
    out = ReadResult()
    for pmid, rec in _limited(data.items(), limit):
        contexts = rec.get("CONTEXTS") if isinstance(rec, dict) else None
        if not contexts or not isinstance(contexts, list):
            out.rejected.append(Rejection(src.path(rel), pmid, "no CONTEXTS: abstract missing", rec))
            continue
        text = " ".join(str(c) for c in contexts)
        # no title: the PubMedQA question would leak the benchmark item into the KB
        _chunked(out, chunker, "pubmedqa", str(pmid), None, text, f"{rel}#{pmid}", "MIT (PubMedQA)",
                 src.path(rel), str(pmid), rec)
    return out


def read_slake_kg(src: SourceDir, chunker: TokenChunker, limit: int | None = None) -> ReadResult:
    """SLAKE knowledge-graph triples (``head#relation#tail``) rendered as one sentence each."""
    files = src.glob("KG_mvqa-kg/en_*.csv")
    if not files:
        raise SourceError(src.path("KG_mvqa-kg"), "no en_*.csv triple files", "point the source at the SLAKE folder")
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
                out.rejected.append(Rejection(src.path(rel), str(i + 1), f"expected head#relation#tail, got {len(parts)} fields", line))
                continue
            head, rel_name, tail = parts[0], parts[1], "#".join(parts[2:])
            text = f"{head} {rel_name}: {tail}" if rel_name == "description" else f"The {rel_name} of {head} is {tail}."
            if rel_name == "belong to":
                text = f"{head} belongs to {tail}."
            _chunked(out, chunker, "slake_kg", f"{name}-{i + 1}", head, text, f"{rel}:{i + 1}", "CC BY-SA 4.0 (SLAKE)",
                     src.path(rel), str(i + 1), line)
            count += 1
    return out


def read_medmcqa_exp(src: SourceDir, chunker: TokenChunker, limit: int | None = None) -> ReadResult:
    """MedMCQA explanations (``exp``), untitled (the question is a benchmark item). Rows whose explanation is
    missing or trivial (under 5 words, e.g. "Ans. a") are quarantined with that reason."""
    out = ReadResult()
    files = [f for f in ("train.json", "dev.json") if src.exists(f)]
    if not files:
        raise SourceError(src.root, "no MedMCQA train.json or dev.json", "point the source at the MedMCQA folder")
    count = 0
    for rel in files:
        for line_no, rec, raw, problem in _objects(src, rel, "MedMCQA file"):
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
                out.rejected.append(Rejection(src.path(rel), str(line_no),
                                              "no explanation: exp missing or under 5 words, no knowledge to index", rec))
                continue
            _chunked(out, chunker, "medmcqa_exp", str(rec["id"]), None, exp, f"{rel}:{line_no}", "MIT (MedMCQA)",
                     src.path(rel), str(line_no), rec)
            count += 1
    return out


def read_medrag(src: SourceDir, source: str, chunker: TokenChunker, limit: int | None = None) -> ReadResult:
    """A MedRAG-style corpus: ``**/*.jsonl[.gz]`` records or ``**/*.parquet`` rows with ``id``, ``title``,
    ``content`` (``contents``/``text`` accepted), chunked; the native id is the record's ``id``."""
    files = src.glob("**/*.jsonl") + src.glob("**/*.jsonl.gz") + src.glob("**/*.parquet")
    if not files:
        raise SourceError(src.root, "no *.jsonl, *.jsonl.gz or *.parquet files",
                          f"put the corpus for source {source!r} there or set MEDRWR_SOURCE_{source.upper()}")
    out = ReadResult()
    count = 0

    def records(rel: str) -> Iterable[tuple[str, dict[str, Any] | None, Any, str | None]]:
        if rel.endswith(".parquet"):
            for i, rec in enumerate(pl.read_parquet(io.BytesIO(src.read_bytes(rel))).iter_rows(named=True)):
                yield str(i), rec, rec, None
        else:
            for line_no, rec, raw, problem in _objects(src, rel, "corpus file"):
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
            _chunked(out, chunker, source, str(rid), title, str(text), f"{rel}:{row}",
                     str(rec.get("license") or "see corpus"), src.path(rel), row, rec)
            count += 1
    return out


KB_READERS: dict[str, Callable[[SourceDir, TokenChunker, int | None], ReadResult]] = {
    "medquad": read_medquad,
    "pubmedqa": read_pubmedqa,
    "slake_kg": read_slake_kg,
    "medmcqa_exp": read_medmcqa_exp,
}


def read_kb_source(source: str, src: SourceDir, chunker: TokenChunker,
                   limit: int | None = None) -> tuple[pl.DataFrame, ReadResult]:
    """Passages of ``source`` (a known corpus or a MedRAG-style folder), chunked by ``chunker``, deduplicated.

    ``limit`` caps the number of source records read (smoke runs). Duplicates and rows with problems are in
    the result's rejections, each with a reason (duplicates name the passage they duplicate).
    """
    reader = KB_READERS.get(source)
    result = reader(src, chunker, limit) if reader else read_medrag(src, source, chunker, limit)
    kept, dups = deduplicate(result.rows)
    result.rows = kept
    result.rejected.extend(dups)
    return passages_frame(kept), result


# ---- duplicates ------------------------------------------------------------------------------------
SHINGLE_WORDS = 5


def shingles(words: list[str], n: int = SHINGLE_WORDS) -> np.ndarray:
    """Sorted unique 32-bit hashes of the ``n``-word shingles of ``words`` (one shingle when shorter).

    Each word is hashed once (crc32); a shingle's hash is a polynomial of its words' hashes, vectorized."""
    wh = np.fromiter((zlib.crc32(w.encode()) for w in words), dtype=np.uint64, count=len(words))
    if wh.size == 0:
        return wh.astype(np.uint32)
    span = min(n, wh.size)
    acc = np.zeros(wh.size - span + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):  # wrapping uint64 arithmetic is the hash
        for j in range(span):
            acc = acc * np.uint64(1_000_003) + wh[j : j + acc.size]
    return np.unique((acc ^ (acc >> np.uint64(32))).astype(np.uint32))


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two sorted unique arrays."""
    inter = np.intersect1d(a, b, assume_unique=True).size
    return inter / max(1, a.size + b.size - inter)


class NearDuplicateIndex:
    """Near-duplicate lookup: datasketch MinHash-LSH at Jaccard ``threshold`` over 5-word shingles, candidates
    confirmed on the exact shingle sets (so no pair under the threshold is ever dropped). The LSH weights favour
    recall, since false candidates cost only a set comparison: at 0.9 and 128 permutations datasketch picks
    9 bands x 14 rows, which makes a pair a candidate with probability 0.90 at Jaccard 0.9 and 0.998 at 0.95
    (its default weights pick 5 x 25: 0.31 and 0.80). Insert and query are O(bands) per row: the cost of a
    corpus is linear in its size, plus the confirmed candidates."""

    def __init__(self, threshold: float = NEAR_DUPLICATE_JACCARD, num_perm: int = 128, seed: int = 7):
        from datasketch import MinHash, MinHashLSH

        self.threshold = threshold
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.05, 0.95))
        # shingles are already 32-bit hashes (crc32): the MinHash's hash function is the identity
        self._template = MinHash(num_perm=num_perm, seed=seed, hashfunc=int)
        self._sets: dict[str, np.ndarray] = {}

    def signature(self, sh: np.ndarray):
        m = self._template.copy()
        m.update_batch(sh.tolist())
        return m

    def find(self, sh: np.ndarray, signature) -> str | None:
        """The key of an inserted row whose shingle Jaccard with ``sh`` is >= threshold, if any."""
        for key in sorted(self.lsh.query(signature)):
            if jaccard(sh, self._sets[key]) >= self.threshold:
                return key
        return None

    def insert(self, key: str, sh: np.ndarray, signature) -> None:
        self.lsh.insert(key, signature)
        self._sets[key] = sh


def deduplicate(rows: list[dict[str, Any]], threshold: float = NEAR_DUPLICATE_JACCARD,
                min_words: int = 10) -> tuple[list[dict[str, Any]], list[Rejection]]:
    """Drop repeated passage ids, exact duplicates (same normalized text) and near duplicates (5-word-shingle
    Jaccard >= ``threshold``, via :class:`NearDuplicateIndex`). Texts under ``min_words`` words (KG triples
    that differ in one word) are compared exactly only.

    The first occurrence is kept; each dropped row becomes a rejection naming the kept id.
    """
    kept: list[dict[str, Any]] = []
    rejected: list[Rejection] = []
    seen_exact: dict[str, str] = {}
    kept_ids: set[str] = set()
    near = NearDuplicateIndex(threshold)
    for row in rows:
        if row["id"] in kept_ids:
            rejected.append(Rejection(row["source_ref"], row["id"], "native id repeated in the source: "
                                      f"{row['id']} already read", row, row["id"]))
            continue
        norm = normalize_text(row["text"])
        key = hashlib.sha1(norm.encode()).hexdigest()
        if key in seen_exact:
            rejected.append(Rejection(row["source_ref"], row["id"], f"exact duplicate: same text as {seen_exact[key]}",
                                      row, row["id"]))
            continue
        words = norm.split()
        if len(words) >= min_words:
            sh = shingles(words)
            sig = near.signature(sh)
            dup_of = near.find(sh, sig)
            if dup_of:
                rejected.append(Rejection(row["source_ref"], row["id"], f"near duplicate: shingle Jaccard >= "
                                          f"{threshold} with {dup_of}", row, row["id"]))
                continue
            near.insert(row["id"], sh, sig)
        seen_exact[key] = f"{row['source_ref']} ({row['id']})"
        kept_ids.add(row["id"])
        kept.append(row)
    return kept, rejected
