"""MedMCQA, the JSON-lines release."""

from __future__ import annotations

from assets.common.records import ReadResult, SourceError
from storage.sources import SourceDir

from .common import LETTERS, RowProblem, as_text, collect, jsonl_rows, split_of_file
from .text_qa_row import make_mcq

LICENSE = "MIT"


def read_medmcqa(src: SourceDir, out: ReadResult | None = None) -> ReadResult:
    """MedMCQA jsonl (``train.json``, ``dev.json``, ``test.json``): ``opa..opd``, 1-based ``cop``, ``exp``."""
    files = [f for f in ("train.json", "dev.json", "test.json") if src.exists(f)]
    if not files:
        raise SourceError(
            src.root,
            "no MedMCQA file (train.json, dev.json, test.json) found",
            "point the medmcqa source at the MedMCQA data folder",
        )
    out = ReadResult() if out is None else out
    for rel in files:
        split = split_of_file(src, rel)
        for line_no, r in jsonl_rows(src, rel, out, "MedMCQA file"):

            def build(r=r, line_no=line_no, rel=rel, split=split):
                cop = r.get("cop")
                if not isinstance(cop, int) or not 1 <= cop <= 4:
                    raise RowProblem(f"answer letter outside the options: cop={cop!r} (expected 1..4)")
                return make_mcq(
                    item_id=f"medmcqa:{as_text(r['id'])}",
                    dataset="medmcqa",
                    split=split,
                    question=r["question"],
                    options=[r["opa"], r["opb"], r["opc"], r["opd"]],
                    answer_label=LETTERS[cop - 1],
                    explanation=r.get("exp"),
                    subject=r.get("subject_name"),
                    source_ref=f"{rel}#L{line_no}",
                    license=LICENSE,
                )

            collect(out, src.path(rel), f"line {line_no}", r, build)
    return out
