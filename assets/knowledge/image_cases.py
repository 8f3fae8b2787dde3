"""Image cases for CDIR: one row per training image with a description of the image.

SLAKE and VQA-RAD training items (``vqa_items``) are grouped by image; each case gets modality, organ,
SLAKE's detection boxes (``imgs/xmlabN/detection.json``) and a description such as
``"CT of the Abdomen. Contains: Liver, Spleen."`` (its own questions and answers only with ``include_qa``:
they would be an answer key for the same template question about a similar evaluation image).
No image of any benchmark's validation or test split becomes a case: the same bytes (content id) appear in
both splits of VQA-RAD (202 of 203 test images) and SLAKE (142 of 180, all languages), and CDIR would
retrieve the test image itself. :func:`evaluation_images` collects those content hashes;
:func:`exclude_evaluation_images` removes them from any case frame (external corpora too) and records each
exclusion; ``quality.kb.check_no_evaluation_images`` is the blocking check.
Readers for the production image-text corpora: PubMedVision (JSON with ``image`` + ``conversations``) and
ROCO (``data/<split>/<radiology|non-radiology>/captions.txt`` + ``images/``). Plain Python, no Dagster import.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import polars as pl

from assets.common.images import ImageIngestor, ImageProblem
from assets.common.records import ReadResult, Rejection, SourceError
from storage.sources import SourceDir

IMAGE_CASE_SCHEMA = {
    "id": pl.Utf8,
    "source": pl.Utf8,
    "image_ref": pl.Utf8,
    "modality": pl.Utf8,
    "organ": pl.Utf8,
    "boxes": pl.Utf8,
    "description": pl.Utf8,
    "item_ids": pl.List(pl.Utf8),
    "content_hash": pl.Utf8,
}


def slake_detections(src: SourceDir) -> dict[str, list[dict[str, Any]]]:
    """``{"train.json#<i>": [{"label": ..., "box_xywh": [...]}, ...]}`` for SLAKE training rows."""
    if not src.exists("train.json"):
        return {}
    out: dict[str, list[dict[str, Any]]] = {}
    by_image: dict[str, list[dict[str, Any]]] = {}
    for i, rec in enumerate(src.load_json("train.json", "SLAKE train.json")):
        folder = str(rec.get("img_name", "")).split("/")[0]
        if folder not in by_image:
            rel = f"imgs/{folder}/detection.json"
            boxes = []
            if folder and src.exists(rel):
                for entry in json.loads(src.read_text(rel)):
                    boxes += [{"label": k, "box_xywh": v} for k, v in entry.items()]
            by_image[folder] = boxes
        out[f"train.json#{i}"] = by_image[folder]
    return out


def describe(
    modality: str | None, organ: str | None, labels: list[str], qa: list[tuple[str, str]], max_qa: int = 6
) -> str:
    """A short case description from modality, organ, detected structures and QA pairs."""
    head = " of the ".join(x for x in (modality, organ) if x) or "Medical image"
    parts = [head + "."]
    if labels:
        parts.append("Contains: " + ", ".join(sorted(set(labels))) + ".")
    parts += [f"Q: {q} A: {a}." for q, a in qa[:max_qa]]
    return " ".join(parts)


EVALUATION_SPLITS = ("validation", "test")


def content_key(image_ref: str) -> str:
    """The content hash of an image id (``<sha256>.<ext>`` -> ``<sha256>``): what "the same image" means."""
    return image_ref.split(".", 1)[0]


def evaluation_image_refs(items: pl.DataFrame) -> dict[str, str]:
    """``{image content hash: "<dataset>/<split>"}`` for every image of a validation or test row of any
    dataset in ``items`` (a ``vqa_items`` frame, all partitions)."""
    evaluation = items.filter(pl.col("split").is_in(list(EVALUATION_SPLITS)))
    out: dict[str, str] = {}
    for dataset, split, refs in evaluation.select("dataset", "split", "image_refs").iter_rows():
        for ref in refs or []:
            out.setdefault(content_key(ref), f"{dataset}/{split}")
    return out


def slake_release_evaluation_images(src: SourceDir) -> dict[str, str]:
    """``{content hash: "slake/<split> (release)"}`` for every image of SLAKE's ``validate.json`` and
    ``test.json`` in every language: ``vqa_items`` keeps English rows only, yet 70 training images of the
    English rows are test images of Chinese rows (142 of 180 test images are training images overall)."""
    out: dict[str, str] = {}
    for name, split in (("validate.json", "validation"), ("test.json", "test")):
        if not src.exists(name):
            continue
        names = sorted(
            {
                str(r.get("img_name", ""))
                for r in src.load_json(name, "SLAKE split file")
                if isinstance(r, dict) and r.get("img_name")
            }
        )
        for img in names:
            if src.exists(f"imgs/{img}"):
                out.setdefault(
                    hashlib.sha256(src.read_bytes(f"imgs/{img}")).hexdigest(), f"slake/{split} (release)"
                )
    return out


def evaluation_images(items: pl.DataFrame, slake_src: SourceDir | None = None) -> dict[str, str]:
    """Every evaluation image the pipeline knows of: :func:`evaluation_image_refs` of ``items`` plus, with
    ``slake_src``, :func:`slake_release_evaluation_images`. Pass it to the image-case check."""
    out = slake_release_evaluation_images(slake_src) if slake_src is not None else {}
    out.update(evaluation_image_refs(items))
    return out


def exclude_evaluation_images(
    cases: pl.DataFrame,
    evaluation: dict[str, str],
) -> tuple[pl.DataFrame, list[Rejection]]:
    """``cases`` without the rows whose image (content hash) is an evaluation image; one rejection each."""
    keys = (
        cases["image_ref"].map_elements(content_key, return_dtype=pl.Utf8)
        if cases.height
        else pl.Series([], dtype=pl.Utf8)
    )
    mask = keys.is_in(list(evaluation))
    rejected = [
        Rejection(
            f"{r['source']} image case",
            r["id"],
            "evaluation image: the same image (content id) is "
            f"in {evaluation[content_key(r['image_ref'])]} items",
            r,
            r["id"],
        )
        for r in cases.filter(mask).iter_rows(named=True)
    ]
    return cases.filter(~mask), rejected


def exclude_near_duplicates(
    cases: pl.DataFrame, pairs: pl.DataFrame, where: dict[str, str]
) -> tuple[pl.DataFrame, list[Rejection]]:
    """``cases`` without the rows whose image is a near-duplicate of an evaluation image (``pairs``:
    :func:`quality.near_duplicates.near_duplicates_of`, evaluation images as ``query_ref``, case images as
    ``corpus_ref``; ``where``: content hash -> "<dataset>/<split>"); one rejection each, naming the evaluation
    image and the correlation."""
    best = (
        pairs.sort("similarity", descending=True).unique("corpus_ref", keep="first")
        if pairs.height
        else pairs
    )
    hit = {r["corpus_ref"]: r for r in best.iter_rows(named=True)}
    mask = cases["image_ref"].is_in(list(hit))
    rejected = []
    for r in cases.filter(mask).iter_rows(named=True):
        p = hit[r["image_ref"]]
        rejected.append(
            Rejection(
                f"{r['source']} image case",
                r["id"],
                f"near-duplicate of evaluation image {p['query_ref']} "
                f"({where.get(content_key(p['query_ref']), 'evaluation')}): 64x64 grey correlation "
                f"{p['similarity']:.3f} >= the near-duplicate threshold",
                r,
                r["id"],
            )
        )
    return cases.filter(~mask), rejected


def image_cases_from_vqa(
    items: pl.DataFrame,
    slake_src: SourceDir | None = None,
    datasets: tuple[str, ...] = ("slake", "vqa_rad"),
    evaluation_refs: dict[str, str] | None = None,
    include_qa: bool = False,
) -> tuple[pl.DataFrame, ReadResult]:
    """Training-split VQA items of ``datasets`` grouped into one case per (dataset, image), leaving out every
    evaluation image (:func:`evaluation_images`: validation/test rows of *any* dataset in ``items``, SLAKE's
    release splits in every language when ``slake_src`` is given), or exactly ``evaluation_refs`` (content
    hash -> where) when the caller passes them; each left-out case is a rejection with the reason.

    A description says what the image is (modality, organ, the structures SLAKE's detection boxes name).
    ``include_qa`` appends the case's own training questions and answers: off by default, since SLAKE and
    VQA-RAD ask the same template questions of many images, and a case that carries the answer to a
    similar evaluation question is an answer key, not evidence about the image."""
    result = ReadResult()
    detections = slake_detections(slake_src) if slake_src is not None else {}
    excluded = evaluation_refs if evaluation_refs is not None else evaluation_images(items, slake_src)
    train = items.filter(pl.col("dataset").is_in(list(datasets)) & (pl.col("split") == "train"))
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in train.iter_rows(named=True):
        refs = row["image_refs"] or []
        if len(refs) != 1:
            result.rejected.append(
                Rejection(
                    row["source_ref"],
                    row["item_id"],
                    f"expected one image, got {len(refs)}",
                    row,
                    row["item_id"],
                )
            )
            continue
        groups.setdefault((row["dataset"], refs[0]), []).append(row)
    for (dataset, ref), rows in groups.items():
        boxes = (
            [b for r in rows[:1] for b in detections.get(r["source_ref"], [])] if dataset == "slake" else []
        )
        modality = next((r["modality"] for r in rows if r["modality"]), None)
        organ = next((r["organ"] for r in rows if r["organ"]), None)
        qa = [(r["question"], r["answer"]) for r in rows] if include_qa else []
        text = describe(modality, organ, [b["label"] for b in boxes], qa)
        boxes_json = json.dumps(boxes, sort_keys=True)
        result.rows.append(
            {
                "id": f"{dataset}:{ref}",
                "source": dataset,
                "image_ref": ref,
                "modality": modality,
                "organ": organ,
                "boxes": boxes_json,
                "description": text,
                "item_ids": sorted(r["item_id"] for r in rows),
                "content_hash": hashlib.sha256(f"{ref}\n{text}\n{boxes_json}".encode()).hexdigest(),
            }
        )
    cases, rejected = exclude_evaluation_images(pl.DataFrame(result.rows, schema=IMAGE_CASE_SCHEMA), excluded)
    result.rows = cases.to_dicts()
    result.rejected.extend(rejected)
    return cases, result


def _case(
    source: str, native_id: str, ref: str, modality: str | None, organ: str | None, text: str
) -> dict[str, Any]:
    return {
        "id": f"{source}:{native_id}",
        "source": source,
        "image_ref": ref,
        "modality": modality or None,
        "organ": organ or None,
        "boxes": "[]",
        "description": text,
        "item_ids": [],
        "content_hash": hashlib.sha256(f"{ref}\n{text}".encode()).hexdigest(),
    }


def read_pubmedvision(
    src: SourceDir, images: ImageIngestor, max_records: int | None = None
) -> tuple[pl.DataFrame, ReadResult]:
    """PubMedVision JSON files (``PubMedVision_*.json`` at the root): ``id``, ``image`` (a path or a list of
    paths relative to the root), ``conversations`` (the first ``gpt`` turn is the description),
    ``modality``, ``body_part``. Records with several images give one case per image."""
    files = src.glob("*.json")
    if not files:
        raise SourceError(
            src.root, "no PubMedVision *.json file found", "point the source at the PubMedVision folder"
        )
    result = ReadResult()
    for rel in files:
        # PubMedVision ships single JSON documents far above max_document_bytes; they stay capped by
        # max_file_bytes alone, as before (a streaming JSON parser would bound them: not done yet)
        records = src.load_json(rel, "PubMedVision file", max_bytes=src.max_file_bytes)
        if not isinstance(records, list):
            raise SourceError(
                src.path(rel), "expected a JSON list of records", "use the released PubMedVision JSON"
            )
        for i, rec in enumerate(records[:max_records] if max_records else records):
            try:
                paths = rec["image"] if isinstance(rec["image"], list) else [rec["image"]]
                text = next(t["value"] for t in rec["conversations"] if t.get("from") == "gpt").strip()
                if not text:
                    raise ValueError("empty description")
                for j, path in enumerate(paths):
                    ref = images.from_source(src, str(path))
                    result.rows.append(
                        _case(
                            "pubmedvision",
                            f"{rec['id']}#{j}",
                            ref,
                            rec.get("modality"),
                            rec.get("body_part"),
                            text,
                        )
                    )
            except ImageProblem as e:
                result.rejected.append(Rejection(src.path(rel), str(i), str(e), rec))
            except (KeyError, TypeError, StopIteration, ValueError) as e:
                result.rejected.append(Rejection(src.path(rel), str(i), f"malformed record: {e!r}", rec))
    return pl.DataFrame(result.rows, schema=IMAGE_CASE_SCHEMA), result


def read_roco(
    src: SourceDir, images: ImageIngestor, max_records: int | None = None
) -> tuple[pl.DataFrame, ReadResult]:
    """ROCO: ``data/<split>/<radiology|non-radiology>/captions.txt`` (``ROCO_id<TAB>caption``) with the
    images in ``images/<ROCO_id>.jpg`` beside each captions file."""
    files = src.glob("data/*/*/captions.txt")
    if not files:
        raise SourceError(
            src.root, "no data/<split>/<subset>/captions.txt found", "point the source at the ROCO folder"
        )
    result = ReadResult()
    for rel in files:
        folder = rel.rsplit("/", 1)[0]
        subset = folder.rsplit("/", 1)[-1]
        lines = [x for x in src.read_text(rel).splitlines() if x.strip()]
        for line_no, line in enumerate(lines[:max_records] if max_records else lines, start=1):
            roco_id, _, caption = line.partition("\t")
            if not caption.strip():
                result.rejected.append(
                    Rejection(src.path(rel), f"line {line_no}", "empty caption or no tab", line)
                )
                continue
            try:
                ref = images.from_source(src, f"{folder}/images/{roco_id.strip()}.jpg")
            except ImageProblem as e:
                result.rejected.append(Rejection(src.path(rel), f"line {line_no}", str(e), line))
                continue
            modality = "radiology" if subset == "radiology" else None
            result.rows.append(_case("roco", roco_id.strip(), ref, modality, None, caption.strip()))
    return pl.DataFrame(result.rows, schema=IMAGE_CASE_SCHEMA), result


EXTERNAL_IMAGE_CORPORA = {"pubmedvision": read_pubmedvision, "roco": read_roco}
