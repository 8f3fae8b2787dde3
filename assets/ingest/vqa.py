"""Readers for the released layouts of medical VQA datasets, normalized into one ``vqa_items`` schema.

Each reader takes the dataset's folder as released (:class:`SourceDir`, local or S3) and an
:class:`ImageIngestor`, and returns a :class:`ReadResult`: normalized rows plus quarantined rows.
Whole-file problems raise :class:`SourceError`. Pure functions: no Dagster here.
"""

from __future__ import annotations

import ast
import hashlib
import io
import pickle
import posixpath
import re
from collections.abc import Callable
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from assets.common.images import ImageIngestor, ImageProblem
from assets.common.records import ReadResult, Rejection, SourceError
from storage.sources import SourceDir

VQA_DATASETS = ("vqa_rad", "slake", "path_vqa", "pmc_vqa", "omnimedvqa", "mmmu_hm", "medxpertqa_mm")
SPLITS = ("train", "validation", "test")
LETTERS = "ABCDEFGHIJ"

LICENSES = {
    "vqa_rad": "CC0-1.0",
    "slake": "CC-BY-4.0",
    "path_vqa": "MIT",
    "pmc_vqa": "CC-BY-SA-4.0",
    "omnimedvqa": "CC-BY-NC-SA-4.0",
    "mmmu_hm": "Apache-2.0",
    "medxpertqa_mm": "MIT",
}

VQA_SCHEMA = {
    "item_id": pl.Utf8,
    "dataset": pl.Utf8,
    "split": pl.Utf8,
    "image_refs": pl.List(pl.Utf8),
    "question": pl.Utf8,
    "options": pl.List(pl.Utf8),
    "answer": pl.Utf8,
    "answer_label": pl.Utf8,
    "answer_type": pl.Utf8,
    "modality": pl.Utf8,
    "organ": pl.Utf8,
    "question_type": pl.Utf8,
    "language": pl.Utf8,
    "source_ref": pl.Utf8,
    "license": pl.Utf8,
}

_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "validation", "valid": "validation",
                  "validate": "validation", "validation": "validation", "dev": "validation", "test": "test"}


class RowProblem(ValueError):
    """A row that cannot be normalized; the message becomes the quarantine reason."""


def normalize_split(value: Any) -> str:
    """``train``, ``validation`` or ``test`` for a split name or alias; :class:`RowProblem` otherwise."""
    split = _SPLIT_ALIASES.get(str(value or "").strip().lower())
    if split is None:
        raise RowProblem(f"unknown split: {value!r} (expected one of {', '.join(SPLITS)} or an alias)")
    return split


_NAME_SPLITS = {**_SPLIT_ALIASES, "testing": "test"}


def split_from_name(rel: str) -> str | None:
    """The split a file's name tells by a whole word (``usmle_test.jsonl`` -> ``test``,
    ``dev.json`` -> ``validation``; ``latest.csv`` tells none), or ``None`` when it tells none or more
    than one."""
    stem = rel.rsplit("/", 1)[-1].lower().split(".", 1)[0]
    found = {_NAME_SPLITS[w] for w in re.split(r"[^a-z0-9]+", stem) if w in _NAME_SPLITS}
    return found.pop() if len(found) == 1 else None


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _yes_no(answer: str) -> str | None:
    a = answer.strip().rstrip(".").strip().lower()
    return {"yes": "Yes", "no": "No"}.get(a)


def two_option_form(item_id: str, answer: str) -> tuple[list[str], str] | None:
    """For a yes/no answer: the options ``[Yes, No]`` in an order fixed by the item id, and the letter.

    The order depends only on a hash of the item id, so it is the same on every run and the correct
    letter falls on A and B about equally often across a dataset.
    """
    yn = _yes_no(answer)
    if yn is None:
        return None
    flip = hashlib.sha256(item_id.encode()).digest()[0] & 1
    options = ["No", "Yes"] if flip else ["Yes", "No"]
    return options, LETTERS[options.index(yn)]


