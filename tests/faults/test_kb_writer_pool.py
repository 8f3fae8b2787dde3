"""Concurrent knowledge-base writers take turns: the ``kb_writer`` pool and the KB's writer lock.

Two runs that both sync ``kb_text_index`` start at the same time against one Dagster instance (SQLite on disk,
the pool limit 1 as in ``deploy/dagster.yaml``). Their writes must never overlap: both succeed and the LanceDB
table carries both runs' tags. The pool usually makes the second step wait; but Dagster's SQLite storage does
not claim a slot atomically across processes (both workers sometimes hold the one slot: CI once failed here
with "Table ... already exists"), so the writer lock (:func:`retrieval.store.writer_lock`) is what this test
asserts on: the windows in which each run held it, from the run's own log.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance, materialize

from assets.knowledge.assets import kb_passages, kb_text_index
from orchestration.definitions import build_resources
from retrieval.pointers import KbPointer
from storage.root import Storage

REPO = Path(__file__).resolve().parents[2]
# one run worker: materialize kb_text_index on the instance under DAGSTER_HOME and print the run id
WRITER = """
from dagster import DagsterInstance, materialize
from assets.knowledge.assets import kb_passages, kb_text_index
from orchestration.definitions import build_resources
result = materialize([kb_passages, kb_text_index], selection=[kb_text_index], instance=DagsterInstance.get(),
                     resources=build_resources())
print(result.run_id)
"""
INSTANCE_YAML = """
telemetry:
  enabled: false
concurrency:
  pools:
    default_limit: 1
    granularity: op
"""


HELD = re.compile(r"kb writer lock .* held from ([0-9.]+) to ([0-9.]+)")


def _lock_window(instance: DagsterInstance, run_id: str) -> tuple[float, float]:
    """When the run's kb_text_index step held the writer lock (times taken while it held it)."""
    held = [HELD.search(e.user_message) for e in instance.all_logs(run_id) if not e.is_dagster_event]
    (window,) = [tuple(map(float, m.groups())) for m in held if m]
    return window


def _step_end(instance: DagsterInstance, run_id: str, step: str) -> float:
    return next(
        e.timestamp
        for e in instance.all_logs(run_id)
        if e.is_dagster_event
        and e.dagster_event.step_key == step
        and e.dagster_event_type == DagsterEventType.STEP_SUCCESS
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_concurrent_kb_writers_are_serialized_by_the_pool(tmp_path):
    home = Path(tmp_path / "dagster_home")
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    instance = DagsterInstance.from_config(str(home))
    instance.add_dynamic_partitions("kb_sources", ["pubmedqa"])
    config = {"ops": {"kb_passages": {"config": {"max_records": 20}}}}
    assert materialize(
        [kb_passages, kb_text_index],
        selection=[kb_passages],
        partition_key="pubmedqa",
        instance=instance,
        resources=build_resources(),
        run_config=config,
    ).success

    # the pool's slots exist before the first claim, as after `dagster instance concurrency set kb_writer 1`
    # (docs/deploy.md): two workers racing to initialize a pool lazily could each create a slot
    instance.event_log_storage.set_concurrency_slots("kb_writer", 1)
    assert instance.event_log_storage.get_concurrency_info("kb_writer").slot_count == 1
    # two run workers, as the daemon would start them: separate processes on the same instance and storage
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    run_ids = [out.strip().splitlines()[-1] for out, _ in outs]
    results = {r: instance.get_run_by_id(r) for r in run_ids}
    assert all(run.is_success for run in results.values()), {r: run.status for r, run in results.items()}

    windows = sorted(_lock_window(instance, r) for r in run_ids)
    (_, end_1), (start_2, _) = windows
    assert end_1 <= start_2, f"the two writers wrote at the same time: {windows}"
    # both runs were under way before the first writer finished: the second one had to wait (pool or lock)
    run_starts = [min(e.timestamp for e in instance.all_logs(r)) for r in run_ids]
    assert max(run_starts) < min(_step_end(instance, r, "kb_text_index") for r in run_ids)
    assert instance.event_log_storage.get_concurrency_info("kb_writer").slot_count == 1

    pointer = KbPointer.from_row(Storage().read_table("kb_text_index"))
    tbl = Storage().kb_location().connect().open_table(pointer.physical_table)
    tags = set(tbl.tags.list())
    assert {f"run-{r}" for r in run_ids} <= tags
