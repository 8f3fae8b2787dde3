"""The KB sensors on real folders and a real Dagster instance: exactly once per change, cool-down, new source
folders become partitions, a new kb_text_index requests retraining."""

import json

import pytest
from dagster import DagsterInstance, SensorResult, build_sensor_context

from assets.common.resources import SourcesResource
from assets.common.triggers import decide
from assets.knowledge import sensors as kb_sensors
from assets.training import sensors as retrain_sensors

pytestmark = pytest.mark.timeout(120)


class Clock:
    def __init__(self, t: float = 1_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(kb_sensors, "now", c)
    monkeypatch.setattr(retrain_sensors, "now", c)
    return c


def corpus(folder, name: str, rows: list[tuple[str, str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(
        "".join(json.dumps({"id": i, "title": "t", "content": c}) + "\n" for i, c in rows)
    )


def tick(instance, sources, cursor):
    context = build_sensor_context(instance=instance, cursor=cursor, resources={"sources": sources})
    result = kb_sensors.kb_sources_sensor(context)
    assert isinstance(result, SensorResult)
    return result


def test_decide_exactly_once_and_cooldown():
    d1 = decide(None, {"a": "x"}, now=0, cooldown_s=10)
    assert d1.fire == {"a": "x"}
    assert decide(d1.cursor, {"a": "x"}, now=1, cooldown_s=10).fire == {}
    d2 = decide(d1.cursor, {"a": "y"}, now=2, cooldown_s=10)
    assert d2.fire == {} and d2.pending["a"] == pytest.approx(8)
    d3 = decide(d2.cursor, {"a": "z"}, now=5, cooldown_s=10)
    assert d3.fire == {}
    d4 = decide(d3.cursor, {"a": "z"}, now=10, cooldown_s=10)
    assert d4.fire == {"a": "z"}
    assert decide(d4.cursor, {"a": "z"}, now=100, cooldown_s=10).fire == {}
    # a change back to the fired content after a burst: nothing new to do
    d5 = decide(d4.cursor, {"a": "y"}, now=11, cooldown_s=10)
    assert decide(d5.cursor, {"a": "z"}, now=30, cooldown_s=10).fire == {}


def test_kb_sources_sensor_local(tmp_path, monkeypatch, clock):
    monkeypatch.setenv("MEDRWR_KB_SENSOR_COOLDOWN_S", "3600")
    data = tmp_path / "data"
    corpus(data / "mycorpus", "a.jsonl", [("1", "Aspirin inhibits cyclooxygenase.")])
    (data / "vqa_rad").mkdir(parents=True)
    (data / "vqa_rad" / "x.jsonl").write_text("{}\n")  # a dataset folder is never a new KB source
    sources = SourcesResource(profile="smoke", data_dir=str(data))
    instance = DagsterInstance.ephemeral()

    # first tick: a new source folder -> a dynamic partition and one refresh run for it
    first = tick(instance, sources, None)
    assert [r.partitions_def_name for r in first.dynamic_partitions_requests] == ["kb_sources"]
    assert list(first.dynamic_partitions_requests[0].partition_keys) == ["mycorpus"]
    assert [r.partition_key for r in first.run_requests] == ["mycorpus"]
    assert first.run_requests[0].run_config == {"ops": {"kb_passages": {"config": {"max_records": 120}}}}
    instance.add_dynamic_partitions("kb_sources", ["mycorpus"])  # what the daemon does with the request

    # unchanged: nothing (exactly once)
    second = tick(instance, sources, first.cursor)
    assert not second.run_requests and not second.dynamic_partitions_requests

    # a file changed after the cool-down: one request
    clock.t += 3601
    corpus(data / "mycorpus", "a.jsonl", [("1", "Aspirin irreversibly inhibits cyclooxygenase.")])
    third = tick(instance, sources, second.cursor)
    assert [r.partition_key for r in third.run_requests] == ["mycorpus"]

    # a burst within the cool-down: no run until it ends, then exactly one
    cursor = third.cursor
    for i in range(3):
        clock.t += 60
        corpus(data / "mycorpus", f"b{i}.jsonl", [(f"b{i}", f"Burst passage {i} about statins.")])
        res = tick(instance, sources, cursor)
        assert not res.run_requests
        # the skip reason names the source that waits and when it refreshes
        assert "source(s) pending their cool-down: mycorpus (refresh in" in res.skip_reason.skip_message
        cursor = res.cursor
    clock.t += 3600
    after = tick(instance, sources, cursor)
    assert [r.partition_key for r in after.run_requests] == ["mycorpus"]
    assert not tick(instance, sources, after.cursor).run_requests

    # a second new folder: its own partition and run, the first source untouched
    corpus(
        data / "othercorpus",
        "c.jsonl.gz".removesuffix(".gz"),
        [("c", "Metformin lowers hepatic glucose output.")],
    )
    newer = tick(instance, sources, after.cursor)
    assert list(newer.dynamic_partitions_requests[0].partition_keys) == ["othercorpus"]
    assert [r.partition_key for r in newer.run_requests] == ["othercorpus"]


def test_kb_sources_sensor_watches_only_files_a_source_reads(tmp_path, clock):
    data = tmp_path / "data"
    (data / "slake" / "KG_mvqa-kg").mkdir(parents=True)
    (data / "slake" / "KG_mvqa-kg" / "en_disease.csv").write_text("a#b#c\n")
    sources = SourcesResource(profile="smoke", data_dir=str(data))
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("kb_sources", ["slake_kg"])
    first = tick(instance, sources, None)
    assert [r.partition_key for r in first.run_requests] == [
        "slake_kg"
    ] and not first.dynamic_partitions_requests
    clock.t += 10_000
    (data / "slake" / "imgs").mkdir()
    (data / "slake" / "imgs" / "new.jpg").write_bytes(b"\xff\xd8 not a KB file")
    assert not tick(instance, sources, first.cursor).run_requests


def _materialize_index_event(instance, tag: str) -> None:
    from dagster import MaterializeResult, asset, materialize

    @asset(name="kb_text_index")
    def fake_index():
        return MaterializeResult(metadata={"lancedb_tag": tag})

    # a real materialization event of kb_text_index in the instance (the asset itself is tested elsewhere)
    assert materialize([fake_index], instance=instance).success


def test_kb_index_sensor_requests_retraining_once(monkeypatch, clock):
    monkeypatch.setenv("MEDRWR_RETRAIN_COOLDOWN_S", "3600")
    instance = DagsterInstance.ephemeral()

    def run(cursor):
        return retrain_sensors.kb_index_retrain_sensor(build_sensor_context(instance=instance, cursor=cursor))

    base = run(None)
    assert not base.run_requests
    assert not run(base.cursor).run_requests
    _materialize_index_event(instance, "run-1")
    first = run(base.cursor)
    [req] = first.run_requests
    assert req.job_name in (None, "retrain_job") and req.tags["medrwr/kb_tag"] == "run-1"
    assert sorted(k.to_user_string() for k in req.asset_selection) == ["stage2_checkpoint", "stage2_items"]
    assert "stage2_checkpoint" in req.run_config["ops"]  # smoke-sized run knobs
    assert not run(first.cursor).run_requests

    # two new indexes within the cool-down: one request after it, for the newest
    monkeypatch.setenv("MEDRWR_RETRAIN_STAGES", "all")
    _materialize_index_event(instance, "run-2")
    held = run(first.cursor)
    assert not held.run_requests
    _materialize_index_event(instance, "run-3")
    clock.t += 3600
    [later] = run(held.cursor).run_requests
    assert later.tags["medrwr/kb_tag"] == "run-3"
    assert [k.to_user_string() for k in later.asset_selection] == list(
        retrain_sensors.STAGES["all"]
    )  # split_use first


def test_evaluation_follows_retraining_then_promotion_once_all_benchmarks_succeeded():
    from assets.common.profiles import get_profile
    from assets.evaluation.sensors import RETRAIN_TAG, follow_up

    benchmarks = get_profile("smoke").benchmarks
    evals = follow_up("retrain_job", "r1", {}, set(), "smoke")
    assert [(r.job_name, r.partition_key) for r in evals] == [("evaluate_job", b) for b in benchmarks]
    assert all(r.tags[RETRAIN_TAG] == "r1" and r.run_key == f"evaluate:r1:{r.partition_key}" for r in evals)
    assert follow_up("evaluate_job", "e1", {RETRAIN_TAG: "r1"}, set(benchmarks[:-1]), "smoke") == []
    [promote] = follow_up("evaluate_job", "e5", {RETRAIN_TAG: "r1"}, set(benchmarks), "smoke")
    assert promote.job_name == "promote_job" and promote.run_key == "promote:r1"
    assert follow_up("evaluate_job", "e6", {}, set(benchmarks), "smoke") == []  # a manual evaluation: nothing


def test_switching_the_sensor_on_records_the_built_sources_and_fires_nothing(tmp_path, monkeypatch, clock):
    """Sources the main command already materialized are the first tick's baseline (the reviewer saw four
    refresh runs and a whole retraining chain fire on switching the sensor on); a later change fires once,
    and a registered source never built still fires."""
    from dagster import AssetMaterialization

    monkeypatch.setenv("MEDRWR_KB_SENSOR_COOLDOWN_S", "0")
    data = tmp_path / "data"
    corpus(data / "built", "a.jsonl", [("1", "Aspirin inhibits cyclooxygenase.")])
    corpus(data / "never_built", "a.jsonl", [("1", "Statins lower LDL cholesterol.")])
    sources = SourcesResource(profile="smoke", data_dir=str(data))
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("kb_sources", ["built", "never_built"])
    instance.report_runless_asset_event(AssetMaterialization("kb_passages", partition="built"))

    first = tick(instance, sources, None)
    assert [r.partition_key for r in first.run_requests] == ["never_built"]
    assert not tick(instance, sources, first.cursor).run_requests
    clock.t += 10
    corpus(data / "built", "a.jsonl", [("1", "Aspirin irreversibly inhibits cyclooxygenase.")])
    assert [r.partition_key for r in tick(instance, sources, first.cursor).run_requests] == ["built"]


def test_a_traversal_key_is_refused_before_any_file_is_read(tmp_path, clock):
    """Seen: a kb_sources partition '..' added through the instance API globbed the data folder's parent,
    and '../<other>' was read and chunked in full before a later write refused it."""
    from dagster import materialize

    from assets.knowledge.assets import kb_passages
    from orchestration.definitions import build_resources
    from storage.keys import InvalidPartitionKey

    data = tmp_path / "data"
    corpus(data / "good", "a.jsonl", [("1", "Aspirin inhibits cyclooxygenase.")])
    corpus(tmp_path / "other", "secret.jsonl", [("1", "Outside the data folder.")])
    sources = SourcesResource(profile="smoke", data_dir=str(data))
    for key in ("..", "../other", "good/../../other"):
        with pytest.raises(InvalidPartitionKey):
            sources.source(key)
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("kb_sources", ["good", "../other"])
    result = tick(instance, sources, None)  # the bad key is skipped with a warning, the good one watched
    assert [r.partition_key for r in result.run_requests] == ["good"]
    resources = {**build_resources(), "sources": sources}
    run = materialize(
        [kb_passages], partition_key="../other", instance=instance, resources=resources, raise_on_error=False
    )
    assert not run.success
    failure = [e for e in run.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert "partition key '../other'" in str(failure.step_failure_data.error)


def test_a_run_that_would_remove_most_passages_of_a_source_is_refused(tmp_path, storage):
    """Seen: a source file truncated to 10 records ran green and deleted 1,737 of 1,754 passages."""
    from dagster import materialize

    from assets.knowledge.assets import kb_passages
    from orchestration.definitions import build_resources

    data = tmp_path / "data"
    rows = [(str(i), f"Passage {i}: drug {i} treats disease {i} in adults and children.") for i in range(40)]
    corpus(data / "mycorpus", "a.jsonl", rows)
    sources = SourcesResource(profile="smoke", data_dir=str(data))
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("kb_sources", ["mycorpus"])
    resources = {**build_resources(), "sources": sources}

    def run(config=None):
        cfg = {"ops": {"kb_passages": {"config": config}}} if config else None
        return materialize(
            [kb_passages],
            partition_key="mycorpus",
            instance=instance,
            resources=resources,
            run_config=cfg,
            raise_on_error=False,
        )

    assert run().success
    before = storage.read_table("kb_passages", "mycorpus").height
    corpus(data / "mycorpus", "a.jsonl", rows[:5])  # the file truncated
    refused = run()
    assert not refused.success
    [check] = [
        c for c in refused.get_asset_check_evaluations() if c.check_name == "kb_passages_no_mass_removal"
    ]
    meta = {k: v.value for k, v in check.metadata.items()}
    assert not check.passed and meta["published_before"] == before and meta["removed"] == before - 5
    assert storage.read_table("kb_passages", "mycorpus").height == before  # nothing removed
    assert storage.read_gate_record("kb_passages", "mycorpus")["status"] == "passed"  # still readable
    assert run({"allow_shrink": True}).success  # said to be intended: published
    assert storage.read_table("kb_passages", "mycorpus").height == 5


def test_a_vanished_source_is_named_not_silently_unwatched(tmp_path, clock):
    """Seen: a deleted source folder gave "no KB source changed (3 watched)" while its passages were
    served."""
    import shutil

    data = tmp_path / "data"
    corpus(data / "kept", "a.jsonl", [("1", "Aspirin inhibits cyclooxygenase.")])
    corpus(data / "gone", "a.jsonl", [("1", "Statins lower LDL cholesterol.")])
    sources = SourcesResource(profile="smoke", data_dir=str(data))
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("kb_sources", ["kept", "gone"])
    first = tick(instance, sources, None)
    shutil.rmtree(data / "gone")
    second = tick(instance, sources, first.cursor)
    assert not second.run_requests
    message = second.skip_reason.skip_message
    assert "no files in registered source(s) ['gone'] (passages still served)" in message
