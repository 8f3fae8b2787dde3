"""The VQA reader registry: dataset name -> the reader of its released layout (``vqa_items`` rows).

Each reader (one module per dataset under :mod:`assets.ingest.readers`) takes the dataset's folder as
released (:class:`SourceDir`, local or S3) and an :class:`ImageIngestor`, and returns a
:class:`ReadResult`: normalized rows plus quarantined rows. Whole-file problems raise
:class:`SourceError`. Adding a dataset: a reader module and one line in :data:`READERS`.
Pure functions: no Dagster here.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from assets.common.images import ImageIngestor
from assets.common.records import ReadResult
from storage.sources import SourceDir

from .readers import medxpertqa_mm, mmmu_hm, omnimedvqa, path_vqa, pmc_vqa, slake, vqa_rad
from .readers.common import dedupe, to_frame
from .readers.vqa_row import VQA_SCHEMA

READERS: dict[str, Callable[[SourceDir, ImageIngestor], ReadResult]] = {
    "vqa_rad": vqa_rad.read_vqa_rad,
    "slake": slake.read_slake,
    "path_vqa": path_vqa.read_path_vqa,
    "pmc_vqa": pmc_vqa.read_pmc_vqa,
    "omnimedvqa": omnimedvqa.read_omnimedvqa,
    "mmmu_hm": mmmu_hm.read_mmmu_hm,
    "medxpertqa_mm": medxpertqa_mm.read_medxpertqa_mm,
}
VQA_DATASETS = tuple(READERS)  # the partitions of vqa_items, in this order


def read_vqa(dataset: str, src: SourceDir, images: ImageIngestor) -> tuple[pl.DataFrame, ReadResult]:
    """Read one dataset in its released layout: the normalized table and the full read result."""
    if dataset not in READERS:
        raise ValueError(f"unknown VQA dataset {dataset!r}; known: {', '.join(READERS)}")
    result = dedupe(READERS[dataset](src, images))
    return to_frame(result.rows, VQA_SCHEMA), result
