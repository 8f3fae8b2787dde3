"""The promotion gate's statistics on constructed data where the answer is known."""

import numpy as np
import polars as pl
import pytest

from assets.evaluation.promotion import decide_promotion, promoted_baseline
from storage.pointers import ModelPointer

pytestmark = pytest.mark.timeout(60)


def rows(correct, checkpoint="stage2", version="v1", benchmark="medqa") -> pl.DataFrame:
    n = len(correct)
    return pl.DataFrame(
        {
            "benchmark": [benchmark] * n,
            "benchmark_version": [version] * n,
            "protocol": ["mcq"] * n,
            "item_id": [f"i{i}" for i in range(n)],
            "checkpoint": [checkpoint] * n,
            "mode": ["rwr"] * n,
            "correct": [bool(c) for c in correct],
        }
    )


def test_identical_answers_pass_with_a_degenerate_interval():
    same = rows([1, 0] * 50)
    d = decide_promotion(same, same, margin=0.0, n_resamples=500)
    assert d.passed and d.difference == 0 and d.ci_low == d.ci_high == 0


def test_clearly_worse_candidate_fails_and_clearly_better_passes():
    rng = np.random.default_rng(0)
    promoted = rows(rng.random(400) < 0.7)
    worse = rows(rng.random(400) < 0.4)
    d = decide_promotion(worse, promoted, margin=0.02, n_resamples=2000)
    assert not d.passed and d.ci_high < 0 and d.n_items == 400
    better = decide_promotion(promoted, worse, margin=0.02, n_resamples=2000)
    assert better.passed and better.ci_low > 0


def test_pairing_matters():
    # candidate differs from the promoted one on exactly 4 of 200 items (-2 percentage points): a paired
    # interval is narrow around -0.02, so a margin of 0.05 passes and a margin of 0.0 does not
    base = np.array([1, 0] * 100)
    cand = base.copy()
    cand[:8:2] = 0  # four items the promoted answered right, the candidate wrong
    d_tol = decide_promotion(rows(cand), rows(base), margin=0.05, n_resamples=4000)
    d_strict = decide_promotion(rows(cand), rows(base), margin=0.0, n_resamples=4000)
    assert d_tol.passed and not d_strict.passed
    assert d_tol.difference == pytest.approx(-0.02) and -0.05 < d_tol.ci_low < -0.02 < d_tol.ci_high <= 0


def test_first_candidate_and_missing_overlap():
    assert decide_promotion(rows([1, 0, 1]), None).passed
    other = rows([1, 1, 1], version="v2")  # a different benchmark version: nothing shared
    d = decide_promotion(rows([1, 0, 1]), other, min_items=1)
    assert not d.passed and d.n_items == 0 and "both checkpoints" in d.reason


def _publish_candidate(store, version_seed: str, correct) -> str:
    """Publish a stage2_checkpoint pointer and its eval_results rows (rwr mode) as the upstream assets
    would."""
    import hashlib

    from assets.training.launching import model_row

    row = model_row(
        "stage2", "stage1", f"/models/stage2/{version_seed}", version_seed, {"seed": version_seed}
    )
    store.write_table(row, "stage2_checkpoint")
    version = hashlib.sha256(row["manifest"][0].encode()).hexdigest()[:16]
    store.write_table(
        rows(correct).with_columns(pl.lit(version).alias("checkpoint_version")), "eval_results", "medqa"
    )
    _publish_report(store, version)
    return version


def _publish_report(store, stage2_version: str) -> None:
    """A published eval_report row whose lineage cites the stage-2 manifest ``stage2_version``."""
    import json

    lineage = {"checkpoint_manifests": {"stage2": f"/models/stage2 (manifest {stage2_version})"}}
    store.write_table(pl.DataFrame({"lineage": [json.dumps(lineage)]}), "eval_report")


def _promoter(instance):
    """Materializes promoted_checkpoint on the upstream tables published by the helpers above."""
    from dagster import SourceAsset, materialize

    from assets.evaluation.assets import eval_benchmarks, promoted_checkpoint
    from orchestration.definitions import build_resources

    upstream = [
        SourceAsset("eval_results", partitions_def=eval_benchmarks, io_manager_key="table_io"),
        SourceAsset("stage2_checkpoint", io_manager_key="table_io"),
        SourceAsset("eval_report", io_manager_key="table_io"),
    ]
    cfg = {"ops": {"promoted_checkpoint": {"config": {"n_resamples": 2000, "min_items": 30, "margin": 0.02}}}}
    return lambda: materialize(
        [*upstream, promoted_checkpoint],
        selection=[promoted_checkpoint],
        instance=instance,
        resources=build_resources(),
        run_config=cfg,
        raise_on_error=False,
    )


