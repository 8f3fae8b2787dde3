"""Metrics over an ``eval_results`` frame: pure functions, frames in, frames out.

Every table is per (benchmark, checkpoint, mode) and carries ``n``. The two protocols are computed by
separate functions and labelled in a ``protocol`` column: :func:`mcq_accuracy` (closed questions as
MCQs) and :func:`open_scores` (the full set with open answers: exact match, token recall and, when a
judge was configured, the judge's accuracy). A table never holds both.

Intervals are percentile bootstrap intervals over items (:func:`bootstrap_ci`), seeded, with the number of
resamples a parameter. They come from ``scipy.stats.bootstrap(method="percentile")``: maintained,
vectorised, and batched so memory stays bounded (``batch`` resamples at a time); the percentile method
because its limits are quantiles of the resampled accuracy, which for a 0/1 score is a scaled binomial and
can be checked by hand, and because BCa's acceleration term is undefined on all-equal scores (a
perfectly separated item set is common on small benchmarks). Fewer than two items give no interval (NaN);
all-equal values give the degenerate interval [v, v] without resampling.

A difference between two modes or checkpoints is a paired bootstrap over the items both answered
(:func:`paired_difference`): items are resampled jointly, which for a difference of means is the
bootstrap of the per-item differences. Item sets that differ are refused, never silently intersected.

Calibration (ECE, reliability bins) lives in :mod:`training.evaluation.calibration`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import stats

from .modes import DEFAULT_COMPARISONS, MODES
from .results import CHECKPOINT_ORDER, PROTOCOLS

DEFAULT_RESAMPLES = 10_000
DEFAULT_SEED = 0
DEFAULT_LEVEL = 0.95
BREAKDOWNS = ("answer_type", "question_type", "modality", "organ")
GROUP_KEYS = ("benchmark", "checkpoint", "mode")
NOT_GIVEN = "(not given)"
"""Label of items whose benchmark gives no value for a breakdown column; they are counted, not dropped."""

_BATCH = 500  # resamples per scipy batch: 500 x n items float64 in memory at a time


class MismatchedItemsError(ValueError):
    """Two arms of a paired comparison did not answer the same items."""


# ---- intervals ------------------------------------------------------------------------------------
def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence_level: float = DEFAULT_LEVEL,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``: ``(low, high)``.

    ``n_resamples`` resamples of the items with replacement, drawn from ``numpy.random.default_rng(seed)``;
    the limits are the ``(1 ± level) / 2`` quantiles of the resampled means (numpy's linear
    interpolation). NaN for fewer than 2 values; ``(v, v)`` when every value is ``v``.
    """
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or np.isnan(x).any():
        raise ValueError("bootstrap_ci needs a flat sequence of numbers without NaN")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    if x.size < 2:
        return math.nan, math.nan
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    res = stats.bootstrap(
        (x,),
        np.mean,
        n_resamples=n_resamples,
        batch=_BATCH,
        vectorized=True,
        method="percentile",
        confidence_level=confidence_level,
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _mean_ci(values: list, boot: dict) -> tuple[float, float, float]:
    x = np.asarray(values, dtype=float)
    low, high = bootstrap_ci(x, **boot)
    return float(x.mean()) if x.size else math.nan, low, high


# ---- ordering and grouping ------------------------------------------------------------------------
def order_frame(df: pl.DataFrame, *extra: str) -> pl.DataFrame:
    """Sort by benchmark, checkpoint (base, stage1, stage2, then others), mode (as in MODES), ``extra``."""
    keys, ranks = [], []
    for col, order in (("benchmark", None), ("checkpoint", CHECKPOINT_ORDER), ("mode", MODES)):
        if col not in df.columns:
            continue
        if order is not None:
            ranks.append(
                pl.col(col)
                .replace_strict(
                    {v: i for i, v in enumerate(order)}, default=len(order), return_dtype=pl.Int32
                )
                .alias(f"_rank_{col}")
            )
            keys.append(f"_rank_{col}")
        keys.append(col)
    keys += [e for e in extra if e in df.columns]
    if df.is_empty() or not keys:
        return df
    return (
        df.with_columns(ranks)
        .sort(keys, nulls_last=True)
        .drop([f"_rank_{c}" for c in ("checkpoint", "mode") if f"_rank_{c}" in keys])
    )


def _protocol_rows(results: pl.DataFrame, protocol: str) -> pl.DataFrame:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r} is not one of {PROTOCOLS}")
    return results.filter(pl.col("protocol") == protocol)


