"""The promotion gate: a new checkpoint is promoted only when its evaluation is no worse than the promoted
one's. Plain Python (no Dagster).

The two checkpoints are compared on the same items: the candidate's ``eval_results`` rows in one mode and the
rows the promoted checkpoint was promoted with (kept beside its pointer), matched by benchmark, benchmark
version, protocol and item id. The difference of accuracies (candidate − promoted) gets a paired bootstrap
interval (:func:`training.evaluation.metrics.paired_difference`: items resampled jointly); the gate passes
when the lower bound of that interval is at least ``-margin``: the data rule out a loss larger than
``margin``. Fewer than
``min_items`` shared items are not enough evidence: the gate fails and says so. With no promoted checkpoint
yet, the first candidate passes (there is nothing to be worse than).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import polars as pl

from training.evaluation.metrics import paired_difference

MATCH_KEY = ("benchmark", "benchmark_version", "protocol", "item_id")


@dataclass(frozen=True)
class PromotionDecision:
    passed: bool
    reason: str
    n_items: int = 0
    accuracy_candidate: float | None = None
    accuracy_promoted: float | None = None
    difference: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None

    def as_metadata(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def arm(results: pl.DataFrame, checkpoint: str, mode: str) -> pl.DataFrame:
    """The rows of one checkpoint in one mode."""
    return results.filter((pl.col("checkpoint") == checkpoint) & (pl.col("mode") == mode))


def decide_promotion(
    candidate: pl.DataFrame,
    promoted: pl.DataFrame | None,
    *,
    margin: float = 0.02,
    confidence_level: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
    min_items: int = 1,
) -> PromotionDecision:
    """Gate ``candidate`` (one arm's rows) against ``promoted`` (the promoted checkpoint's rows, or
    ``None``)."""
    if candidate.is_empty():
        return PromotionDecision(False, "the candidate has no evaluation rows in this mode")
    if promoted is None or promoted.is_empty():
        return PromotionDecision(
            True,
            "no promoted checkpoint yet: the first evaluated candidate is promoted",
            n_items=candidate.height,
            accuracy_candidate=float(candidate["correct"].mean()),
        )
    keys = (
        candidate.select(*MATCH_KEY)
        .join(promoted.select(*MATCH_KEY), on=list(MATCH_KEY), how="inner")
        .unique()
    )
    if keys.height < min_items:
        return PromotionDecision(
            False,
            f"only {keys.height} item(s) evaluated for both checkpoints (at least "
            f"{min_items} needed): evaluate the candidate on the promoted one's benchmarks",
            n_items=keys.height,
        )
    a = candidate.join(keys, on=list(MATCH_KEY), how="semi")
    b = promoted.join(keys, on=list(MATCH_KEY), how="semi")
    d = paired_difference(a, b, n_resamples=n_resamples, seed=seed, confidence_level=confidence_level)
    low = (
        d.ci_low if d.ci_low == d.ci_low else d.difference
    )  # one item: no interval, the point estimate decides
    passed = low >= -margin
    verdict = "no worse" if passed else "possibly worse"
    return PromotionDecision(
        passed,
        f"{verdict}: {confidence_level:.0%} CI of accuracy difference "
        f"[{d.ci_low:.4f}, {d.ci_high:.4f}] vs margin -{margin}",
        n_items=d.n,
        accuracy_candidate=d.mean_a,
        accuracy_promoted=d.mean_b,
        difference=d.difference,
        ci_low=d.ci_low,
        ci_high=d.ci_high,
    )
