"""PubMedQA, the expert-labelled PQA-L release."""

from __future__ import annotations

from assets.common.records import ReadResult, SourceError
from storage.sources import SourceDir

from .common import LETTERS, RowProblem, as_text, collect
from .text_qa_row import make_mcq

LICENSE = "MIT"
PUBMEDQA_OPTIONS = ["yes", "no", "maybe"]


def read_pubmedqa(src: SourceDir, out: ReadResult | None = None) -> ReadResult:
    """PubMedQA PQA-L ``ori_pqal.json``; the PMIDs in ``test_ground_truth.json`` form the test split.

    The abstract goes to ``context`` and the long answer to ``explanation``.
    """
    data = src.load_json("ori_pqal.json", "PubMedQA annotation file")
    if not isinstance(data, dict):
        raise SourceError(
            src.path("ori_pqal.json"), "expected an object keyed by PMID", "use the released ori_pqal.json"
        )
    test_ids = set(src.load_json("test_ground_truth.json")) if src.exists("test_ground_truth.json") else set()
    out = ReadResult() if out is None else out
    for pmid, r in data.items():

        def build(pmid=pmid, r=r):
            decision = as_text(r.get("final_decision")).lower()
            if decision not in PUBMEDQA_OPTIONS:
                raise RowProblem(f"answer letter outside the options: final_decision={decision!r}")
            return make_mcq(
                item_id=f"pubmedqa:{pmid}",
                dataset="pubmedqa",
                split="test" if pmid in test_ids else "train",
                question=r["QUESTION"],
                context=" ".join(r.get("CONTEXTS") or []),
                options=PUBMEDQA_OPTIONS,
                answer_label=LETTERS[PUBMEDQA_OPTIONS.index(decision)],
                explanation=r.get("LONG_ANSWER"),
                subject=", ".join(r.get("MESHES") or []) or None,
                source_ref=f"ori_pqal.json#{pmid}",
                license=LICENSE,
            )

        collect(out, src.path("ori_pqal.json"), pmid, r, build)
    return out