def make_item(
    *,
    item_id: str,
    dataset: str,
    split: Any,
    image_refs: list[str],
    question: Any,
    answer: Any,
    answer_type: str | None = None,
    options: list[str] | None = None,
    answer_label: str | None = None,
    modality: Any = None,
    organ: Any = None,
    question_type: Any = None,
    language: str = "en",
    source_ref: str,
    license: str | None = None,
) -> dict[str, Any]:
    """One normalized ``vqa_items`` row, or :class:`RowProblem` with the reason it cannot be one."""
    question, answer = _text(question), _text(answer)
    if not question:
        raise RowProblem("empty question")
    options = [_text(o) for o in (options or [])]
    if options and any(not o for o in options):
        raise RowProblem("empty option text")
    if answer_label is not None:
        answer_label = _text(answer_label).upper()
        if not options:
            raise RowProblem(f"answer letter {answer_label!r} given but the item has no options")
        if len(answer_label) != 1 or answer_label not in LETTERS[: len(options)]:
            raise RowProblem(
                f"answer letter outside the options: {answer_label!r} with {len(options)} options "
                f"({LETTERS[: len(options)]})"
            )
        answer = answer or options[LETTERS.index(answer_label)]
    if not answer:
        raise RowProblem("empty answer")
    kind = (answer_type or ("closed" if options else "open")).strip().lower()
    if kind not in ("closed", "open"):
        raise RowProblem(f"unknown answer type: {answer_type!r} (expected CLOSED or OPEN)")
    if not options and kind == "closed":
        two = two_option_form(item_id, answer)
        if two is not None:
            options, answer_label = two
            answer = options[LETTERS.index(answer_label)]
    return {
        "item_id": item_id,
        "dataset": dataset,
        "split": normalize_split(split),
        "image_refs": image_refs,
        "question": question,
        "options": options,
        "answer": answer,
        "answer_label": answer_label,
        "answer_type": kind,
        "modality": _text(modality) or None,
        "organ": _text(organ) or None,
        "question_type": _text(question_type) or None,
        "language": language,
        "source_ref": source_ref,
        "license": license or LICENSES[dataset],
    }


def _collect(out: ReadResult, source_file: str, row: str, raw: Any, build: Callable[[], dict]) -> None:
    """Run ``build``; on a row or image problem, quarantine the raw record with the reason."""
    try:
        out.rows.append(build())
    except (RowProblem, ImageProblem) as e:
        out.rejected.append(Rejection(source_file=source_file, row=row, reason=str(e), raw=raw))
    except (KeyError, TypeError, AttributeError) as e:
        out.rejected.append(Rejection(source_file=source_file, row=row, reason=f"malformed record: {e!r}", raw=raw))


def _expect_list(data: Any, path: str) -> list:
    if not isinstance(data, list):
        raise SourceError(path, f"expected a JSON list of records, found {type(data).__name__}",
                          "point the reader at the dataset's released annotation file")
    return data


# ---- VQA-RAD --------------------------------------------------------------------------------------
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
    raise SourceError(src.root, f"neither {VQA_RAD_OFFICIAL!r} nor MICCAI19 'trainset.json' found",
                      "point the vqa_rad source at the folder of the VQA-RAD release")


