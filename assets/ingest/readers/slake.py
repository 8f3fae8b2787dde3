"""SLAKE 1.0 (English rows)."""

from __future__ import annotations

from assets.common.images import ImageIngestor
from assets.common.records import ReadResult, SourceError
from storage.sources import SourceDir

from .common import as_text, collect, expect_list
from .vqa_row import make_item

LICENSE = "CC-BY-4.0"


def read_slake(src: SourceDir, images: ImageIngestor) -> ReadResult:
    """SLAKE 1.0: ``train/validate/test.json`` with ``imgs/xmlabN/source.jpg``; English rows only.

    Chinese rows (``q_lang == 'zh'``) are out of scope by design; they are counted, not quarantined.
    """
    out = ReadResult()
    found = False
    for name in ("train.json", "validate.json", "test.json"):
        if not src.exists(name):
            continue
        found = True
        records = expect_list(src.load_json(name, "SLAKE split file"), src.path(name))
        images.prefetch(src, [f"imgs/{as_text(r.get('img_name'))}" for r in records if isinstance(r, dict)])
        split = name.split(".")[0]
        for i, r in enumerate(records):
            if isinstance(r, dict) and r.get("q_lang", "en") != "en":
                continue

            def build(r=r, i=i, split=split, name=name):
                return make_item(
                    item_id=f"slake:{as_text(r['qid'])}",
                    dataset="slake",
                    split=split,
                    image_refs=[images.from_source(src, f"imgs/{as_text(r['img_name'])}")],
                    question=r["question"],
                    answer=r["answer"],
                    answer_type=as_text(r.get("answer_type")),
                    modality=r.get("modality"),
                    organ=r.get("location"),
                    question_type=r.get("content_type"),
                    source_ref=f"{name}#{i}",
                    license=LICENSE,
                )

            collect(out, src.path(name), str(i), r, build)
    if not found:
        raise SourceError(
            src.root,
            "no SLAKE split file (train.json, validate.json, test.json) found",
            "point the slake source at the Slake1.0 folder",
        )
    return out
