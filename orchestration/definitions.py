"""The Dagster code location: every domain's definitions merged, with the resources they share.

Resources are fed by environment variables through ``EnvVar`` where set (:mod:`assets.common.settings`
lists every variable and its default). :func:`build_defs` builds them from the current environment; the
module-level ``defs`` is what ``workspace.yaml`` loads.
"""

from __future__ import annotations

from dagster import Definitions, PipesSubprocessClient

from assets.benchmark.definitions import defs as benchmark_defs
from assets.common.io_managers import ParquetTableIOManager
from assets.common.resources import (
    DeidResource,
    KnowledgeModelsResource,
    SourcesResource,
    StorageResource,
    TrainingResource,
)
from assets.common.settings import env_or, source_overrides
from assets.echo.definitions import defs as echo_defs
from assets.evaluation.definitions import defs as evaluation_defs
from assets.ingest.definitions import defs as ingest_defs
from assets.knowledge.definitions import defs as knowledge_defs
from assets.training.definitions import defs as training_defs

from .schedules import SCHEDULES


def build_resources() -> dict:
    """The resources of the code location, from the environment (``EnvVar`` where a variable is set)."""
    storage = StorageResource(
        root=env_or("MEDRWR_STORAGE_ROOT"), s3_endpoint_url=env_or("MEDRWR_S3_ENDPOINT_URL")
    )
    return {
        "storage": storage,
        "sources": SourcesResource(
            profile=env_or("MEDRWR_PROFILE", "smoke"),
            data_dir=env_or("MEDRWR_DATA_DIR"),
            overrides=source_overrides(),
            s3_endpoint_url=env_or("MEDRWR_S3_ENDPOINT_URL"),
        ),
        "deid": DeidResource(
            salt=env_or("MEDRWR_DEID_SALT"), restricted_root=env_or("MEDRWR_RESTRICTED_ROOT")
        ),
        "table_io": ParquetTableIOManager(storage=storage),
        "kb_models": KnowledgeModelsResource(
            text_model=env_or(
                "MEDRWR_TEXT_EMBEDDER", KnowledgeModelsResource.model_fields["text_model"].default
            ),
            image_model=env_or(
                "MEDRWR_IMAGE_EMBEDDER", KnowledgeModelsResource.model_fields["image_model"].default
            ),
            device=env_or("MEDRWR_DEVICE"),
        ),
        "training": TrainingResource(
            base_model=env_or("MEDRWR_BASE_MODEL", TrainingResource.model_fields["base_model"].default),
            launcher=env_or("MEDRWR_TRAIN_LAUNCHER", "subprocess"),
            accelerate_config=env_or("MEDRWR_ACCELERATE_CONFIG"),
            work_dir=env_or("MEDRWR_WORK_DIR"),
            trainer_image=env_or("MEDRWR_TRAINER_IMAGE"),
            k8s_namespace=env_or("MEDRWR_K8S_NAMESPACE", "medrwr"),
        ),
        "pipes_subprocess_client": PipesSubprocessClient(),
    }


def build_defs() -> Definitions:
    """Every domain's definitions (assets, jobs, sensors) merged with the schedules and
    :func:`build_resources`."""
    return Definitions.merge(
        ingest_defs,
        echo_defs,
        benchmark_defs,
        knowledge_defs,
        training_defs,
        evaluation_defs,
        Definitions(schedules=SCHEDULES, resources=build_resources()),
    )


defs = build_defs()