def read_vqa_rad_official(src: SourceDir, images: ImageIngestor) -> ReadResult:
    path = src.path(VQA_RAD_OFFICIAL)
    records = _expect_list(src.load_json(VQA_RAD_OFFICIAL, "VQA-RAD annotation file"), path)
    images.prefetch(src, [f"{VQA_RAD_IMAGES}/{_text(r.get('image_name'))}" for r in records if isinstance(r, dict)])
    out = ReadResult()
    for i, r in enumerate(records):
        def build(r=r, i=i):
            qid = _text(r["qid"])
            phrase = _text(r.get("phrase_type")).lower()
            return make_item(
                item_id=f"vqa_rad:{qid}", dataset="vqa_rad",
                split="test" if phrase.startswith("test") else "train",
                image_refs=[images.from_source(src, f"{VQA_RAD_IMAGES}/{_text(r['image_name'])}")],
                question=r["question"], answer=r["answer"], answer_type=_text(r.get("answer_type")),
                organ=r.get("image_organ"), question_type=r.get("question_type"),
                source_ref=f"{VQA_RAD_OFFICIAL}#{i}",
            )
        _collect(out, path, str(i), r, build)
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
        records = _expect_list(src.load_json(rel, "VQA-RAD MICCAI19 file"), src.path(rel))
        for i, r in enumerate(records):
            def build(r=r, i=i, split=split, rel=rel):
                return make_item(
                    item_id=f"vqa_rad:m19-{split}-{_text(r['qid'])}", dataset="vqa_rad", split=split,
                    image_refs=[images.from_source(src, f"{image_dir}/{_text(r['image_name'])}")],
                    question=r["question"], answer=r["answer"], answer_type=_text(r.get("answer_type")),
                    organ=r.get("image_organ"), question_type=r.get("question_type"),
                    source_ref=f"{rel}#{i}",
                )
            _collect(out, src.path(rel), str(i), r, build)
    return out


# ---- SLAKE ----------------------------------------------------------------------------------------
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
        records = _expect_list(src.load_json(name, "SLAKE split file"), src.path(name))
        images.prefetch(src, [f"imgs/{_text(r.get('img_name'))}" for r in records if isinstance(r, dict)])
        split = name.split(".")[0]
        for i, r in enumerate(records):
            if isinstance(r, dict) and r.get("q_lang", "en") != "en":
                continue
            def build(r=r, i=i, split=split, name=name):
                return make_item(
                    item_id=f"slake:{_text(r['qid'])}", dataset="slake", split=split,
                    image_refs=[images.from_source(src, f"imgs/{_text(r['img_name'])}")],
                    question=r["question"], answer=r["answer"], answer_type=_text(r.get("answer_type")),
                    modality=r.get("modality"), organ=r.get("location"), question_type=r.get("content_type"),
                    source_ref=f"{name}#{i}",
                )
            _collect(out, src.path(name), str(i), r, build)
    if not found:
        raise SourceError(src.root, "no SLAKE split file (train.json, validate.json, test.json) found",
                          "point the slake source at the Slake1.0 folder")
    return out


# ---- PathVQA --------------------------------------------------------------------------------------
class _SafeUnpickler(pickle.Unpickler):
    """Only plain containers and scalars: a pickle that asks for any class is refused."""

    def find_class(self, module: str, name: str):  # noqa: D401
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a PathVQA pickle")


def _parquet_image(value: Any) -> bytes | None:
    if isinstance(value, dict):
        return value.get("bytes")
    return value if isinstance(value, bytes | bytearray) else None


def read_path_vqa(src: SourceDir, images: ImageIngestor) -> ReadResult:
    """PathVQA: the Hugging Face Parquet layout (``data/{split}-*.parquet`` with an image struct) or the
    original release (``split/qas/{split}/{split}_qa.pkl`` + ``split/images/{split}/*.jpg``)."""
    out = ReadResult()
    parquet_files = src.glob("data/*.parquet")
    if parquet_files:
        for rel in parquet_files:
            split = rel.rsplit("/", 1)[-1].split("-")[0]
            df = _read_parquet(src, rel)
            for i, r in enumerate(df.iter_rows(named=True)):
                def build(r=r, i=i, split=split, rel=rel):
                    name = f"{rel}#{i}"
                    return make_item(
                        item_id=f"path_vqa:{split}-{_row_key(r, i)}", dataset="path_vqa", split=split,
                        image_refs=[images.from_bytes(_parquet_image(r.get("image")), name)],
                        question=r["question"], answer=r["answer"],
                        answer_type="closed" if _yes_no(_text(r["answer"])) else "open", source_ref=name,
                    )
                _collect(out, src.path(rel), str(i), {k: v for k, v in r.items() if k != "image"}, build)
        return out
    pickles = src.glob("split/qas/*/*_qa.pkl")
    if not pickles:
        raise SourceError(src.root, "no PathVQA annotations (data/*.parquet or split/qas/*/*_qa.pkl) found",
                          "point the path_vqa source at the PathVQA release folder")
    for rel in pickles:
        split = rel.split("/")[2]
        try:
            records = _SafeUnpickler(io.BytesIO(src.read_bytes(rel))).load()
        except Exception as e:  # noqa: BLE001 - any unpickling failure is a whole-file problem
            raise SourceError(src.path(rel), f"cannot read the pickle ({e})", "restore the file from the release") from e
        for i, r in enumerate(_expect_list(records, src.path(rel))):
            def build(r=r, i=i, split=split, rel=rel):
                return make_item(
                    item_id=f"path_vqa:{split}-{i}", dataset="path_vqa", split=split,
                    image_refs=[images.from_source(src, f"split/images/{split}/{_text(r['image'])}.jpg")],
                    question=r["question"], answer=r["answer"],
                    answer_type="closed" if _yes_no(_text(r["answer"])) else "open", source_ref=f"{rel}#{i}",
                )
            _collect(out, src.path(rel), str(i), r, build)
    return out