@pytest.mark.timeout(180)
def test_promoted_checkpoint_publishes_only_when_the_gate_passes(storage):
    from dagster import DagsterInstance

    # the upstream tables are published by the helpers above, as their assets would publish them
    promote = _promoter(DagsterInstance.ephemeral())

    rng = np.random.default_rng(1)
    good = rng.random(300) < 0.7
    first = _publish_candidate(storage, "a", good)
    assert promote().success  # nothing promoted yet: the first candidate is promoted
    assert storage.read_table("promoted_checkpoint")["checkpoint_version"][0] == first

    worse = good.copy()
    worse[np.flatnonzero(good)[:60]] = False  # 60 items lost: 20 points worse on the same items
    _publish_candidate(storage, "b", worse)
    refused = promote()
    assert not refused.success
    [check] = refused.get_asset_check_evaluations()
    assert check.check_name == "promotion_no_worse" and not check.passed
    assert storage.read_table("promoted_checkpoint")["checkpoint_version"][0] == first  # pointer unchanged
    assert promoted_baseline(storage)["correct"].sum() == good.sum()  # baseline unchanged (and verified)

    better = good.copy()
    better[np.flatnonzero(~good)[:10]] = True
    third = _publish_candidate(storage, "c", better)
    _publish_report(storage, first)  # a report about another checkpoint vouches for nothing
    stale = promote()
    assert not stale.success and storage.read_table("promoted_checkpoint")["checkpoint_version"][0] == first
    _publish_report(storage, third)
    assert promote().success
    pointer = storage.read_table("promoted_checkpoint")
    assert pointer["checkpoint_version"][0] == third
    assert ModelPointer.from_row(pointer).path == "/models/stage2/c"


def test_promotion_runs_after_the_report_and_only_for_the_checkpoint_it_evaluated():
    """The promoted checkpoint reads the published report (so a failed report, by its step or its gate,
    stops the promotion) and refuses a report about another stage-2 checkpoint."""
    import json

    from assets.evaluation.assets import report_disagrees
    from orchestration.definitions import build_defs

    graph = build_defs().resolve_asset_graph()
    from dagster import AssetKey

    assert AssetKey("eval_report") in graph.get(AssetKey("promoted_checkpoint")).parent_keys

    def report(stage2: str | None) -> pl.DataFrame:
        cited = {"base": "models/base (manifest aaaa)"}
        if stage2:
            cited["stage2"] = f"models/stage2/r1 (manifest {stage2})"
        return pl.DataFrame({"lineage": [json.dumps({"checkpoint_manifests": cited})]})

    assert report_disagrees(report("bbbb"), "bbbb") is None
    assert "another stage-2 checkpoint" in report_disagrees(report("cccc"), "bbbb")
    assert "did not evaluate a stage-2" in report_disagrees(report(None), "bbbb")


def _failure(result) -> str:
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return str(failure.step_failure_data.error)


@pytest.mark.timeout(180)
def test_a_baseline_that_does_not_verify_refuses_the_promotion(storage):
    """The baseline is read only as the promotion committed it: changed after the promotion (every answer of
    the promoted checkpoint made wrong, so that a worse candidate looks better), or deleted, the next
    promotion refuses with a message naming it; never compared against it, never "nothing promoted yet"."""
    from dagster import DagsterInstance

    promote = _promoter(DagsterInstance.ephemeral())
    good = np.random.default_rng(1).random(300) < 0.7
    first = _publish_candidate(storage, "a", good)
    assert promote().success
    [name] = [f for f in storage.list("tables", "promoted_checkpoint_results") if f.endswith(".parquet")]
    baseline = ("tables", "promoted_checkpoint_results", name)
    published = storage.read_bytes(*baseline)

    worse = good.copy()
    worse[np.flatnonzero(good)[:60]] = False
    _publish_candidate(storage, "b", worse)
    tampered = pl.read_parquet(storage.uri(*baseline)).with_columns(pl.lit(False).alias("correct"))
    storage.write_bytes(_parquet(tampered), *baseline)  # behind the pointer's back, through no gate
    refused = promote()
    assert not refused.success and not refused.get_asset_check_evaluations()  # refused before any comparison
    message = _failure(refused)
    assert (
        "baseline of the promoted checkpoint" in message and "the file changed after the promotion" in message
    )
    assert "Nothing was promoted" in message
    assert storage.read_table("promoted_checkpoint")["checkpoint_version"][0] == first  # pointer unchanged

    storage.write_bytes(published, *baseline)  # the committed baseline again: the worse candidate is compared
    compared = promote()
    assert not compared.success and not compared.get_asset_check_evaluations()[0].passed

    storage.delete(*baseline)  # gone: not "nothing promoted yet" (which would promote any candidate)
    missing = promote()
    assert not missing.success and "is missing at" in _failure(missing)
    assert storage.read_table("promoted_checkpoint")["checkpoint_version"][0] == first


def _parquet(frame: pl.DataFrame) -> bytes:
    import io

    buf = io.BytesIO()
    frame.write_parquet(buf)
    return buf.getvalue()
