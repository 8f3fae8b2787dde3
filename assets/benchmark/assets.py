"""Benchmark group: ECBench, multiple-choice items built from the de-identified echo studies."""

import os

from dagster import (
    AllPartitionMapping,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    MetadataValue,
    Output,
    asset,
)

from assets.benchmark import ecbench as eb
from assets.common.metadata import content_version, data_version, table_metadata
from orchestration.resources import StorageResource
from quality.contracts import all_refs


def _check(name: str, passed: bool, **metadata) -> AssetCheckResult:
    return AssetCheckResult(check_name=name, passed=passed, severity=AssetCheckSeverity.ERROR,
                            metadata={k: MetadataValue.json(v) if isinstance(v, list | dict) else v
                                      for k, v in metadata.items()})


@asset(
    group_name="benchmark",
    code_version="ecbench.v1",
    io_manager_key="table_io",
    kinds={"polars", "parquet"},
    ins={"echo_studies": AssetIn(partition_mapping=AllPartitionMapping())},
    check_specs=[
        AssetCheckSpec("ecbench_balanced_answers", asset="ecbench", blocking=True,
                       description="answer letters differ by at most one per question type"),
        AssetCheckSpec("ecbench_patient_splits", asset="ecbench", blocking=True,
                       description="no patient appears in two splits"),
        AssetCheckSpec("ecbench_image_refs", asset="ecbench", blocking=True,
                       description="every item has keyframe images and every one resolves in storage"),
        AssetCheckSpec("ecbench_no_duplicates", asset="ecbench", blocking=True,
                       description="no repeated item id and no repeated (question, options, images)"),
    ],
)
def ecbench(context: AssetExecutionContext, storage: StorageResource, echo_studies):
    """4-option echo MCQs (EF category, LV dilation, wall thickness, view), versioned by content hash."""
    store = storage.get()
    seed = int(os.environ.get("MEDRWR_ECBENCH_SEED", "0"))
    items = eb.build_items(echo_studies, seed=seed)
    manifest = eb.manifest(items, seed, content_version(echo_studies) if echo_studies.height else "empty")
    version = manifest["version"]
    manifest_uri = store.write_bytes(eb.manifest_json(manifest), "benchmarks", "ecbench", version, "manifest.json")
    store.write_table(items, "ecbench_versions", version)
    context.log.info(f"ecbench {version}: {items.height} items, manifest at {manifest_uri}")
    yield Output(
        items,
        data_version=data_version(items),
        metadata={
            **table_metadata(items, ("question_type", "split", "answer_label")),
            "version": version,
            "manifest_path": manifest_uri,
            "counts_by_type_and_split": MetadataValue.json(eb._counts(items, "question_type", "split")),
            "guideline": eb.GUIDELINE,
        },
    )
    balanced, per = eb.check_balanced(items)
    yield _check("ecbench_balanced_answers", balanced, per_type=per)
    crossing = eb.patients_in_several_splits(items)
    yield _check("ecbench_patient_splits", not crossing, patients_in_several_splits=len(crossing))
    missing = eb.unresolvable_refs(items, store.existing_images(all_refs(items["image_refs"])))
    yield _check("ecbench_image_refs", not missing, unresolvable_items=missing[:20])
    dups = eb.duplicate_items(items)
    yield _check("ecbench_no_duplicates", not dups, duplicate_items=dups[:20])
