"""A retraining chain reads one KB tag and one checkpoint: a KB refresh landing mid-chain changes nothing the
chain reads (or the chain refuses), and promotion needs every evaluation and the report on the chain's pins.

Real materializations on the smoke profile: the KB is built by the real ``kb_passages`` and ``kb_text_index``
assets (offline MiniLM), refreshed by them mid-chain, and the chain's runs are requested by the real sensors'
functions. The chain's steps read the KB through the real IO manager; ``kb_reader`` stands in for the
training/evaluation steps (which launch a trainer and load models), reading ``kb_text_index`` and
``stage2_checkpoint`` exactly as they do (an ``AssetIn`` through ``table_io``) and opening the retriever."""

import json

import numpy as np
import polars as pl
import pytest
from dagster import (
    AssetIn,
    AssetKey,
    DagsterInstance,
    MaterializeResult,
    SourceAsset,
    asset,
    build_sensor_context,
    materialize,
)

from assets.common import chain
from assets.common.resources import KnowledgeModelsResource, SourcesResource, StorageResource
from assets.evaluation.sensors import RETRAIN_TAG, follow_up
from assets.knowledge.assets import kb_passages, kb_text_index
from assets.training import sensors as retrain_sensors
from orchestration.definitions import build_resources
from retrieval.pointers import KbPointer
from retrieval.search import Retriever

pytestmark = pytest.mark.timeout(300)


