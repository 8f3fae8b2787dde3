"""Duplicate passages: repeated ids, exact duplicates (normalized text) and near duplicates (MinHash-LSH over
5-word shingles, confirmed on the exact shingle sets)."""

from __future__ import annotations

import hashlib
import zlib
from typing import Any

import numpy as np

from assets.common.records import Rejection

from .base import normalize_text

NEAR_DUPLICATE_JACCARD = 0.9

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
    """Near-duplicate lookup: datasketch MinHash-LSH at Jaccard ``threshold`` over 5-word shingles,
    candidates confirmed on the exact shingle sets (so no pair under the threshold is ever dropped). The LSH
    weights favour recall, since false candidates cost only a set comparison: at 0.9 and 128 permutations
    datasketch picks 9 bands x 14 rows, which makes a pair a candidate with probability 0.90 at Jaccard 0.9
    and 0.998 at 0.95 (its default weights pick 5 x 25: 0.31 and 0.80). Insert and query are O(bands) per
    row: the cost of a corpus is linear in its size, plus the confirmed candidates."""

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


def deduplicate(
    rows: list[dict[str, Any]], threshold: float = NEAR_DUPLICATE_JACCARD, min_words: int = 10
) -> tuple[list[dict[str, Any]], list[Rejection]]:
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
            rejected.append(
                Rejection(
                    row["source_ref"],
                    row["id"],
                    f"native id repeated in the source: {row['id']} already read",
                    row,
                    row["id"],
                )
            )
            continue
        norm = normalize_text(row["text"])
        key = hashlib.sha1(norm.encode()).hexdigest()
        if key in seen_exact:
            rejected.append(
                Rejection(
                    row["source_ref"],
                    row["id"],
                    f"exact duplicate: same text as {seen_exact[key]}",
                    row,
                    row["id"],
                )
            )
            continue
        words = norm.split()
        if len(words) >= min_words:
            sh = shingles(words)
            sig = near.signature(sh)
            dup_of = near.find(sh, sig)
            if dup_of:
                rejected.append(
                    Rejection(
                        row["source_ref"],
                        row["id"],
                        f"near duplicate: shingle Jaccard >= {threshold} with {dup_of}",
                        row,
                        row["id"],
                    )
                )
                continue
            near.insert(row["id"], sh, sig)
        seen_exact[key] = f"{row['source_ref']} ({row['id']})"
        kept_ids.add(row["id"])
        kept.append(row)
    return kept, rejected
