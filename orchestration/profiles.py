"""Profiles: where each dataset's released files are read from, and how big a run is.

``smoke`` (the embedded default) reads the small real samples bundled in ``assets/sample_data``.
``full`` reads every dataset from ``$MEDRWR_DATA_DIR`` (one folder per dataset in its released layout,
local or ``s3://``). Any dataset can be pointed elsewhere with ``MEDRWR_SOURCE_<DATASET>``
(for example ``MEDRWR_SOURCE_PATH_VQA=s3://raw/pathvqa``). Plain Python, no Dagster import.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

ENV_PROFILE = "MEDRWR_PROFILE"
ENV_DATA_DIR = "MEDRWR_DATA_DIR"

SAMPLE_DATA_DIR = Path(__file__).resolve().parents[1] / "assets" / "sample_data"

# Folder name of each dataset inside a data directory (matches the layout of ../shared/data).
DATASET_FOLDERS = {
    "vqa_rad": "vqa_rad",
    "slake": "slake",
    "path_vqa": "path_vqa",
    "pmc_vqa": "pmc_vqa",
    "omnimedvqa": "omnimedvqa",
    "mmmu_hm": "mmmu",
    "medxpertqa_mm": "medxpertqa",
    "medqa": "medqa_us",
    "medmcqa": "medmcqa",
    "pubmedqa": "pubmedqa",
    "mcq_custom": "mcq_custom",
    "medquad": "medquad",
    "slake_kg": "slake",  # knowledge-base sources read from their dataset's folder
    "medmcqa_exp": "medmcqa",
}

# Knowledge-base sources (dynamic partitions of kb_passages); any other key is a MedRAG-style corpus folder.
KB_SOURCES = ("medquad", "pubmedqa", "slake_kg", "medmcqa_exp")


@dataclass(frozen=True)
class Profile:
    """A named run size: its data directory and which datasets its main job materializes."""

    name: str
    data_dir: str
    vqa_datasets: tuple[str, ...]
    text_qa_datasets: tuple[str, ...]
    description: str
    echo_sources: tuple[str, ...] = ("synthetic",)
    kb_sources: tuple[str, ...] = KB_SOURCES
    kb_max_records: int | None = None  # records read per KB source (None: all)

    @property
    def kb_record_limit(self) -> int | None:
        """``MEDRWR_KB_MAX_RECORDS`` (0 = no limit) or the profile's ``kb_max_records``."""
        env = os.environ.get("MEDRWR_KB_MAX_RECORDS")
        if env is not None:
            return int(env) or None
        return self.kb_max_records

    def source_uri(self, dataset: str) -> str:
        """Where ``dataset``'s released files live: ``MEDRWR_SOURCE_<DATASET>`` or ``<data_dir>/<folder>``."""
        override = os.environ.get(f"MEDRWR_SOURCE_{dataset.upper()}")
        if override:
            return override
        return posixpath.join(self.data_dir, DATASET_FOLDERS.get(dataset, dataset))

    def echo_source_uri(self, key: str) -> str:
        """Folder of echo source ``key`` (partition of ``echo_studies``): ``MEDRWR_SOURCE_ECHO_<KEY>`` or
        ``<data_dir>/echo/<key>``. The key ``synthetic`` is generated into storage unless overridden."""
        return os.environ.get(f"MEDRWR_SOURCE_ECHO_{key.upper()}") or posixpath.join(self.data_dir, "echo", key)


def get_profile(name: str | None = None) -> Profile:
    """The profile named ``name`` (default ``$MEDRWR_PROFILE`` or ``smoke``)."""
    name = name or os.environ.get(ENV_PROFILE) or "smoke"
    if name == "smoke":
        return Profile(
            name="smoke",
            data_dir=os.environ.get(ENV_DATA_DIR) or str(SAMPLE_DATA_DIR),
            vqa_datasets=("vqa_rad", "slake"),
            text_qa_datasets=("medqa", "medmcqa", "pubmedqa"),
            description="small real samples bundled with the code; the whole graph on a laptop in minutes",
            kb_max_records=120,
        )
    if name == "full":
        data_dir = os.environ.get(ENV_DATA_DIR)
        if not data_dir:
            raise ValueError(f"profile 'full' needs {ENV_DATA_DIR} (a folder or s3:// prefix with one folder per dataset)")
        datasets = os.environ.get("MEDRWR_VQA_DATASETS", "vqa_rad,slake")
        text = os.environ.get("MEDRWR_TEXT_QA_DATASETS", "medqa,medmcqa,pubmedqa")
        return Profile(
            name="full",
            data_dir=data_dir,
            vqa_datasets=tuple(d for d in datasets.split(",") if d),
            text_qa_datasets=tuple(d for d in text.split(",") if d),
            echo_sources=tuple(d for d in os.environ.get("MEDRWR_ECHO_SOURCES", "synthetic").split(",") if d),
            description="every configured dataset in full, production models",
            kb_sources=tuple(s for s in os.environ.get("MEDRWR_KB_SOURCES", ",".join(KB_SOURCES)).split(",") if s),
        )
    raise ValueError(f"unknown profile {name!r}: use 'smoke' or 'full'")