def corpus(folder, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {"id": "1", "title": "t", "content": text},
        {"id": "2", "title": "t", "content": "Statins lower LDL."},
    ]
    (folder / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@asset(ins={"kb_text_index": AssetIn()}, group_name="test")
def kb_reader(
    kb_text_index: pl.DataFrame, storage: StorageResource, kb_models: KnowledgeModelsResource
) -> MaterializeResult:
    """What a chain step sees of the KB: the pointer's tag and version, and the passage a search returns."""
    pointer = KbPointer.from_row(kb_text_index)
    store = storage.get()
    retriever = Retriever.from_pointer(pointer, store.kb_location(pointer.db), kb_models.text_embedder())
    [hits] = retriever.search(["aspirin cyclooxygenase"], k=1)
    return MaterializeResult(
        metadata={"tag": pointer.tag, "version": int(pointer.version), "top": hits[0].text if hits else ""}
    )


def _failure(result) -> str:
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return str(failure.step_failure_data.error)


def _seen(result) -> dict:
    [mat] = [m for m in result.get_asset_materialization_events() if m.asset_key == AssetKey("kb_reader")]
    return {k: v.value for k, v in mat.materialization.metadata.items()}


@pytest.fixture
def kb(tmp_path, storage):
    data = tmp_path / "data"
    corpus(data / "mycorpus", "Aspirin inhibits cyclooxygenase (first KB version).")
    sources = SourcesResource(profile="smoke", data_dir=str(data))
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("kb_sources", ["mycorpus"])
    resources = {**build_resources(), "sources": sources}
    assets = [kb_passages, kb_text_index, kb_reader]

    def refresh(text: str) -> str:
        corpus(data / "mycorpus", text)
        assert materialize(
            assets, selection=[kb_passages], partition_key="mycorpus", instance=instance, resources=resources
        ).success
        built = materialize(assets, selection=[kb_text_index], instance=instance, resources=resources)
        assert built.success
        [mat] = built.get_asset_materialization_events()
        return mat.materialization.metadata["lancedb_tag"].value

    def read(tags: dict | None = None):
        return materialize(
            assets,
            selection=[kb_reader],
            instance=instance,
            resources=resources,
            tags=tags or {},
            raise_on_error=False,
        )

    return instance, refresh, read


def test_a_kb_refresh_mid_chain_leaves_the_chain_on_its_tag(kb, storage):
    instance, refresh, read = kb
    base = retrain_sensors.kb_index_retrain_sensor(build_sensor_context(instance=instance, cursor=None))
    first_tag = refresh("Aspirin inhibits cyclooxygenase (first KB version).")
    [request] = retrain_sensors.kb_index_retrain_sensor(
        build_sensor_context(instance=instance, cursor=base.cursor)
    ).run_requests
    assert request.tags[chain.KB_TAG] == first_tag

    # the retraining run, tagged by the sensor, reads the tag it names
    retrain = read(request.tags)
    assert retrain.success and _seen(retrain)["tag"] == first_tag
    first_version = _seen(retrain)["version"]

    # a KB refresh lands while the chain runs: a new pointer, a new tag
    second_tag = refresh("Aspirin irreversibly acetylates cyclooxygenase (second KB version).")
    assert second_tag != first_tag
    assert KbPointer.from_row(storage.read_table("kb_text_index")).tag == second_tag

    # the evaluation runs the sensor requests after the retraining carry its tag and read the first version
    retrain_run = instance.get_run_by_id(retrain.run_id)
    evals = follow_up("retrain_job", retrain.run_id, dict(retrain_run.tags), set(), "smoke")
    assert evals and all(r.tags[chain.KB_TAG] == first_tag for r in evals)
    evaluated = read(evals[0].tags)
    assert evaluated.success
    seen = _seen(evaluated)
    assert (seen["tag"], seen["version"]) == (first_tag, first_version)
    assert "first KB version" in seen["top"]  # the search itself reads the pinned version
    promote = follow_up(
        "evaluate_job", evaluated.run_id, dict(evals[0].tags), {r.partition_key for r in evals}, "smoke"
    )
    assert [r.tags[chain.KB_TAG] for r in promote] == [first_tag]

    # a run started by hand (no pin) reads the newest index and is tagged with what it read
    manual = read()
    assert manual.success and _seen(manual)["tag"] == second_tag
    assert "second KB version" in _seen(manual)["top"]
    assert instance.get_run_by_id(manual.run_id).tags[chain.KB_TAG] == second_tag


def test_a_chain_whose_tag_is_gone_refuses(kb):
    _, refresh, read = kb
    refresh("Aspirin inhibits cyclooxygenase.")
    refused = read({chain.KB_TAG: "run-no-such-run"})
    assert not refused.success
    [failure] = [e for e in refused.all_events if e.event_type_value == "STEP_FAILURE"]
    message = str(failure.step_failure_data.error)
    assert "ChainPinError" in message and "pinned to kb_text_index tag 'run-no-such-run'" in message


@asset(ins={"stage2_checkpoint": AssetIn()}, group_name="test")
def checkpoint_reader(stage2_checkpoint: pl.DataFrame) -> MaterializeResult:
    return MaterializeResult(metadata={"checkpoint": chain.manifest_hash(stage2_checkpoint)})


def _publish_checkpoint(store, seed: str) -> str:
    from assets.training.launching import model_row

    row = model_row("stage2", "stage1", f"/models/stage2/{seed}", seed, {"seed": seed})
    store.write_table(row, "stage2_checkpoint")
    return chain.manifest_hash(row)


def test_a_checkpoint_published_over_the_chains_own_is_refused(storage):
    instance = DagsterInstance.ephemeral()
    assets = [SourceAsset("stage2_checkpoint", io_manager_key="table_io"), checkpoint_reader]

    def read(pin: str):
        return materialize(
            assets,
            selection=[checkpoint_reader],
            instance=instance,
            resources=build_resources(),
            tags={chain.CHECKPOINT: pin, RETRAIN_TAG: "r1"},
            raise_on_error=False,
        )

    mine = _publish_checkpoint(storage, "a")
    assert read(mine).success
    _publish_checkpoint(storage, "b")  # a later retraining published mid-chain
    refused = read(mine)
    assert not refused.success
    [failure] = [e for e in refused.all_events if e.event_type_value == "STEP_FAILURE"]
    assert f"checkpoint of manifest {mine}" in str(failure.step_failure_data.error)


def _results(version: str, benchmark: str, kb_tag: str, correct, image_tag: str = "img-1") -> pl.DataFrame:
    n = len(correct)
    return pl.DataFrame(
        {
            "benchmark": [benchmark] * n,
            "benchmark_version": ["v1"] * n,
            "protocol": ["mcq"] * n,
            "item_id": [f"i{i}" for i in range(n)],
            "checkpoint": ["stage2"] * n,
            "checkpoint_version": [version] * n,
            "mode": ["rwr"] * n,
            "kb_tag": [kb_tag] * n,
            "image_index_tag": [image_tag] * n,
            "correct": [bool(c) for c in correct],
        }
    )


def test_promotion_needs_every_evaluation_and_the_report_on_the_chains_tag(storage):
    from assets.evaluation.assets import eval_benchmarks, promoted_checkpoint

    upstream = [
        SourceAsset("eval_results", partitions_def=eval_benchmarks, io_manager_key="table_io"),
        SourceAsset("stage2_checkpoint", io_manager_key="table_io"),
        SourceAsset("eval_report", io_manager_key="table_io"),
    ]
    instance = DagsterInstance.ephemeral()
    version = _publish_checkpoint(storage, "a")
    correct = np.random.default_rng(0).random(40) < 0.6
    storage.write_table(_results(version, "medqa", "run-1", correct), "eval_results", "medqa")
    # the refresh landed before this benchmark's evaluation: it searched another KB version
    storage.write_table(_results(version, "pubmedqa", "run-2", correct), "eval_results", "pubmedqa")
    lineage = {
        "checkpoint_manifests": {"stage2": f"/models/stage2/a (manifest {version})"},
        "kb_tag": "run-1",
        "benchmark_versions": {"medqa": "v1", "pubmedqa": "v1"},
    }
    storage.write_table(pl.DataFrame({"lineage": [json.dumps(lineage)]}), "eval_report")

    def promote():
        return materialize(
            [*upstream, promoted_checkpoint],
            selection=[promoted_checkpoint],
            instance=instance,
            resources=build_resources(),
            run_config={"ops": {"promoted_checkpoint": {"config": {"n_resamples": 500, "min_items": 30}}}},
            tags={
                chain.KB_TAG: "run-1",
                chain.IMAGE_INDEX_TAG: "img-1",
                chain.CHECKPOINT: version,
                RETRAIN_TAG: "r1",
            },
            raise_on_error=False,
        )

    refused = promote()
    assert not refused.success and not storage.exists(*storage.table_parts("promoted_checkpoint"))
    [failure] = [e for e in refused.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "eval_results[pubmedqa] searched KB tag(s) ['run-2']" in str(failure.step_failure_data.error)

    # the report itself built on another tag vouches for nothing either
    storage.write_table(_results(version, "pubmedqa", "run-1", correct), "eval_results", "pubmedqa")
    storage.write_table(
        pl.DataFrame({"lineage": [json.dumps({**lineage, "kb_tag": "run-2"})]}), "eval_report"
    )
    assert not promote().success and not storage.exists(*storage.table_parts("promoted_checkpoint"))

    storage.write_table(pl.DataFrame({"lineage": [json.dumps(lineage)]}), "eval_report")
    # the CDIR image index refreshed mid-chain: another image index tag in one benchmark
    storage.write_table(_results(version, "pubmedqa", "run-1", correct, "img-2"), "eval_results", "pubmedqa")
    refused = promote()
    assert not refused.success and "searched image index tag(s) ['img-2']" in _failure(refused)

    storage.write_table(_results(version, "pubmedqa", "run-1", correct), "eval_results", "pubmedqa")
    assert promote().success  # one tag and one checkpoint throughout: promoted
    assert storage.read_table("promoted_checkpoint")["checkpoint_version"][0] == version
