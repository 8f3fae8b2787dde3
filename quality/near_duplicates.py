"""Near-duplicate images: the same picture resized, re-encoded, cropped a little, or an adjacent slice of the
same CT/MR study. An exact content hash misses all of them, and a near copy of an evaluation image in the
training items or in the CDIR case corpus makes a score better than the model.

The detector: each image as a 64 x 64 grey thumbnail (Lanczos), centred and scaled to unit norm, so the dot
product of two thumbnails is their Pearson correlation; a pair is a near-duplicate at correlation >=
:data:`DEFAULT_THRESHOLD`. The threshold and the choice of detector come from labelled pairs
(``benchmarks/near_duplicates.py``, BENCHMARKS.md): transformed copies of real SLAKE and VQA-RAD images as
positives, cross-dataset pairs as negatives; the thumbnail correlation was compared there with the
perceptual hash of the maintained ``imagehash`` package. Pure functions, numpy and Pillow only.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import polars as pl

THUMB = 64
DEFAULT_THRESHOLD = 0.93
"""Correlation of 64 x 64 grey thumbnails at or above which two images are near-duplicates (chosen on labelled
pairs: BENCHMARKS.md, "Near-duplicate images")."""

PAIR_SCHEMA = {"query_ref": pl.Utf8, "corpus_ref": pl.Utf8, "similarity": pl.Float64}


def thumbnail(image: Any) -> np.ndarray:
    """``image`` (PIL image or encoded bytes) as a centred, unit-norm 64 x 64 grey vector (float32, 4,096
    values); a uniform image gives the zero vector (it correlates with nothing)."""
    from PIL import Image

    if isinstance(image, bytes | bytearray):
        image = Image.open(io.BytesIO(image))
    grey = np.asarray(image.convert("L").resize((THUMB, THUMB), Image.Resampling.LANCZOS), dtype=np.float32)
    v = grey.reshape(-1) - grey.mean()
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 1e-6 else np.zeros_like(v)


def thumbnails(images: Iterable[Any]) -> np.ndarray:
    """:func:`thumbnail` of each image, stacked (N x 4,096)."""
    rows = [thumbnail(im) for im in images]
    return np.stack(rows) if rows else np.zeros((0, THUMB * THUMB), dtype=np.float32)


def near_duplicate_pairs(
    query_refs: Sequence[str],
    query: np.ndarray,
    corpus_refs: Sequence[str],
    corpus: np.ndarray,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    chunk: int = 1024,
) -> pl.DataFrame:
    """Every (query image, corpus image) pair whose thumbnail correlation is >= ``threshold``, the same
    image under two ids included: columns ``query_ref``, ``corpus_ref``, ``similarity``, sorted. ``query``
    and ``corpus``: :func:`thumbnails` rows in the order of the refs. Memory: ``chunk`` x len(corpus)
    floats at a time."""
    if len(query_refs) != len(query) or len(corpus_refs) != len(corpus):
        raise ValueError("near_duplicate_pairs: one ref per thumbnail row")
    out: list[dict] = []
    for start in range(0, len(query_refs), chunk):
        sims = query[start : start + chunk] @ corpus.T
        qi, ci = np.nonzero(sims >= threshold)
        out += [
            {
                "query_ref": query_refs[start + q],
                "corpus_ref": corpus_refs[c],
                "similarity": float(sims[q, c]),
            }
            for q, c in zip(qi.tolist(), ci.tolist(), strict=True)
        ]
    return pl.DataFrame(out, schema=PAIR_SCHEMA).sort("query_ref", "corpus_ref")


def near_duplicates_of(
    evaluation_refs: Sequence[str],
    candidate_refs: Sequence[str],
    load: Any,
    *,
    threshold: float = DEFAULT_THRESHOLD,
) -> pl.DataFrame:
    """:func:`near_duplicate_pairs` of every evaluation image (``query_ref``) against every candidate image
    (``corpus_ref``: training images, CDIR cases), both read with ``load(ref) -> bytes``. Each image is read
    once."""
    query = thumbnails(load(r) for r in evaluation_refs)
    corpus = thumbnails(load(r) for r in candidate_refs)
    return near_duplicate_pairs(evaluation_refs, query, candidate_refs, corpus, threshold=threshold)
