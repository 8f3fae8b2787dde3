"""The ``vqa_items`` row: its schema and the one function that builds and validates a row."""

from __future__ import annotations

import hashlib
from typing import Any

import polars as pl

from .common import LETTERS, RowProblem, as_text, normalize_split, yes_no

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


def two_option_form(item_id: str, answer: str) -> tuple[list[str], str] | None:
    """For a yes/no answer: the options ``[Yes, No]`` in an order fixed by the item id, and the letter.

    The order depends only on a hash of the item id, so it is the same on every run and the correct
    letter falls on A and B about equally often across a dataset.
    """
    yn = yes_no(answer)
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
    license: str,
) -> dict[str, Any]:
    """One normalized ``vqa_items`` row, or :class:`RowProblem` with the reason it cannot be one."""
    question, answer = as_text(question), as_text(answer)
    if not question:
        raise RowProblem("empty question")
    options = [as_text(o) for o in (options or [])]
    if options and any(not o for o in options):
        raise RowProblem("empty option text")
    if answer_label is not None:
        answer_label = as_text(answer_label).upper()
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
        "modality": as_text(modality) or None,
        "organ": as_text(organ) or None,
        "question_type": as_text(question_type) or None,
        "language": language,
        "source_ref": source_ref,
        "license": license,
    }
