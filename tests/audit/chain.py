"""The smallest real graph that ends in a checkpoint, materialized in-process: raw sample files (a tmp copy)
-> vqa_items[vqa_rad], text_qa_items[medqa, medmcqa] (-> split_use), echo_studies[synthetic] -> ecbench
-> stage1_items;
kb_passages[pubmedqa] -> kb_text_index; base_model (tiny); -> stage1_checkpoint (one GRPO step).

Used by tests/audit/test_audit.py; runnable as a script to time it: ``python -m tests.audit.chain <tmp>``."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from assets.common.profiles import SAMPLE_DATA_DIR
from training import smoke

DATASETS = ("vqa_rad", "medqa_us", "medmcqa", "pubmedqa", "medquad")
STAGE = smoke.ONE_STEP_STAGE


def copy_sample_data(dest: Path) -> Path:
    """A private copy of the bundled samples the chain reads (a test may change it; the repo's never)."""
    for name in DATASETS:
        shutil.copytree(SAMPLE_DATA_DIR / name, dest / name)
    return dest


def materialize_chain(instance, log=print) -> dict[str, float]:
    """Materialize the chain into ``instance`` with the code location's resources (from the environment:
    MEDRWR_DATA_DIR, MEDRWR_STORAGE_ROOT, ...); returns seconds per step."""
    from dagster import materialize

    from assets.benchmark.assets import ecbench
    from assets.echo.assets import echo_studies
    from assets.ingest.assets import text_qa_items, vqa_items
    from assets.knowledge.assets import kb_passages, kb_text_index
    from assets.training.assets import base_model, split_use, stage1_items
    from assets.training.stages import stage1_checkpoint
    from orchestration.definitions import build_resources

    every = [
        vqa_items,
        text_qa_items,
        echo_studies,
        ecbench,
        kb_passages,
        kb_text_index,
        base_model,
        split_use,
        stage1_items,
        stage1_checkpoint,
    ]
    instance.add_dynamic_partitions("echo_sources", ["synthetic"])
    instance.add_dynamic_partitions("kb_sources", ["pubmedqa"])
    steps = [
        ("vqa_items", vqa_items, "vqa_rad", None),
        ("text_qa_items", text_qa_items, "medqa", None),
        ("text_qa_items", text_qa_items, "medmcqa", None),
        ("echo_studies", echo_studies, "synthetic", None),
        ("ecbench", ecbench, None, None),
        ("kb_passages", kb_passages, "pubmedqa", {"max_records": 20}),
        ("kb_text_index", kb_text_index, None, None),
        ("base_model", base_model, None, None),
        ("split_use", split_use, None, None),
        ("stage1_items", stage1_items, None, {"limit": 4}),
        ("stage1_checkpoint", stage1_checkpoint, None, STAGE),
    ]
    times: dict[str, float] = {}
    for name, asset, partition, config in steps:
        started = time.time()
        result = materialize(
            every,
            selection=[asset],
            partition_key=partition,
            instance=instance,
            resources=build_resources(),
            raise_on_error=False,
            run_config={"ops": {name: {"config": config}}} if config else None,
        )
        label = f"{name}[{partition}]" if partition else name
        times[label] = round(time.time() - started, 1)
        log(f"{label}: {'ok' if result.success else 'FAILED'} in {times[label]}s")
        if not result.success:
            failures = [e.message for e in result.all_events if e.is_failure]
            raise RuntimeError(f"{label} failed: {failures}")
    return times


if __name__ == "__main__":  # timing: python -m tests.audit.chain /tmp/somewhere
    base = Path(sys.argv[1])
    base.mkdir(parents=True, exist_ok=True)
    os.environ.update(
        MEDRWR_PROJECT_DIR=str(base / "project"),
        MEDRWR_STORAGE_ROOT=str(base / "project" / "storage"),
        DAGSTER_HOME=str(base / "dagster_home"),
        HF_HUB_OFFLINE="1",
        GX_ANALYTICS_ENABLED="false",
        MEDRWR_DATA_DIR=str(copy_sample_data(base / "data")),
        MEDRWR_WORK_DIR=str(base / "work"),
    )
    from orchestration.instance import ensure_dagster_home

    ensure_dagster_home()
    from dagster import DagsterInstance

    print(materialize_chain(DagsterInstance.get()))
