"""Benchmark group: ECBench, multiple-choice items built from the de-identified echo studies.

The items, their manifest and the versioned copy are computed and checked before anything is published
(:mod:`assets.common.gates`).
"""

import io

from dagster import (
    AllPartitionMapping,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    Config,
    MetadataValue,
    asset,
)
from pydantic import Field

from assets.common.gates import Publication, publish_or_refuse
from assets.common.metadata import content_version, table_metadata
from assets.common.records import quarantine_frame
from assets.common.resources import StorageResource
from quality.contracts import all_refs

from . import ecbench as eb


class EcbenchConfig(Config):
    """Run knobs of ``ecbench``."""

    seed: int = Field(default=0, description="seed of the distractor order and the split assignment")


def _check(name: str, passed: bool, **metadata) -> AssetCheckResult:
    return AssetCheckResult(
        check_name=name,
        passed=passed,
        severity=AssetCheckSeverity.ERROR,
        metadata={k: MetadataValue.json(v) if isinstance(v, list | dict) else v for k, v in metadata.items()},
    )


@asset(
    group_name="benchmark",
    code_version="ecbench.v2",
    io_manager_key="table_io",
    kinds={"polars", "parquet"},
    ins={"echo_studies": AssetIn(partition_mapping=AllPartitionMapping())},
    check_specs=[
        AssetCheckSpec(
            "ecbench_not_empty",
            asset="ecbench",
            blocking=True,
            description="at least one item per question type that the studies can support",
        ),
        AssetCheckSpec(
            "ecbench_balanced_answers",
            asset="ecbench",
            blocking=True,
            description="answer letters differ by at most one per question type",
        ),
        AssetCheckSpec(
            "ecbench_patient_splits",
            asset="ecbench",
            blocking=True,
            description="no patient appears in two splits",
        ),
        AssetCheckSpec(
            "ecbench_image_refs",
            asset="ecbench",
            blocking=True,
            description="every item has keyframe images and every one resolves in storage",
        ),
        AssetCheckSpec(
            "ecbench_no_duplicates",
            asset="ecbench",
            blocking=True,
            description="no repeated item id and no repeated (question, options, images)",
        ),
    ],
)
def ecbench(context: AssetExecutionContext, config: EcbenchConfig, storage: StorageResource, echo_studies):
    """4-option echo MCQs (EF category, LV dilation, wall thickness, view), versioned by content hash."""
    store = storage.get()
    items = eb.build_items(echo_studies, seed=config.seed)
    manifest = eb.manifest(
        items, config.seed, content_version(echo_studies) if echo_studies.height else "empty"
    )
    version = manifest["version"]
    with store.staging(f"{context.run.run_id}-ecbench") as stage:  # discarded in a finally if the step fails
        stage.write_bytes(eb.manifest_json(manifest), "benchmarks", "ecbench", version, "manifest.json")
        buf = io.BytesIO()
        items.write_parquet(buf)
        stage.write_bytes(buf.getvalue(), *store.table_parts("ecbench_versions", version))
        balanced, per = eb.check_balanced(items)
        crossing = eb.patients_in_several_splits(items)
        missing = eb.unresolvable_refs(items, store.existing_images(all_refs(items["image_refs"])))
        dups = eb.duplicate_items(items)
        checks = [
            _check("ecbench_not_empty", items.height > 0, items=items.height, studies=echo_studies.height),
            _check("ecbench_balanced_answers", balanced, per_type=per),
            _check("ecbench_patient_splits", not crossing, patients_in_several_splits=len(crossing)),
            _check("ecbench_image_refs", not missing, unresolvable_items=missing[:20]),
            _check("ecbench_no_duplicates", not dups, duplicate_items=dups[:20]),
        ]
        pub = Publication(
            "ecbench",
            None,
            items,
            quarantine_frame([], "ecbench", None),
            metadata={
                **table_metadata(items, ("question_type", "split", "answer_label")),
                "version": version,
                "manifest_path": store.uri("benchmarks", "ecbench", version, "manifest.json"),
                "counts_by_type_and_split": MetadataValue.json(eb._counts(items, "question_type", "split")),
                "guideline": eb.GUIDELINE,
            },
            data_version=version,
            stage=stage,
        )
        yield from publish_or_refuse(context, store, pub, checks)
