"""The Dagster code location: every domain's definitions merged, with the resources they share."""

from __future__ import annotations

from dagster import Definitions

from assets.benchmark.definitions import defs as benchmark_defs
from assets.echo.definitions import defs as echo_defs
from assets.ingest.definitions import defs as ingest_defs
from assets.knowledge.definitions import defs as knowledge_defs

from .io_managers import ParquetTableIOManager
from .resources import KnowledgeModelsResource, SourcesResource, StorageResource

storage = StorageResource()

defs = Definitions.merge(
    ingest_defs,
    echo_defs,
    benchmark_defs,
    knowledge_defs,
    Definitions(
        resources={
            "storage": storage,
            "sources": SourcesResource(),
            "table_io": ParquetTableIOManager(storage=storage),
            "kb_models": KnowledgeModelsResource(),
        },
    ),
)
