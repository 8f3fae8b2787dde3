"""The Dagster code location: every asset, check, job and resource of the pipeline."""

from __future__ import annotations

from dagster import Definitions, load_assets_from_modules

from assets import benchmark, echo, ingest, knowledge

from .io_managers import ParquetTableIOManager
from .jobs import JOBS
from .kb_resources import KnowledgeModelsResource
from .resources import SourcesResource, StorageResource

storage = StorageResource()

defs = Definitions(
    assets=load_assets_from_modules([ingest, echo, benchmark, knowledge]),
    jobs=JOBS,
    resources={
        "storage": storage,
        "sources": SourcesResource(),
        "table_io": ParquetTableIOManager(storage=storage),
        "kb_models": KnowledgeModelsResource(),
    },
)
