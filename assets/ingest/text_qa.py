"""Readers for text-only medical MCQ datasets, normalized into one ``text_qa_items`` schema.

MedQA-USMLE (jsonl), MedMCQA (jsonl, 1-based ``cop``), PubMedQA (``ori_pqal.json``) and a generic reader
for CSV/TSV/JSONL files whose columns are declared in a ``mcq_mapping.yaml`` beside them (its keys and
their validation: :mod:`assets.ingest.mcq_mapping`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import polars as pl

from assets.common.records import ReadResult, Rejection, SourceError
from storage.sources import SourceDir

from .mcq_mapping import iter_rows, load_mapping
from .vqa import LETTERS, RowProblem, _collect, _text, dedupe, normalize_split, split_from_name, to_frame

TEXT_QA_DATASETS = ("medqa", "medmcqa", "pubmedqa", "mcq_custom")

LICENSES = {"medqa": "MIT", "medmcqa": "MIT", "pubmedqa": "MIT"}

TEXT_QA_SCHEMA = {
    "item_id": pl.Utf8,
    "dataset": pl.Utf8,
    "split": pl.Utf8,
    "question": pl.Utf8,
    "context": pl.Utf8,
    "options": pl.List(pl.Utf8),
    "answer_label": pl.Utf8,
    "answer": pl.Utf8,
    "explanation": pl.Utf8,
    "subject": pl.Utf8,
    "source_ref": pl.Utf8,
    "license": pl.Utf8,
}


def make_mcq(
    *,
    item_id: str,
    dataset: str,
    split: Any,
    question: Any,
    options: list[Any],
    answer_label: Any,
    explanation: Any = None,
    context: Any = None,
    subject: Any = None,
    source_ref: str,
    license: str | None,
) -> dict[str, Any]:
    """One normalized ``text_qa_items`` row, or :class:`RowProblem` with the reason."""
    question = _text(question)
    if not question:
        raise RowProblem("empty question")
    options = [_text(o) for o in options]
    if len(options) < 2:
        raise RowProblem(f"fewer than two options: {options}")
    if any(not o for o in options):
        raise RowProblem(f"empty option text among {options}")
    label = _text(answer_label).upper()
    if len(label) != 1 or label not in LETTERS[: len(options)]:
        raise RowProblem(f"answer letter outside the options: {answer_label!r} with {len(options)} options")
    if not license:
        raise RowProblem("no licence declared for this source")
    return {
        "item_id": item_id,
        "dataset": dataset,
        "split": normalize_split(split),
        "question": question,
        "context": _text(context) or None,
        "options": options,
        "answer_label": label,
        "answer": options[LETTERS.index(label)],
        "explanation": _text(explanation) or None,
        "subject": _text(subject) or None,
        "source_ref": source_ref,
        "license": license,
    }


def _qhash(text: str) -> str:
    return hashlib.sha1(text.strip().encode()).hexdigest()[:16]


def _split_from_name(src: SourceDir, rel: str) -> str:
    split = split_from_name(rel)
    if split is None:
        raise SourceError(src.path(rel), "cannot tell the split from the file name",
                          "name the file *train*, *dev* or *test*")
    return split


def _jsonl_rows(src: SourceDir, rel: str, out: ReadResult, what: str):
    """The JSON objects of a JSON-lines file; every bad line goes to ``out.rejected`` with its reason."""
    for line_no, r, err in src.iter_jsonl(rel, what):
        if err:
            out.rejected.append(Rejection(src.path(rel), f"line {line_no}", err, raw=r))
            continue
        yield line_no, r


def read_medqa(src: SourceDir) -> ReadResult:
    """MedQA-USMLE jsonl (``question, options{A..}, answer_idx``); split from the file name.

    Ids are a hash of the question text, so they survive reordering of the file.
    """
    files = src.glob("*.jsonl") or src.glob("**/*.jsonl")
    if not files:
        raise SourceError(src.root, "no MedQA .jsonl file found", "point the medqa source at the MedQA questions folder")
    out = ReadResult()
    for rel in files:
        split = _split_from_name(src, rel)
        for line_no, r in _jsonl_rows(src, rel, out, "MedQA file"):
            def build(r=r, line_no=line_no, rel=rel, split=split):
                opts = r["options"]
                letters = sorted(opts)
                if letters != list(LETTERS[: len(letters)]):
                    raise RowProblem(f"option letters are not A.. in order: {letters}")
                return make_mcq(
                    item_id=f"medqa:{split}-{_qhash(r['question'])}", dataset="medqa", split=split,
                    question=r["question"], options=[opts[k] for k in letters], answer_label=r.get("answer_idx"),
                    subject=r.get("meta_info"), source_ref=f"{rel}#L{line_no}", license=LICENSES["medqa"],
                )
            _collect(out, src.path(rel), f"line {line_no}", r, build)
    return out


def read_medmcqa(src: SourceDir) -> ReadResult:
    """MedMCQA jsonl (``train.json``, ``dev.json``, ``test.json``): ``opa..opd``, 1-based ``cop``, ``exp``."""
    files = [f for f in ("train.json", "dev.json", "test.json") if src.exists(f)]
    if not files:
        raise SourceError(src.root, "no MedMCQA file (train.json, dev.json, test.json) found",
                          "point the medmcqa source at the MedMCQA data folder")
    out = ReadResult()
    for rel in files:
        split = _split_from_name(src, rel)
        for line_no, r in _jsonl_rows(src, rel, out, "MedMCQA file"):
            def build(r=r, line_no=line_no, rel=rel, split=split):
                cop = r.get("cop")
                if not isinstance(cop, int) or not 1 <= cop <= 4:
                    raise RowProblem(f"answer letter outside the options: cop={cop!r} (expected 1..4)")
                return make_mcq(
                    item_id=f"medmcqa:{_text(r['id'])}", dataset="medmcqa", split=split, question=r["question"],
                    options=[r["opa"], r["opb"], r["opc"], r["opd"]], answer_label=LETTERS[cop - 1],
                    explanation=r.get("exp"), subject=r.get("subject_name"),
                    source_ref=f"{rel}#L{line_no}", license=LICENSES["medmcqa"],
                )
            _collect(out, src.path(rel), f"line {line_no}", r, build)
    return out


PUBMEDQA_OPTIONS = ["yes", "no", "maybe"]


def read_pubmedqa(src: SourceDir) -> ReadResult:
    """PubMedQA PQA-L ``ori_pqal.json``; the PMIDs in ``test_ground_truth.json`` form the test split.

    The abstract goes to ``context`` and the long answer to ``explanation``.
    """
    data = src.load_json("ori_pqal.json", "PubMedQA annotation file")
    if not isinstance(data, dict):
        raise SourceError(src.path("ori_pqal.json"), "expected an object keyed by PMID", "use the released ori_pqal.json")
    test_ids = set(src.load_json("test_ground_truth.json")) if src.exists("test_ground_truth.json") else set()
    out = ReadResult()
    for pmid, r in data.items():
        def build(pmid=pmid, r=r):
            decision = _text(r.get("final_decision")).lower()
            if decision not in PUBMEDQA_OPTIONS:
                raise RowProblem(f"answer letter outside the options: final_decision={decision!r}")
            return make_mcq(
                item_id=f"pubmedqa:{pmid}", dataset="pubmedqa", split="test" if pmid in test_ids else "train",
                question=r["QUESTION"], context=" ".join(r.get("CONTEXTS") or []), options=PUBMEDQA_OPTIONS,
                answer_label=LETTERS[PUBMEDQA_OPTIONS.index(decision)], explanation=r.get("LONG_ANSWER"),
                subject=", ".join(r.get("MESHES") or []) or None, source_ref=f"ori_pqal.json#{pmid}",
                license=LICENSES["pubmedqa"],
            )
        _collect(out, src.path("ori_pqal.json"), pmid, r, build)
    return out


def read_mcq_generic(src: SourceDir) -> ReadResult:
    """CSV, TSV or JSON-lines MCQs with the columns declared in ``mcq_mapping.yaml`` in the source folder.

    The mapping (keys in :mod:`assets.ingest.mcq_mapping`) is validated as a whole, against the files too,
    before any row is read; a row that cannot be read unambiguously is quarantined with the reason.
    """
    mapping = load_mapping(src)
    out = ReadResult()
    for rel in mapping.files:
        path = src.path(rel)
        for line_no, r, err in iter_rows(src, rel, mapping.columns):
            if err:
                out.rejected.append(Rejection(path, f"line {line_no}", err, raw=r))
                continue

            def build(r=r, line_no=line_no, rel=rel):
                question, options = _text(r.get(mapping.question)), mapping.row_options(r)
                return make_mcq(
                    item_id=mapping.row_id(r, question, options), dataset=mapping.dataset,
                    split=mapping.row_split(r, rel), question=question, options=options,
                    answer_label=mapping.row_label(r, options),
                    explanation=r.get(mapping.explanation) if mapping.explanation else None,
                    context=r.get(mapping.context) if mapping.context else None,
                    subject=r.get(mapping.subject) if mapping.subject else None,
                    source_ref=f"{rel}#L{line_no}", license=mapping.license,
                )
            _collect(out, path, f"line {line_no}", r, build)
    return out


READERS: dict[str, Callable[[SourceDir], ReadResult]] = {
    "medqa": read_medqa,
    "medmcqa": read_medmcqa,
    "pubmedqa": read_pubmedqa,
    "mcq_custom": read_mcq_generic,
}


def read_text_qa(dataset: str, src: SourceDir) -> tuple[pl.DataFrame, ReadResult]:
    """Read one text-QA dataset: the normalized table and the full read result (with rejections)."""
    if dataset not in READERS:
        raise ValueError(f"unknown text-QA dataset {dataset!r}; known: {', '.join(READERS)}")
    result = dedupe(READERS[dataset](src))
    return to_frame(result.rows, TEXT_QA_SCHEMA), result
