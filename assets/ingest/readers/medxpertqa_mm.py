"""MedXpertQA, its multimodal (MM) subset."""

from __future__ import annotations

from assets.common.images import ImageIngestor
from assets.common.records import ReadResult, Rejection, SourceError
from storage.sources import SourceDir

from .common import LETTERS, RowProblem, as_text, collect
from .vqa_row import make_item

LICENSE = "MIT"


def read_medxpertqa_mm(src: SourceDir, images: ImageIngestor) -> ReadResult:
    """MedXpertQA multimodal subset: ``MM/{dev,test}.jsonl`` (id, question, options{A..E}, label, images)
    with image files under ``images/``."""
    files = [f for f in ("MM/dev.jsonl", "MM/test.jsonl", "dev.jsonl", "test.jsonl") if src.exists(f)]
    if not files:
        raise SourceError(
            src.root,
            "no MedXpertQA MM file (MM/test.jsonl, MM/dev.jsonl) found",
            "point the medxpertqa_mm source at the MedXpertQA folder",
        )
    image_dir = "images" if src.exists("images") else "MM/images"
    out = ReadResult()
    for rel in files:
        split = "validation" if rel.endswith("dev.jsonl") else "test"
        for line_no, r, err in src.iter_jsonl(rel, "MedXpertQA MM file"):
            if err:
                out.rejected.append(Rejection(src.path(rel), f"line {line_no}", err, raw=r))
                continue

            def build(r=r, line_no=line_no, split=split, rel=rel):
                opts = r["options"]
                letters = sorted(opts) if isinstance(opts, dict) else LETTERS[: len(opts)]
                options = [opts[k] for k in letters] if isinstance(opts, dict) else list(opts)
                if list(letters) != list(LETTERS[: len(options)]):
                    raise RowProblem(f"option letters are not A.. in order: {list(letters)}")
                return make_item(
                    item_id=f"medxpertqa_mm:{as_text(r['id'])}",
                    dataset="medxpertqa_mm",
                    split=split,
                    image_refs=[
                        images.from_source(src, f"{image_dir}/{as_text(n)}") for n in r.get("images") or []
                    ]
                    or _no_image(),
                    question=r["question"],
                    answer=None,
                    options=options,
                    answer_label=r["label"],
                    answer_type="closed",
                    organ=r.get("body_system"),
                    question_type=r.get("medical_task"),
                    source_ref=f"{rel}#L{line_no}",
                    license=LICENSE,
                )

            collect(out, src.path(rel), f"line {line_no}", r, build)
    return out


def _no_image() -> list[str]:
    raise RowProblem("no image listed in 'images'")