def _row_key(r: dict, i: int) -> str:
    for k in ("id", "qid", "question_id"):
        if r.get(k) not in (None, ""):
            return _text(r[k])
    return str(i)


def _read_parquet(src: SourceDir, rel: str) -> pl.DataFrame:
    """A whole Parquet file, refused when its footer declares more uncompressed data than the source's
    ``max_file_bytes`` (the declared sizes are the writer's: an honest guard, not proof against a forged
    footer)."""
    data = src.read_bytes(rel)
    try:
        meta = pq.read_metadata(io.BytesIO(data))
        declared = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    except Exception as e:  # noqa: BLE001 - pyarrow raises several error types for bad files
        raise SourceError(src.path(rel), f"not a readable Parquet file ({type(e).__name__}: {e})",
                          "re-download or re-export the file") from e
    if declared > src.max_file_bytes:
        raise SourceError(src.path(rel), f"declares {declared:,} bytes of uncompressed data, over the cap of "
                          f"{src.max_file_bytes:,} bytes", "split the file or raise the source's max_file_bytes")
    try:
        return pl.read_parquet(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001 - polars raises several error types for bad files
        raise SourceError(src.path(rel), f"not a readable Parquet file ({type(e).__name__}: {e})",
                          "re-download or re-export the file") from e


# ---- PMC-VQA --------------------------------------------------------------------------------------
_CHOICE_PREFIX = re.compile(r"^\s*[A-D]\s*[:.)]\s*")


def read_pmc_vqa(src: SourceDir, images: ImageIngestor) -> ReadResult:
    """PMC-VQA CSVs (``train.csv``/``test.csv``, or the ``*_2.csv`` versions) with ``images/``.

    Columns: ``Figure_path, Question, Answer, Choice A..D, Answer_label``; choices carry an ``A:`` prefix.
    """
    out = ReadResult()
    files = [f for f in ("train.csv", "test.csv", "train_2.csv", "test_2.csv", "test_clean.csv") if src.exists(f)]
    if not files:
        raise SourceError(src.root, "no PMC-VQA CSV (train.csv, test.csv, *_2.csv) found",
                          "point the pmc_vqa source at the PMC-VQA release folder")
    for rel in files:
        split = "train" if rel.startswith("train") else "test"
        version = rel.removesuffix(".csv")
        for i, (line_no, r, err) in enumerate(src.iter_csv(rel, "PMC-VQA CSV")):
            if err:
                out.rejected.append(Rejection(src.path(rel), f"line {line_no}", err, raw=r))
                continue
            missing = {"Figure_path", "Question", "Choice A", "Choice B"} - set(r)
            if missing:
                raise SourceError(src.path(rel), f"missing columns {sorted(missing)}", "use the released PMC-VQA CSV")

            def build(r=r, i=i, split=split, rel=rel, version=version, line_no=line_no):
                options = [_CHOICE_PREFIX.sub("", _text(r.get(f"Choice {c}"))) for c in "ABCD" if _text(r.get(f"Choice {c}"))]
                label = _text(r.get("Answer_label")) or None
                answer = _CHOICE_PREFIX.sub("", _text(r.get("Answer")))
                return make_item(
                    item_id=f"pmc_vqa:{version}-{_text(r.get('index')) or i}", dataset="pmc_vqa", split=split,
                    image_refs=[images.from_source(src, f"images/{_text(r['Figure_path'])}")],
                    question=r["Question"], answer=answer, options=options, answer_label=label,
                    answer_type="closed", source_ref=f"{rel}#{line_no}",
                )
            _collect(out, src.path(rel), f"line {line_no}", r, build)
    return out


# ---- OmniMedVQA -----------------------------------------------------------------------------------
def read_omnimedvqa(src: SourceDir, images: ImageIngestor) -> ReadResult:
    """OmniMedVQA: ``QA_information/{Open-access,Restricted-access}/*.json`` with paths under ``Images/``.

    OmniMedVQA is an evaluation benchmark without splits: every item is ``test``.
    """
    files = src.glob("QA_information/*/*.json")
    if not files:
        raise SourceError(src.root, "no QA_information/*/*.json found", "point the omnimedvqa source at the OmniMedVQA folder")
    out = ReadResult()
    for rel in files:
        records = _expect_list(src.load_json(rel, "OmniMedVQA QA file"), src.path(rel))
        for i, r in enumerate(records):
            def build(r=r, i=i, rel=rel):
                options = [_text(r[f"option_{c}"]) for c in "ABCDEFGH" if _text(r.get(f"option_{c}"))]
                gt = _text(r["gt_answer"])
                if gt not in options:
                    raise RowProblem(f"answer not among the options: {gt!r} not in {options}")
                return make_item(
                    item_id=f"omnimedvqa:{_text(r['question_id'])}", dataset="omnimedvqa", split="test",
                    image_refs=[images.from_source(src, _text(r["image_path"]).removeprefix("./"))],
                    question=r["question"], answer=gt, options=options, answer_label=LETTERS[options.index(gt)],
                    modality=r.get("modality_type") or r.get("modality"), question_type=r.get("question_type"),
                    source_ref=f"{rel}#{i}",
                )
            _collect(out, src.path(rel), str(i), r, build)
    return out


# ---- MMMU Health & Medicine -------------------------------------------------------------------------
MMMU_HEALTH_SUBJECTS = ("Basic_Medical_Science", "Clinical_Medicine", "Diagnostics_and_Laboratory_Medicine",
                        "Pharmacy", "Public_Health")


def read_mmmu_hm(src: SourceDir, images: ImageIngestor) -> ReadResult:
    """MMMU Health & Medicine: ``<Subject>/{dev,validation,test}-*.parquet`` with ``image_1..7`` structs.

    ``options`` is a Python-literal list in a string; ``answer`` is a letter (multiple-choice) or text (open).
    """
    out = ReadResult()
    files = [f for s in MMMU_HEALTH_SUBJECTS for f in src.glob(f"{s}/*.parquet")]
    if not files:
        raise SourceError(src.root, f"no Parquet files under any of {', '.join(MMMU_HEALTH_SUBJECTS)}",
                          "point the mmmu_hm source at the MMMU dataset folder")
    for rel in files:
        split = rel.rsplit("/", 1)[-1].split("-")[0]
        df = _read_parquet(src, rel)
        for i, r in enumerate(df.iter_rows(named=True)):
            def build(r=r, i=i, split=split, rel=rel):
                try:
                    options = [str(o) for o in ast.literal_eval(r.get("options") or "[]")]
                except (ValueError, SyntaxError, RecursionError, MemoryError) as e:
                    raise RowProblem(f"options is not a list literal: {str(r.get('options'))[:200]!r}") from e
                refs = [images.from_bytes(_parquet_image(r[f"image_{k}"]), f"{rel}#{i}/image_{k}")
                        for k in range(1, 8) if r.get(f"image_{k}") is not None]
                if not refs:
                    raise RowProblem("no image in image_1..image_7")
                mcq = r.get("question_type", "multiple-choice") == "multiple-choice" and options
                return make_item(
                    item_id=f"mmmu_hm:{_text(r['id'])}", dataset="mmmu_hm",
                    split="validation" if split == "dev" else split, image_refs=refs,
                    question=r["question"], answer=None if mcq else r.get("answer"),
                    options=options if mcq else [], answer_label=_text(r.get("answer")) if mcq else None,
                    answer_type="closed" if mcq else "open", question_type=r.get("subfield"),
                    modality=r.get("img_type"), source_ref=f"{rel}#{i}",
                )
            _collect(out, src.path(rel), str(i), {k: v for k, v in r.items() if not k.startswith("image_")}, build)
    return out


# ---- MedXpertQA MM --------------------------------------------------------------------------------
def read_medxpertqa_mm(src: SourceDir, images: ImageIngestor) -> ReadResult:
    """MedXpertQA multimodal subset: ``MM/{dev,test}.jsonl`` (id, question, options{A..E}, label, images)
    with image files under ``images/``."""
    files = [f for f in ("MM/dev.jsonl", "MM/test.jsonl", "dev.jsonl", "test.jsonl") if src.exists(f)]
    if not files:
        raise SourceError(src.root, "no MedXpertQA MM file (MM/test.jsonl, MM/dev.jsonl) found",
                          "point the medxpertqa_mm source at the MedXpertQA folder")
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
                    item_id=f"medxpertqa_mm:{_text(r['id'])}", dataset="medxpertqa_mm", split=split,
                    image_refs=[images.from_source(src, f"{image_dir}/{_text(n)}") for n in r.get("images") or []]
                    or _no_image(),
                    question=r["question"], answer=None, options=options, answer_label=r["label"],
                    answer_type="closed", organ=r.get("body_system"), question_type=r.get("medical_task"),
                    source_ref=f"{rel}#L{line_no}",
                )
            _collect(out, src.path(rel), f"line {line_no}", r, build)
    return out


