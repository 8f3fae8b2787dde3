"""PMC-VQA: the released CSVs with an ``images/`` folder."""

from __future__ import annotations

import re

from assets.common.images import ImageIngestor
from assets.common.records import ReadResult, Rejection, SourceError
from storage.sources import SourceDir

from .common import as_text, collect
from .vqa_row import make_item

LICENSE = "CC-BY-SA-4.0"
_CHOICE_PREFIX = re.compile(r"^\s*[A-D]\s*[:.)]\s*")


def read_pmc_vqa(src: SourceDir, images: ImageIngestor) -> ReadResult:
    """PMC-VQA CSVs (``train.csv``/``test.csv``, or the ``*_2.csv`` versions) with ``images/``.

    Columns: ``Figure_path, Question, Answer, Choice A..D, Answer_label``; choices carry an ``A:`` prefix.
    """
    out = ReadResult()
    files = [
        f for f in ("train.csv", "test.csv", "train_2.csv", "test_2.csv", "test_clean.csv") if src.exists(f)
    ]
    if not files:
        raise SourceError(
            src.root,
            "no PMC-VQA CSV (train.csv, test.csv, *_2.csv) found",
            "point the pmc_vqa source at the PMC-VQA release folder",
        )
    for rel in files:
        split = "train" if rel.startswith("train") else "test"
        version = rel.removesuffix(".csv")
        for i, (line_no, r, err) in enumerate(src.iter_csv(rel, "PMC-VQA CSV")):
            if err:
                out.rejected.append(Rejection(src.path(rel), f"line {line_no}", err, raw=r))
                continue
            missing = {"Figure_path", "Question", "Choice A", "Choice B"} - set(r)
            if missing:
                raise SourceError(
                    src.path(rel), f"missing columns {sorted(missing)}", "use the released PMC-VQA CSV"
                )

            def build(r=r, i=i, split=split, rel=rel, version=version, line_no=line_no):
                options = [
                    _CHOICE_PREFIX.sub("", as_text(r.get(f"Choice {c}")))
                    for c in "ABCD"
                    if as_text(r.get(f"Choice {c}"))
                ]
                label = as_text(r.get("Answer_label")) or None
                answer = _CHOICE_PREFIX.sub("", as_text(r.get("Answer")))
                return make_item(
                    item_id=f"pmc_vqa:{version}-{as_text(r.get('index')) or i}",
                    dataset="pmc_vqa",
                    split=split,
                    image_refs=[images.from_source(src, f"images/{as_text(r['Figure_path'])}")],
                    question=r["Question"],
                    answer=answer,
                    options=options,
                    answer_label=label,
                    answer_type="closed",
                    source_ref=f"{rel}#{line_no}",
                    license=LICENSE,
                )

            collect(out, src.path(rel), f"line {line_no}", r, build)
    return out
