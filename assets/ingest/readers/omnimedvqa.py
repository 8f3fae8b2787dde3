"""OmniMedVQA: an evaluation benchmark without splits."""

from __future__ import annotations

from assets.common.images import ImageIngestor
from assets.common.records import ReadResult, SourceError
from storage.sources import SourceDir

from .common import LETTERS, RowProblem, as_text, collect, expect_list
from .vqa_row import make_item

LICENSE = "CC-BY-NC-SA-4.0"


def read_omnimedvqa(src: SourceDir, images: ImageIngestor) -> ReadResult:
    """OmniMedVQA: ``QA_information/{Open-access,Restricted-access}/*.json`` with paths under ``Images/``.

    OmniMedVQA is an evaluation benchmark without splits: every item is ``test``.
    """
    files = src.glob("QA_information/*/*.json")
    if not files:
        raise SourceError(
            src.root,
            "no QA_information/*/*.json found",
            "point the omnimedvqa source at the OmniMedVQA folder",
        )
    out = ReadResult()
    for rel in files:
        records = expect_list(src.load_json(rel, "OmniMedVQA QA file"), src.path(rel))
        for i, r in enumerate(records):

            def build(r=r, i=i, rel=rel):
                options = [as_text(r[f"option_{c}"]) for c in "ABCDEFGH" if as_text(r.get(f"option_{c}"))]
                gt = as_text(r["gt_answer"])
                if gt not in options:
                    raise RowProblem(f"answer not among the options: {gt!r} not in {options}")
                return make_item(
                    item_id=f"omnimedvqa:{as_text(r['question_id'])}",
                    dataset="omnimedvqa",
                    split="test",
                    image_refs=[images.from_source(src, as_text(r["image_path"]).removeprefix("./"))],
                    question=r["question"],
                    answer=gt,
                    options=options,
                    answer_label=LETTERS[options.index(gt)],
                    modality=r.get("modality_type") or r.get("modality"),
                    question_type=r.get("question_type"),
                    source_ref=f"{rel}#{i}",
                    license=LICENSE,
                )

            collect(out, src.path(rel), str(i), r, build)
    return out
