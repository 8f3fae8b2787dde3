"""Knowledge-base passages from the released corpora, chunked, with stable ids and duplicates removed.

Every reader returns a :class:`ReadResult` whose rows follow :data:`PASSAGE_SCHEMA`. Ids are stable across
runs: ``<source>:<native id>#<chunk index>``, so an unchanged record keeps its id (and its content hash),
and the index only re-embeds what changed. Plain Python: no Dagster import.

Sources (one partition key each):

- ``medquad``     MedQuAD answers (``medquad_qa.jsonl.gz``), chunked to ~100-200 words
- ``pubmedqa``    PubMedQA abstracts (``ori_pqal.json``), one passage per PMID (``pubmedqa:<pmid>#0``)
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
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import polars as pl

from assets.common.records import ReadResult, Rejection, SourceError
from orchestration.sources import SourceDir

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

MIN_WORDS = 100
MAX_WORDS = 200
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


# ---- chunking and ids ----------------------------------------------------------------------------------
def chunk_words(text: str, min_words: int = MIN_WORDS, max_words: int = MAX_WORDS) -> list[str]:
    """Split ``text`` into chunks of about ``min_words``-``max_words`` words along sentence boundaries.

    Sentences are packed greedily up to ``max_words``; a sentence longer than ``max_words`` is cut by
    words; a trailing chunk shorter than ``min_words`` is merged into the previous one (so a chunk may
    reach ``max_words + min_words``). Text shorter than ``min_words`` stays one chunk.
    """
    sentences = [s.split() for s in _SENTENCE_END.split(text or "") if s.strip()]
    chunks: list[list[str]] = []
    current: list[str] = []
    for words in sentences:
        while len(words) > max_words:  # an over-long "sentence" (a list without full stops)
            if current:
                chunks.append(current)
                current = []
            chunks.append(words[:max_words])
            words = words[max_words:]
        if current and len(current) + len(words) > max_words:
            chunks.append(current)
            current = []
        current = current + words
    if current:
        if chunks and len(current) < min_words:
            chunks[-1] = chunks[-1] + current
        else:
            chunks.append(current)
    return [" ".join(c) for c in chunks]


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


# ---- readers ---------------------------------------------------------------------------------------
def _limited(items: Iterable[Any], limit: int | None) -> Iterable[Any]:
    for i, item in enumerate(items):
        if limit is not None and i >= limit:
            return
        yield item


def read_medquad(src: SourceDir, limit: int | None = None) -> ReadResult:
    """MedQuAD answers chunked; the title is the question's focus and question."""
    rel = "medquad_qa.jsonl.gz" if src.exists("medquad_qa.jsonl.gz") else "medquad_qa.jsonl"
    out = ReadResult()
    path = src.path(rel)
    for line_no, rec, err in _limited(src.iter_jsonl(rel, "MedQuAD file"), limit):
        if err:
            out.rejected.append(Rejection(path, str(line_no), err, rec))
            continue
        answer = (rec.get("answer") or "").strip() if isinstance(rec, dict) else ""
        qid = str(rec.get("id") or "").strip() if isinstance(rec, dict) else ""
        if not qid or not answer:
            out.rejected.append(Rejection(path, str(line_no), "missing id or empty answer: nothing to index", rec))
            continue
        title = rec.get("question") or rec.get("focus")
        for c, chunk in enumerate(chunk_words(answer)):
            out.rows.append(passage("medquad", qid, c, title, chunk, f"{rel}:{line_no}", "CC BY 4.0 (MedQuAD)"))
    return out


def read_pubmedqa(src: SourceDir, limit: int | None = None) -> ReadResult:
    """PubMedQA abstracts, one passage per PMID (contexts joined, untitled)."""
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
        out.rows.append(passage("pubmedqa", str(pmid), 0, None, text, f"{rel}#{pmid}", "MIT (PubMedQA)"))
    return out


def read_slake_kg(src: SourceDir, limit: int | None = None) -> ReadResult:
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
            out.rows.append(passage("slake_kg", f"{name}-{i + 1}", 0, head, text, f"{rel}:{i + 1}", "CC BY-SA 4.0 (SLAKE)"))
            count += 1
    return out


def read_medmcqa_exp(src: SourceDir, limit: int | None = None) -> ReadResult:
    """MedMCQA explanations (``exp``), untitled (the question is a benchmark item); rows without an
    explanation are skipped."""
    out = ReadResult()
    files = [f for f in ("train.json", "dev.json") if src.exists(f)]
    if not files:
        raise SourceError(src.root, "no MedMCQA train.json or dev.json", "point the source at the MedMCQA folder")
    count = 0
    for rel in files:
        for line_no, rec, err in src.iter_jsonl(rel, "MedMCQA file"):
            if limit is not None and count >= limit:
                return out
            if err:
                out.rejected.append(Rejection(src.path(rel), str(line_no), err, rec))
                continue
            exp = (rec.get("exp") or "").strip()
            if len(exp.split()) < 5:  # missing or trivial ("Ans. a") explanations carry no knowledge
                continue
            for c, chunk in enumerate(chunk_words(exp)):
                out.rows.append(passage("medmcqa_exp", str(rec.get("id")), c, None, chunk,
                                        f"{rel}:{line_no}", "MIT (MedMCQA)"))
            count += 1
    return out


