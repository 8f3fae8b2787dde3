"""MedQA-USMLE, the JSON-lines release."""

from __future__ import annotations

import hashlib

from assets.common.records import ReadResult, SourceError
from storage.sources import SourceDir

from .common import LETTERS, RowProblem, collect, jsonl_rows, split_of_file
from .text_qa_row import make_mcq

LICENSE = "MIT"


def _qhash(text: str) -> str:
    return hashlib.sha1(text.strip().encode()).hexdigest()[:16]


def read_medqa(src: SourceDir, out: ReadResult | None = None) -> ReadResult:
    """MedQA-USMLE jsonl (``question, options{A..}, answer_idx``); split from the file name.

    Ids are a hash of the question text, so they survive reordering of the file.
    """
    files = src.glob("*.jsonl") or src.glob("**/*.jsonl")
    if not files:
        raise SourceError(
            src.root, "no MedQA .jsonl file found", "point the medqa source at the MedQA questions folder"
        )
    out = ReadResult() if out is None else out
    for rel in files:
        split = split_of_file(src, rel)
        for line_no, r in jsonl_rows(src, rel, out, "MedQA file"):

            def build(r=r, line_no=line_no, rel=rel, split=split):
                opts = r["options"]
                letters = sorted(opts)
                if letters != list(LETTERS[: len(letters)]):
                    raise RowProblem(f"option letters are not A.. in order: {letters}")
                return make_mcq(
                    item_id=f"medqa:{split}-{_qhash(r['question'])}",
                    dataset="medqa",
                    split=split,
                    question=r["question"],
                    options=[opts[k] for k in letters],
                    answer_label=r.get("answer_idx"),
                    subject=r.get("meta_info"),
                    source_ref=f"{rel}#L{line_no}",
                    license=LICENSE,
                )

            collect(out, src.path(rel), f"line {line_no}", r, build)
    return out
