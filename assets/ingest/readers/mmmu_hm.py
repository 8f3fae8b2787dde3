"""MMMU, its Health & Medicine subjects."""

from __future__ import annotations

import ast

from assets.common.images import ImageIngestor
from assets.common.records import ReadResult, SourceError
from storage.sources import SourceDir

from .common import RowProblem, as_text, collect, parquet_image, read_parquet
from .vqa_row import make_item

LICENSE = "Apache-2.0"
MMMU_HEALTH_SUBJECTS = (
    "Basic_Medical_Science",
    "Clinical_Medicine",
    "Diagnostics_and_Laboratory_Medicine",
    "Pharmacy",
    "Public_Health",
)


def read_mmmu_hm(src: SourceDir, images: ImageIngestor) -> ReadResult:
    """MMMU Health & Medicine: ``<Subject>/{dev,validation,test}-*.parquet`` with ``image_1..7`` structs.

    ``options`` is a Python-literal list in a string; ``answer`` is a letter (multiple-choice) or text (open).
    """
    out = ReadResult()
    files = [f for s in MMMU_HEALTH_SUBJECTS for f in src.glob(f"{s}/*.parquet")]
    if not files:
        raise SourceError(
            src.root,
            f"no Parquet files under any of {', '.join(MMMU_HEALTH_SUBJECTS)}",
            "point the mmmu_hm source at the MMMU dataset folder",
        )
    for rel in files:
        split = rel.rsplit("/", 1)[-1].split("-")[0]
        df = read_parquet(src, rel)
        for i, r in enumerate(df.iter_rows(named=True)):

            def build(r=r, i=i, split=split, rel=rel):
                try:
                    options = [str(o) for o in ast.literal_eval(r.get("options") or "[]")]
                except (ValueError, SyntaxError, RecursionError, MemoryError) as e:
                    raise RowProblem(f"options is not a list literal: {str(r.get('options'))[:200]!r}") from e
                refs = [
                    images.from_bytes(parquet_image(r[f"image_{k}"]), f"{rel}#{i}/image_{k}")
                    for k in range(1, 8)
                    if r.get(f"image_{k}") is not None
                ]
                if not refs:
                    raise RowProblem("no image in image_1..image_7")
                mcq = r.get("question_type", "multiple-choice") == "multiple-choice" and options
                return make_item(
                    item_id=f"mmmu_hm:{as_text(r['id'])}",
                    dataset="mmmu_hm",
                    split="validation" if split == "dev" else split,
                    image_refs=refs,
                    question=r["question"],
                    answer=None if mcq else r.get("answer"),
                    options=options if mcq else [],
                    answer_label=as_text(r.get("answer")) if mcq else None,
                    answer_type="closed" if mcq else "open",
                    question_type=r.get("subfield"),
                    modality=r.get("img_type"),
                    source_ref=f"{rel}#{i}",
                    license=LICENSE,
                )

            raw = {k: v for k, v in r.items() if not k.startswith("image_")}
            collect(out, src.path(rel), str(i), raw, build)
    return out