def _group_keys(by: str | None) -> list[str]:
    if by is None:
        return list(GROUP_KEYS)
    if by not in BREAKDOWNS:
        raise ValueError(f"breakdown {by!r} is not one of {BREAKDOWNS}")
    return [*GROUP_KEYS, by]


def _with_group_labels(rows: pl.DataFrame, by: str | None) -> pl.DataFrame:
    return rows if by is None else rows.with_columns(pl.col(by).fill_null(NOT_GIVEN))


def _boot(n_resamples: int, seed: int, confidence_level: float) -> dict:
    return {"n_resamples": n_resamples, "seed": seed, "confidence_level": confidence_level}


# ---- accuracy -------------------------------------------------------------------------------------
def mcq_accuracy(
    results: pl.DataFrame,
    *,
    by: str | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence_level: float = DEFAULT_LEVEL,
) -> pl.DataFrame:
    """MCQ-protocol accuracy per (benchmark, checkpoint, mode[, by]) with its bootstrap interval.

    ``accuracy`` is **strict**: an answer that names no option is wrong (the headline, and what the
    promotion gate compares). Beside it: ``n_forced`` / ``forced_rate``, the rows whose answer was a forced
    choice (the system appended ``<answer>`` and took the likeliest letter), and ``accuracy_forced``, the
    accuracy when those forced letters count (always >= ``accuracy``).

    ``by``: None (overall) or one of :data:`BREAKDOWNS`; items without that field are grouped under
    :data:`NOT_GIVEN`. Columns: ``protocol`` (always ``mcq``), the keys, ``n``, ``n_correct``,
    ``accuracy``, ``ci_low``, ``ci_high``, ``n_forced``, ``forced_rate``, ``accuracy_forced``, ``chance``
    (mean of 1 / n_options). Empty when no row is mcq.
    """
    keys = _group_keys(by)
    rows = _with_group_labels(_protocol_rows(results, "mcq"), by)
    boot = _boot(n_resamples, seed, confidence_level)
    out = []
    for key, g in rows.group_by(keys, maintain_order=True):
        acc, low, high = _mean_ci(g["correct"].to_list(), boot)
        n_forced = int(g["answer_forced"].fill_null(False).sum())
        out.append(
            {
                "protocol": "mcq",
                **dict(zip(keys, key, strict=True)),
                "n": g.height,
                "n_correct": int(g["correct"].sum()),
                "accuracy": acc,
                "ci_low": low,
                "ci_high": high,
                "n_forced": n_forced,
                "forced_rate": n_forced / g.height,
                "accuracy_forced": float(g["correct_forced"].fill_null(False).cast(pl.Float64).mean()),
                "chance": float((1.0 / g["n_options"].cast(pl.Float64)).mean()),
            }
        )
    schema = {
        "protocol": pl.Utf8,
        **{k: pl.Utf8 for k in keys},
        "n": pl.Int64,
        "n_correct": pl.Int64,
        "accuracy": pl.Float64,
        "ci_low": pl.Float64,
        "ci_high": pl.Float64,
        "n_forced": pl.Int64,
        "forced_rate": pl.Float64,
        "accuracy_forced": pl.Float64,
        "chance": pl.Float64,
    }
    return order_frame(pl.DataFrame(out, schema=schema), *keys[3:])


