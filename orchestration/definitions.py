"""The Dagster code location: every asset, check, job and resource of the pipeline."""

from __future__ import annotations

from dagster import Definitions, load_assets_from_modules

from assets import benchmark, echo, ingest

from .io_managers import ParquetTableIOManager
from .jobs import JOBS
from .resources import SourcesResource, StorageResource

storage = StorageResource()

defs = Definitions(
    assets=load_assets_from_modules([ingest, echo, benchmark]),
    jobs=JOBS,
    resources={
        "storage": storage,
        "sources": SourcesResource(),
        "table_io": ParquetTableIOManager(storage=storage),
    },
)
