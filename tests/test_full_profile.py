"""The ``full`` profile evaluates every benchmark whose data folder is present (the paper's headline
MedXpertQA-MM and MMMU Health & Medicine included when they are there), and ingests every dataset present;
explicit variables still win."""

from __future__ import annotations

import pytest

from assets.common.profiles import (
    BENCHMARK_DATASETS,
    DATASET_FOLDERS,
    TEXT_QA_DATASETS,
    VQA_DATASETS,
    get_profile,
)

pytestmark = pytest.mark.timeout(60)


def test_the_lists_match_the_readers_and_the_benchmark_partitions():
    from assets.evaluation.assets import BENCHMARKS
    from assets.ingest.text_qa import READERS as TEXT_READERS
    from assets.ingest.vqa import READERS as VQA_READERS

    assert set(BENCHMARK_DATASETS) == set(BENCHMARKS)
    assert set(VQA_DATASETS) == set(VQA_READERS)
    assert set(TEXT_QA_DATASETS) <= set(TEXT_READERS)
    assert all(d in DATASET_FOLDERS for d in (*VQA_DATASETS, *TEXT_QA_DATASETS))


def test_full_evaluates_every_benchmark_whose_folder_is_present(tmp_path):
    for dataset in ("vqa_rad", "slake", "mmmu_hm", "medqa", "medmcqa"):
        (tmp_path / DATASET_FOLDERS[dataset]).mkdir()
    profile = get_profile("full", {"MEDRWR_DATA_DIR": str(tmp_path)})
    assert profile.vqa_datasets == ("vqa_rad", "slake", "mmmu_hm")
    assert profile.text_qa_datasets == ("medqa", "medmcqa")
    assert profile.benchmarks == ("vqa_rad", "slake", "medqa", "ecbench", "mmmu_hm")
    (tmp_path / DATASET_FOLDERS["medxpertqa_mm"]).mkdir()
    assert "medxpertqa_mm" in get_profile("full", {"MEDRWR_DATA_DIR": str(tmp_path)}).benchmarks


def test_explicit_lists_win(tmp_path):
    (tmp_path / "mmmu").mkdir()
    env = {
        "MEDRWR_DATA_DIR": str(tmp_path),
        "MEDRWR_VQA_DATASETS": "vqa_rad",
        "MEDRWR_TEXT_QA_DATASETS": "medqa",
        "MEDRWR_BENCHMARKS": "vqa_rad,ecbench",
    }
    profile = get_profile("full", env)
    assert profile.vqa_datasets == ("vqa_rad",) and profile.benchmarks == ("vqa_rad", "ecbench")