def open_scores(
    results: pl.DataFrame,
    *,
    by: str | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence_level: float = DEFAULT_LEVEL,
) -> pl.DataFrame:
    """Open-protocol scores per (benchmark, checkpoint, mode[, by]), each with its bootstrap interval.

    Columns: ``protocol`` (always ``open``), the keys, ``n``, ``exact_match`` (+ ``_low``/``_high``),
    ``token_recall`` (+ ``_low``/``_high``), ``judge_model`` and ``judge_accuracy`` (+ ``_low``/``_high``)
    when a judge scored the group, else null. A group judged only in part, or by two judges, is an error.
    """
    keys = _group_keys(by)
    rows = _with_group_labels(_protocol_rows(results, "open"), by)
    boot = _boot(n_resamples, seed, confidence_level)
    out = []
    for key, g in rows.group_by(keys, maintain_order=True):
        labels = dict(zip(keys, key, strict=True))
        em, em_lo, em_hi = _mean_ci(g["correct"].to_list(), boot)
        tr, tr_lo, tr_hi = _mean_ci(g["token_recall"].to_list(), boot)
        judges = g["judge_model"].unique().to_list()
        judge, ja, ja_lo, ja_hi = None, None, None, None
        if judges != [None]:
            if len(judges) != 1:
                raise ValueError(
                    f"open answers of {labels} were judged by {sorted(map(str, judges))}: "
                    "judge every item of a group with one pinned judge"
                )
            judge = judges[0]
            ja, ja_lo, ja_hi = _mean_ci(g["judge_correct"].to_list(), boot)
        out.append(
            {
                "protocol": "open",
                **labels,
                "n": g.height,
                "exact_match": em,
                "exact_match_low": em_lo,
                "exact_match_high": em_hi,
                "token_recall": tr,
                "token_recall_low": tr_lo,
                "token_recall_high": tr_hi,
                "judge_model": judge,
                "judge_accuracy": ja,
                "judge_low": ja_lo,
                "judge_high": ja_hi,
            }
        )
    schema = {
        "protocol": pl.Utf8,
        **{k: pl.Utf8 for k in keys},
        "n": pl.Int64,
        **{f"{m}{s}": pl.Float64 for m in ("exact_match", "token_recall") for s in ("", "_low", "_high")},
        "judge_model": pl.Utf8,
        "judge_accuracy": pl.Float64,
        "judge_low": pl.Float64,
        "judge_high": pl.Float64,
    }
    return order_frame(pl.DataFrame(out, schema=schema), *keys[3:])


# ---- paired differences ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Arm:
    """One side of a comparison: a checkpoint evaluated in a mode."""

    checkpoint: str
    mode: str

    def __str__(self) -> str:
        return f"{self.checkpoint}/{self.mode}"