def _no_image() -> list[str]:
    raise RowProblem("no image listed in 'images'")


READERS: dict[str, Callable[[SourceDir, ImageIngestor], ReadResult]] = {
    "vqa_rad": read_vqa_rad,
    "slake": read_slake,
    "path_vqa": read_path_vqa,
    "pmc_vqa": read_pmc_vqa,
    "omnimedvqa": read_omnimedvqa,
    "mmmu_hm": read_mmmu_hm,
    "medxpertqa_mm": read_medxpertqa_mm,
}


def dedupe(result: ReadResult, id_column: str = "item_id") -> ReadResult:
    """Keep the first row per id; later rows with the same id go to quarantine."""
    seen: dict[str, str] = {}
    kept: list[dict] = []
    for row in result.rows:
        rid = row[id_column]
        if rid in seen:
            result.rejected.append(Rejection(source_file=row["source_ref"].split("#")[0], row=row["source_ref"],
                                             reason=f"duplicate item id: {rid} (first at {seen[rid]})",
                                             raw=row, item_id=rid))
            continue
        seen[rid] = row["source_ref"]
        kept.append(row)
    return ReadResult(rows=kept, rejected=result.rejected)


def to_frame(rows: list[dict[str, Any]], schema: dict[str, pl.DataType] = VQA_SCHEMA) -> pl.DataFrame:
    """Rows as a DataFrame with the table's exact schema (also when empty)."""
    columns = {name: [row.get(name) for row in rows] for name in schema}  # column-wise: far faster than from_dicts
    return pl.DataFrame(columns, schema=schema).sort("item_id")


def read_vqa(dataset: str, src: SourceDir, images: ImageIngestor) -> tuple[pl.DataFrame, ReadResult]:
    """Read one dataset in its released layout: the normalized table and the full read result."""
    if dataset not in READERS:
        raise ValueError(f"unknown VQA dataset {dataset!r}; known: {', '.join(READERS)}")
    result = dedupe(READERS[dataset](src, images))
    return to_frame(result.rows), result
