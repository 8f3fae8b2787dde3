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

The baseline (the rows the promoted checkpoint was promoted with) is read only as the promotion committed it
(:func:`promoted_baseline`): the promoted pointer, read as its gate record commits it, names the baseline's
file (``tables/promoted_checkpoint_results/<promoting run>.parquet``, one per promotion, so a promotion that
dies before its commit leaves the committed baseline intact) and its sha256. A baseline that does not verify
(missing, changed, or a pointer from before baselines were named) refuses the promotion
(:class:`BaselineUnverified`): a candidate is never compared against it, nor against nothing.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import asdict, dataclass
from typing import Any

import polars as pl

from storage.errors import UncommittedTable
from storage.root import Storage
from training.evaluation.metrics import paired_difference

MATCH_KEY = ("benchmark", "benchmark_version", "protocol", "item_id")
PROMOTED = "promoted_checkpoint"
PROMOTED_RESULTS = "promoted_checkpoint_results"
RESULTS_SHA256 = "results_sha256"  # column of the promoted pointer: the sha256 of its baseline's file


class BaselineUnverified(RuntimeError):
    """The promoted checkpoint's baseline cannot be verified; no candidate may be compared against it."""


def baseline_parts(promoting_run: str) -> tuple[str, ...]:
    """Where the baseline of the promotion by run ``promoting_run`` lives under the storage root."""
    return Storage.table_parts(PROMOTED_RESULTS, promoting_run)


def promoted_baseline(store: Storage) -> pl.DataFrame | None:
    """The rows the promoted checkpoint was promoted with, verified (module docstring); None when nothing is
    promoted (no committed pointer). Raises :class:`BaselineUnverified`, naming what and what to do, when the
    pointer or its baseline does not verify."""
    fix = (
        "Nothing was promoted. Restore the file from a backup; or, to start the promotion history over "
        f"deliberately, remove tables/{PROMOTED} and gates/{PROMOTED} under the storage root: the next "
        "candidate is then promoted without a comparison"
    )
    if not store.exists(*store.table_parts(PROMOTED)):
        return None
    try:
        pointer = store.read_published_table(PROMOTED)
    except UncommittedTable as e:
        raise BaselineUnverified(f"the promoted pointer does not verify: {e} {fix}") from e
    row = pointer.row(0, named=True) if pointer.height == 1 else {}
    run = row.get("promoted_by_run")
    if not row.get(RESULTS_SHA256) or not run:
        raise BaselineUnverified(
            f"the promoted pointer (run {run}) names no sha256 of its baseline (it predates verified "
            f"baselines), so the rows it was promoted with cannot be verified. {fix}"
        )
    parts = baseline_parts(run)
    where = store.uri(*parts)
    if not store.exists(*parts):
        raise BaselineUnverified(
            f"the baseline of the promoted checkpoint (run {run}) is missing at {where}. {fix}"
        )
    data = store.read_bytes(*parts)
    digest = hashlib.sha256(data).hexdigest()
    if digest != row[RESULTS_SHA256]:
        raise BaselineUnverified(
            f"the baseline of the promoted checkpoint at {where} (sha256 {digest[:16]}) is not the one the "
            f"promoted pointer (run {run}) names (sha256 {row[RESULTS_SHA256][:16]}): the file changed after "
            f"the promotion. {fix}"
        )
    return pl.read_parquet(io.BytesIO(data))


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