@dataclass(frozen=True)
class PairedDifference:
    """Mean of arm A minus mean of arm B on the same items, with its paired bootstrap interval."""

    n: int
    mean_a: float
    mean_b: float
    difference: float
    ci_low: float
    ci_high: float

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0."""
        return bool(self.ci_low > 0 or self.ci_high < 0)


_ITEM_KEY = ("benchmark", "protocol", "item_id")


def _item_values(rows: pl.DataFrame, metric: str, side: str) -> pl.DataFrame:
    dup = rows.filter(pl.struct(*_ITEM_KEY).is_duplicated())
    if not dup.is_empty():
        raise MismatchedItemsError(
            f"arm {side} answers {dup.height} item(s) more than once, e.g. "
            f"{dup['item_id'].head(3).to_list()}: select one checkpoint and one mode per arm"
        )
    nulls = rows.filter(pl.col(metric).is_null())
    if not nulls.is_empty():
        raise ValueError(
            f"arm {side} has {nulls.height} item(s) without {metric}, e.g. "
            f"{nulls['item_id'].head(3).to_list()}"
        )
    return rows.select(*_ITEM_KEY, pl.col(metric).cast(pl.Float64).alias(side))


def paired_difference(
    a: pl.DataFrame,
    b: pl.DataFrame,
    *,
    metric: str = "correct",
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence_level: float = DEFAULT_LEVEL,
) -> PairedDifference:
    """Paired bootstrap of mean(A.metric) − mean(B.metric) over items matched by (benchmark, protocol,
    item_id).

    ``a`` and ``b`` are the rows of one arm each (e.g. one checkpoint in one mode). They must hold exactly
    the same items, each once: otherwise :class:`MismatchedItemsError` names how many items only one arm
    has, with examples. ``metric``: ``correct``, ``token_recall``, ``judge_correct`` or
    ``correct_before_cdir``.
    """
    va, vb = _item_values(a, metric, "A"), _item_values(b, metric, "B")
    only_a = va.join(vb, on=list(_ITEM_KEY), how="anti")
    only_b = vb.join(va, on=list(_ITEM_KEY), how="anti")
    if not only_a.is_empty() or not only_b.is_empty():
        raise MismatchedItemsError(
            f"paired comparison needs the same items in both arms: {only_a.height} item(s) only in A "
            f"(e.g. {only_a['item_id'].head(3).to_list()}), {only_b.height} only in B "
            f"(e.g. {only_b['item_id'].head(3).to_list()}); evaluate both arms on the same benchmark version"
        )
    if va.is_empty():
        raise MismatchedItemsError("paired comparison of two empty arms: nothing was evaluated")
    joined = va.join(vb, on=list(_ITEM_KEY), how="inner")
    d = (joined["A"] - joined["B"]).to_numpy()
    low, high = bootstrap_ci(d, n_resamples=n_resamples, seed=seed, confidence_level=confidence_level)
    return PairedDifference(
        n=joined.height,
        mean_a=float(joined["A"].mean()),
        mean_b=float(joined["B"].mean()),
        difference=float(d.mean()),
        ci_low=low,
        ci_high=high,
    )


def default_comparisons(results: pl.DataFrame) -> list[tuple[Arm, Arm]]:
    """The comparisons a report shows, as (A, B) meaning A − B, for arms present in ``results``.

    Within each checkpoint: rwr − direct, rwr − random_retriever, rwr − rag_control, rwr_cdir − rwr (the
    registry's baselines, :data:`training.evaluation.modes.DEFAULT_COMPARISONS`).
    Within each mode: every later checkpoint minus every earlier one (in :data:`CHECKPOINT_ORDER`).
    """
    present = set(results.select("checkpoint", "mode").unique().iter_rows())
    checkpoints = order_frame(results.select("checkpoint").unique())["checkpoint"].to_list()
    pairs: list[tuple[Arm, Arm]] = []
    for ck in checkpoints:
        for ma, mb in DEFAULT_COMPARISONS:
            if (ck, ma) in present and (ck, mb) in present:
                pairs.append((Arm(ck, ma), Arm(ck, mb)))
    for mode in MODES:
        cks = [ck for ck in checkpoints if (ck, mode) in present]
        pairs += [
            (Arm(later, mode), Arm(earlier, mode)) for i, earlier in enumerate(cks) for later in cks[i + 1 :]
        ]
    return pairs


def compare(
    results: pl.DataFrame,
    comparisons: Sequence[tuple[Arm, Arm]],
    *,
    protocol: str,
    metric: str = "correct",
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence_level: float = DEFAULT_LEVEL,
) -> pl.DataFrame:
    """Paired differences per benchmark for each (A, B) in ``comparisons``, under one protocol.

    A benchmark where either arm has no rows is not compared (the table shows what exists); an arm pair
    present on a benchmark with different item sets raises :class:`MismatchedItemsError`. Columns:
    ``protocol``, ``metric``, ``benchmark``, ``a``, ``b``, ``n``, ``mean_a``, ``mean_b``, ``difference``,
    ``ci_low``, ``ci_high``, ``excludes_zero``.
    """
    rows = _protocol_rows(results, protocol)
    out = []
    for (benchmark,), bench in rows.group_by(["benchmark"], maintain_order=True):
        for arm_a, arm_b in comparisons:
            ra = bench.filter((pl.col("checkpoint") == arm_a.checkpoint) & (pl.col("mode") == arm_a.mode))
            rb = bench.filter((pl.col("checkpoint") == arm_b.checkpoint) & (pl.col("mode") == arm_b.mode))
            if ra.is_empty() or rb.is_empty():
                continue
            try:
                d = paired_difference(
                    ra,
                    rb,
                    metric=metric,
                    n_resamples=n_resamples,
                    seed=seed,
                    confidence_level=confidence_level,
                )
            except MismatchedItemsError as e:
                raise MismatchedItemsError(f"{benchmark} ({protocol}), {arm_a} vs {arm_b}: {e}") from e
            out.append(
                {
                    "protocol": protocol,
                    "metric": metric,
                    "benchmark": benchmark,
                    "a": str(arm_a),
                    "b": str(arm_b),
                    "n": d.n,
                    "mean_a": d.mean_a,
                    "mean_b": d.mean_b,
                    "difference": d.difference,
                    "ci_low": d.ci_low,
                    "ci_high": d.ci_high,
                    "excludes_zero": d.excludes_zero,
                }
            )
    schema = {
        "protocol": pl.Utf8,
        "metric": pl.Utf8,
        "benchmark": pl.Utf8,
        "a": pl.Utf8,
        "b": pl.Utf8,
        "n": pl.Int64,
        "mean_a": pl.Float64,
        "mean_b": pl.Float64,
        "difference": pl.Float64,
        "ci_low": pl.Float64,
        "ci_high": pl.Float64,
        "excludes_zero": pl.Boolean,
    }
    return pl.DataFrame(out, schema=schema).sort("benchmark", maintain_order=True)


# ---- retrieval use and CDIR -----------------------------------------------------------------------
def retrieval_use(results: pl.DataFrame) -> pl.DataFrame:
    """How much each arm searched, per (benchmark, checkpoint, mode, protocol).

    Columns: ``n``, ``queries_per_item``, ``share_with_query`` (items with at least one query),
    ``passages_per_item``, ``rounds_mean``, ``rounds_max``, ``generated_tokens_mean``, ``latency_s_mean``.
    """
    c = pl.col
    out = results.group_by([*GROUP_KEYS, "protocol"]).agg(
        n=pl.len(),
        queries_per_item=c("queries").list.len().mean(),
        share_with_query=(c("queries").list.len() > 0).mean(),
        passages_per_item=c("retrieved_ids").list.len().mean(),
        rounds_mean=c("n_rounds").mean(),
        rounds_max=c("n_rounds").max(),
        generated_tokens_mean=c("generated_tokens").mean(),
        latency_s_mean=c("latency_s").mean(),
    )
    return order_frame(out.with_columns(c("n").cast(pl.Int64), c("rounds_max").cast(pl.Int64)), "protocol")


def cdir_summary(results: pl.DataFrame) -> pl.DataFrame:
    """CDIR per (benchmark, checkpoint, protocol), from the rows of mode ``rwr_cdir``.

    Columns: ``n``, ``cdir_lambda``, ``n_triggered``, ``trigger_rate``, ``accuracy_before`` and
    ``accuracy_after`` (all items: first pass vs final), ``triggered_accuracy_before`` and
    ``triggered_accuracy_after`` (triggered items only; null when none), ``confidence_change_mean`` (mean
    final − first-pass confidence on triggered items that have both), ``n_answer_changed`` (triggered
    items whose answer changed). Several λ within one group is an error.
    """
    rows = results.filter(pl.col("mode") == "rwr_cdir")
    out = []
    for key, g in rows.group_by(["benchmark", "checkpoint", "protocol"], maintain_order=True):
        lambdas = g["cdir_lambda"].unique().to_list()
        if len(lambdas) != 1:
            raise ValueError(f"CDIR rows of {key} used several thresholds {lambdas}: evaluate one λ per run")
        t = g.filter(pl.col("cdir_triggered"))
        both = t.filter(pl.col("confidence").is_not_null() & pl.col("confidence_before_cdir").is_not_null())
        out.append(
            {
                "benchmark": key[0],
                "checkpoint": key[1],
                "protocol": key[2],
                "n": g.height,
                "cdir_lambda": lambdas[0],
                "n_triggered": t.height,
                "trigger_rate": t.height / g.height,
                "accuracy_before": g["correct_before_cdir"].cast(pl.Float64).mean(),
                "accuracy_after": g["correct"].cast(pl.Float64).mean(),
                "triggered_accuracy_before": t["correct_before_cdir"].cast(pl.Float64).mean()
                if t.height
                else None,
                "triggered_accuracy_after": t["correct"].cast(pl.Float64).mean() if t.height else None,
                "confidence_change_mean": (both["confidence"] - both["confidence_before_cdir"]).mean()
                if both.height
                else None,
                "n_answer_changed": int(t["prediction"].ne_missing(t["prediction_before_cdir"]).sum()),
            }
        )
    schema = {
        "benchmark": pl.Utf8,
        "checkpoint": pl.Utf8,
        "protocol": pl.Utf8,
        "n": pl.Int64,
        "cdir_lambda": pl.Float64,
        "n_triggered": pl.Int64,
        "trigger_rate": pl.Float64,
        "accuracy_before": pl.Float64,
        "accuracy_after": pl.Float64,
        "triggered_accuracy_before": pl.Float64,
        "triggered_accuracy_after": pl.Float64,
        "confidence_change_mean": pl.Float64,
        "n_answer_changed": pl.Int64,
    }
    return order_frame(pl.DataFrame(out, schema=schema), "protocol")
