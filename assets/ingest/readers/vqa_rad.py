"""VQA-RAD: the official release, or else the MICCAI19 (aioz-ai MEVF) layout."""

from __future__ import annotations

import posixpath

from assets.common.images import ImageIngestor
from assets.common.records import ReadResult, SourceError
from storage.sources import SourceDir

from .common import as_text, collect, expect_list
from .vqa_row import make_item

LICENSE = "CC0-1.0"
VQA_RAD_OFFICIAL = "VQA_RAD Dataset Public.json"
VQA_RAD_IMAGES = "VQA_RAD Image Folder"


def read_vqa_rad(src: SourceDir, images: ImageIngestor) -> ReadResult:
    """VQA-RAD in its official layout, or else the MICCAI19 ``trainset.json``/``testset.json`` layout.

    Official: test split = ``phrase_type`` starting with ``test`` (451 questions).
    """
    if src.exists(VQA_RAD_OFFICIAL):
        return read_vqa_rad_official(src, images)
    for base in ("", "miccai19_format/", "data_RAD/"):
        if src.exists(base + "trainset.json"):
            return read_vqa_rad_miccai19(src, images, base)
    raise SourceError(
        src.root,
        f"neither {VQA_RAD_OFFICIAL!r} nor MICCAI19 'trainset.json' found",
        "point the vqa_rad source at the folder of the VQA-RAD release",
    )


def read_vqa_rad_official(src: SourceDir, images: ImageIngestor) -> ReadResult:
    path = src.path(VQA_RAD_OFFICIAL)
    records = expect_list(src.load_json(VQA_RAD_OFFICIAL, "VQA-RAD annotation file"), path)
    images.prefetch(
        src, [f"{VQA_RAD_IMAGES}/{as_text(r.get('image_name'))}" for r in records if isinstance(r, dict)]
    )
    out = ReadResult()
    for i, r in enumerate(records):

        def build(r=r, i=i):
            qid = as_text(r["qid"])
            phrase = as_text(r.get("phrase_type")).lower()
            return make_item(
                item_id=f"vqa_rad:{qid}",
                dataset="vqa_rad",
                split="test" if phrase.startswith("test") else "train",
                image_refs=[images.from_source(src, f"{VQA_RAD_IMAGES}/{as_text(r['image_name'])}")],
                question=r["question"],
                answer=r["answer"],
                answer_type=as_text(r.get("answer_type")),
                organ=r.get("image_organ"),
                question_type=r.get("question_type"),
                source_ref=f"{VQA_RAD_OFFICIAL}#{i}",
                license=LICENSE,
            )

        collect(out, path, str(i), r, build)
    return out


def read_vqa_rad_miccai19(src: SourceDir, images: ImageIngestor, base: str = "") -> ReadResult:
    """MICCAI19 (aioz-ai MEVF) layout: ``trainset.json``, ``testset.json`` and an ``images/`` folder."""
    candidates = [base + "images", VQA_RAD_IMAGES]
    if base:  # a MICCAI19 folder inside the official release: images in the release's image folder
        candidates.insert(1, posixpath.join(posixpath.dirname(base.rstrip("/")), VQA_RAD_IMAGES))
    image_dir = next((d for d in candidates if src.exists(d)), base + "images")
    out = ReadResult()
    for split, name in (("train", "trainset.json"), ("test", "testset.json")):
        rel = base + name
        records = expect_list(src.load_json(rel, "VQA-RAD MICCAI19 file"), src.path(rel))
        for i, r in enumerate(records):

            def build(r=r, i=i, split=split, rel=rel):
                return make_item(
                    item_id=f"vqa_rad:m19-{split}-{as_text(r['qid'])}",
                    dataset="vqa_rad",
                    split=split,
                    image_refs=[images.from_source(src, f"{image_dir}/{as_text(r['image_name'])}")],
                    question=r["question"],
                    answer=r["answer"],
                    answer_type=as_text(r.get("answer_type")),
                    organ=r.get("image_organ"),
                    question_type=r.get("question_type"),
                    source_ref=f"{rel}#{i}",
                    license=LICENSE,
                )

            collect(out, src.path(rel), str(i), r, build)
    return out
