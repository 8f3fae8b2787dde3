"""Calibration over an ``eval_results`` frame: pure functions, frames in, frames out.

Calibration (:func:`calibration_table`, :func:`reliability_bins`) uses equal-width confidence bins:
with ``edges = numpy.linspace(0, 1, n_bins + 1)``, bin m holds ``edges[m] <= η < edges[m+1]`` and the
last bin also holds η = 1. ECE = Σ_m (n_m / N) · |accuracy_m − mean confidence_m| over non-empty bins
(Guo et al., ICML 2017). Items without a confidence (no answer produced) are left out of calibration and
counted in ``n_without_confidence``.

One confidence definition for every row: the probability of the answer's first token right after
``<answer>`` (an MCQ's option letter), and the outcome is whether *that* answer is right. For an MCQ row
whose answer was a forced choice, the confidence is the forced letter's probability, so its outcome is the
forced letter's correctness (``correct_forced``); for every other row ``correct_forced`` equals
``correct``. (Strict accuracy, where a forced row is wrong, is an accuracy, not the outcome of that
confidence.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import polars as pl

from .metrics import GROUP_KEYS, _protocol_rows, order_frame

DEFAULT_BINS = 10


# ---- calibration ----------------------------------------------------------------------------------
def _bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    if n_bins < 1:
        raise ValueError(f"n_bins must be positive, got {n_bins}")
    if ((confidence < 0) | (confidence > 1)).any():
        raise ValueError("confidences must lie in [0, 1]")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, n_bins - 1)


def reliability_of(
    confidence: Sequence[float], correct: Sequence[bool], n_bins: int = DEFAULT_BINS
) -> pl.DataFrame:
    """Reliability-diagram data for one set of items: one row per bin (empty bins included).

    Columns: ``bin``, ``bin_low``, ``bin_high``, ``n``, ``mean_confidence``, ``accuracy`` (null when empty).
    """
    conf = np.asarray(confidence, dtype=float)
    corr = np.asarray(correct, dtype=float)
    if conf.shape != corr.shape:
        raise ValueError("confidence and correct must have the same length")
    idx = _bin_index(conf, n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    rows = []
    for m in range(n_bins):
        sel = idx == m
        k = int(sel.sum())
        rows.append(
            {
                "bin": m,
                "bin_low": float(edges[m]),
                "bin_high": float(edges[m + 1]),
                "n": k,
                "mean_confidence": float(conf[sel].mean()) if k else None,
                "accuracy": float(corr[sel].mean()) if k else None,
            }
        )
    return pl.DataFrame(
        rows,
        schema={
            "bin": pl.Int64,
            "bin_low": pl.Float64,
            "bin_high": pl.Float64,
            "n": pl.Int64,
            "mean_confidence": pl.Float64,
            "accuracy": pl.Float64,
        },
    )


def expected_calibration_error(
    confidence: Sequence[float], correct: Sequence[bool], n_bins: int = DEFAULT_BINS
) -> float:
    """ECE with equal-width bins: Σ_m (n_m / N) · |accuracy_m − mean confidence_m|; NaN for no items."""
    bins = reliability_of(confidence, correct, n_bins).filter(pl.col("n") > 0)
    total = bins["n"].sum()
    if not total:
        return math.nan
    gap = (bins["accuracy"] - bins["mean_confidence"]).abs()
    return float((bins["n"] * gap).sum() / total)


def _outcome(rows: pl.DataFrame) -> np.ndarray:
    """The outcome of each row's confidence: whether the answer it belongs to is right (module docstring)."""
    return rows["correct_forced"].fill_null(rows["correct"]).cast(pl.Float64).to_numpy()


def _calibration_groups(results: pl.DataFrame, protocol: str, by: Sequence[str]):
    rows = _protocol_rows(results, protocol)
    for key, g in rows.group_by(list(by), maintain_order=True):
        yield dict(zip(by, key, strict=True)), g.filter(pl.col("confidence").is_not_null()), g.height


def calibration_table(
    results: pl.DataFrame,
    *,
    protocol: str,
    n_bins: int = DEFAULT_BINS,
    by: Sequence[str] = GROUP_KEYS,
) -> pl.DataFrame:
    """ECE per group under one protocol (the outcome: the answer the confidence belongs to is right, letter
    match or open exact match; module docstring).

    Columns: ``protocol``, the ``by`` keys, ``n``, ``n_without_confidence``, ``mean_confidence``,
    ``accuracy`` (over items with a confidence), ``ece``, ``n_bins``.
    """
    out = []
    for labels, g, total in _calibration_groups(results, protocol, by):
        ece = expected_calibration_error(g["confidence"].to_numpy(), _outcome(g), n_bins)
        out.append(
            {
                "protocol": protocol,
                **labels,
                "n": g.height,
                "n_without_confidence": total - g.height,
                "mean_confidence": g["confidence"].mean(),
                "accuracy": float(_outcome(g).mean()) if g.height else None,
                "ece": ece,
                "n_bins": n_bins,
            }
        )
    schema = {
        "protocol": pl.Utf8,
        **{k: pl.Utf8 for k in by},
        "n": pl.Int64,
        "n_without_confidence": pl.Int64,
        "mean_confidence": pl.Float64,
        "accuracy": pl.Float64,
        "ece": pl.Float64,
        "n_bins": pl.Int64,
    }
    return order_frame(pl.DataFrame(out, schema=schema))


def reliability_bins(
    results: pl.DataFrame,
    *,
    protocol: str,
    n_bins: int = DEFAULT_BINS,
    by: Sequence[str] = ("checkpoint", "mode"),
) -> pl.DataFrame:
    """Reliability-diagram data per group (default: pooled over benchmarks per checkpoint and mode)."""
    frames = [
        reliability_of(g["confidence"].to_numpy(), _outcome(g), n_bins).select(
            pl.lit(protocol).alias("protocol"),
            *(pl.lit(v, pl.Utf8).alias(k) for k, v in labels.items()),
            pl.all(),
        )
        for labels, g, _ in _calibration_groups(results, protocol, by)
    ]
    if not frames:
        return pl.DataFrame(
            schema={"protocol": pl.Utf8, **{k: pl.Utf8 for k in by}, **reliability_of([], [], n_bins).schema}
        )
    return order_frame(pl.concat(frames), "bin")