def read_medrag(src: SourceDir, source: str, limit: int | None = None) -> ReadResult:
    """A MedRAG-style corpus: ``**/*.jsonl[.gz]`` records or ``**/*.parquet`` rows with ``id``, ``title``,
    ``content`` (``contents``/``text`` accepted), chunked; the native id is the record's ``id``."""
    files = src.glob("**/*.jsonl") + src.glob("**/*.jsonl.gz") + src.glob("**/*.parquet")
    if not files:
        raise SourceError(src.root, "no *.jsonl, *.jsonl.gz or *.parquet files",
                          f"put the corpus for source {source!r} there or set MEDRWR_SOURCE_{source.upper()}")
    out = ReadResult()
    count = 0

    def records(rel: str) -> Iterable[tuple[str, Any, str | None]]:
        if rel.endswith(".parquet"):
            for i, rec in enumerate(pl.read_parquet(io.BytesIO(src.read_bytes(rel))).iter_rows(named=True)):
                yield str(i), rec, None
        else:
            for line_no, rec, err in src.iter_jsonl(rel):
                yield str(line_no), rec, err

    for rel in files:
        for row, rec, err in records(rel):
            if limit is not None and count >= limit:
                return out
            if err or not isinstance(rec, dict):
                out.rejected.append(Rejection(src.path(rel), row, err or "record is not an object", rec))
                continue
            text = rec.get("content") or rec.get("contents") or rec.get("text")
            rid = rec.get("id")
            if rid is None or not str(text or "").strip():
                out.rejected.append(Rejection(src.path(rel), row, "missing id or content", rec))
                continue
            for c, chunk in enumerate(chunk_words(str(text))):
                out.rows.append(passage(source, str(rid), c, rec.get("title"), chunk, f"{rel}:{row}",
                                        str(rec.get("license") or "see corpus")))
            count += 1
    return out


KB_READERS: dict[str, Callable[[SourceDir, int | None], ReadResult]] = {
    "medquad": read_medquad,
    "pubmedqa": read_pubmedqa,
    "slake_kg": read_slake_kg,
    "medmcqa_exp": read_medmcqa_exp,
}


def read_kb_source(source: str, src: SourceDir, limit: int | None = None) -> tuple[pl.DataFrame, ReadResult]:
    """Passages of ``source`` (a known corpus or a MedRAG-style folder), deduplicated.

    ``limit`` caps the number of source records read (smoke runs). Duplicates are moved to the
    result's rejections with the id of the passage they duplicate.
    """
    reader = KB_READERS.get(source)
    result = reader(src, limit) if reader else read_medrag(src, source, limit)
    kept, dups = deduplicate(result.rows)
    result.rows = kept
    result.rejected.extend(dups)
    return passages_frame(kept), result


# ---- duplicates ------------------------------------------------------------------------------------
_MERSENNE = (1 << 61) - 1


def _shingles(words: list[str], n: int = 5) -> np.ndarray:
    grams = [" ".join(words[i : i + n]) for i in range(max(1, len(words) - n + 1))]
    return np.unique(np.array([zlib.crc32(g.encode()) for g in grams], dtype=np.uint64))


def minhash(shingles: np.ndarray, num_perm: int = 64, seed: int = 7) -> np.ndarray:
    """MinHash signature (``num_perm`` universal hashes) of a set of 32-bit shingle hashes."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, _MERSENNE, num_perm, dtype=np.uint64)
    b = rng.integers(0, _MERSENNE, num_perm, dtype=np.uint64)
    # (a*x + b) mod p in uint64 wraps; good enough as a hash family for near-duplicate detection
    return ((np.outer(shingles, a) + b) % _MERSENNE).min(axis=0)


def deduplicate(rows: list[dict[str, Any]], threshold: float = 0.9, num_perm: int = 64,
                bands: int = 16) -> tuple[list[dict[str, Any]], list[Rejection]]:
    """Drop repeated ids, exact duplicates (same normalized text) and near duplicates (5-word-shingle Jaccard
    >= ``threshold``, candidates from MinHash LSH, confirmed on the exact shingle sets).

    The first occurrence is kept; each dropped row becomes a rejection naming the kept id.
    """
    kept: list[dict[str, Any]] = []
    rejected: list[Rejection] = []
    seen_exact: dict[str, str] = {}
    buckets: dict[tuple[int, bytes], list[int]] = {}
    shingle_sets: list[set[int]] = []
    rows_per_band = num_perm // bands
    kept_ids: set[str] = set()
    for row in rows:
        if row["id"] in kept_ids:  # a native id repeated in the release: keep the first record
            rejected.append(Rejection(row["source_ref"], row["id"], "duplicate id: native id repeated in the source",
                                      row, row["id"]))
            continue
        norm = normalize_text(row["text"])
        key = hashlib.sha1(norm.encode()).hexdigest()
        ref = f"{row['source_ref']} ({row['id']})"
        if key in seen_exact:
            rejected.append(Rejection(row["source_ref"], row["id"], f"exact duplicate: same text as {seen_exact[key]}",
                                      row, row["id"]))
            continue
        words = norm.split()
        sh = _shingles(words)
        sig = minhash(sh, num_perm)
        band_keys = [(b, sig[b * rows_per_band : (b + 1) * rows_per_band].tobytes()) for b in range(bands)]
        sh_set = set(sh.tolist())
        dup_of = None
        if len(words) >= 10:  # very short texts (KG triples) differ in one word and are not duplicates
            candidates = {j for bk in band_keys for j in buckets.get(bk, [])}
            for j in sorted(candidates):
                other = shingle_sets[j]
                if len(sh_set & other) / max(1, len(sh_set | other)) >= threshold:
                    dup_of = kept[j]["id"]
                    break
        if dup_of:
            rejected.append(Rejection(row["source_ref"], row["id"], f"near duplicate: shingle Jaccard >= {threshold} "
                                      f"with {dup_of}", row, row["id"]))
            continue
        seen_exact[key] = ref
        idx = len(kept)
        kept_ids.add(row["id"])
        kept.append(row)
        shingle_sets.append(sh_set)
        for bk in band_keys:
            buckets.setdefault(bk, []).append(idx)
    return kept, rejected
