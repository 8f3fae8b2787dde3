"""The paper's published accuracies (docs/method.md §7), transcribed exactly for the report's reference table.

These are other models (7B models trained and evaluated by the paper's authors) on the paper's own
benchmark builds; the paper's ECBench (824 book MCQs, never released) is not this project's ECBench
(built from DICOM clips). The report prints them in a separate section, never in a table with our scores.
Values are kept as the strings the paper printed ("-" where it gave none).
"""

from __future__ import annotations

PAPER_SOURCE = (
    "Wang, Qin, Yang, Li. Proactive Reasoning-with-Retrieval Framework for Medical Multimodal Large Language "
    "Models. arXiv 2510.18303 (2025): main results and classic VQA, as transcribed in docs/method.md §7"
)

PAPER_NUMBERS: dict = {
    "source": PAPER_SOURCE,
    "tables": [
        {
            "title": "Main results (accuracy, %)",
            "columns": ["model", "MedXpertQA-MM", "MMMU-H&M", "MMMU-Pro 4 opt", "MMMU-Pro 10 opt", "ECBench"],
            "rows": [
                ["Med-RwR + CDIR", "27.5", "66.2", "52.8", "44.1", "51.9"],
                ["Med-RwR", "27.2", "65.5", "52.5", "43.7", "51.1"],
                ["Lingshu-7B", "26.7", "54.0", "50.0", "37.1", "44.6"],
                ["MMSearch-R1 (same KB)", "22.6", "56.6", "43.4", "26.9", "41.1"],
                ["Qwen2.5-VL-7B base", "22.4", "56.5", "-", "31.8", "40.4"],
            ],
        },
        {
            "title": "Classic VQA, base → Med-RwR, no training on their splits (accuracy, %)",
            "columns": ["model", "SLAKE", "VQA-RAD", "PathVQA", "PMC-VQA", "OmniMedVQA"],
            "rows": [
                ["Qwen2.5-VL-7B base", "74.0", "73.1", "64.8", "53.0", "63.9"],
                ["Med-RwR", "75.5", "75.4", "69.9", "53.5", "73.1"],
            ],
        },
    ],
    "notes": [
        "Different models, different benchmark builds and protocols: "
        "not comparable with this report's scores.",
        "The paper's ECBench is 824 echocardiography MCQs from three practice books (never released); this "
        "project's ECBench is built from DICOM clips and their measurements.",
        "Closed questions turned into MCQs are the common protocol for the classic VQA sets; "
        "full-set scoring "
        "with open answers is another, and the two do not mix in one table.",
    ],
}


PAPER_BENCHMARKS: dict[str, str] = {
    "medxpertqa_mm": "MedXpertQA-MM",
    "mmmu_hm": "MMMU Health & Medicine",
    "ecbench": "ECBench (the paper's is another build)",
    "slake": "SLAKE",
    "vqa_rad": "VQA-RAD",
    "path_vqa": "PathVQA",
    "pmc_vqa": "PMC-VQA",
    "omnimedvqa": "OmniMedVQA",
}
"""The benchmarks of the paper's result tables, by this project's benchmark partition name (MMMU-Pro has no
reader here)."""
