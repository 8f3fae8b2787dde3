"""The ``text_qa_items`` row: its schema and the one function that builds and validates a row."""

from __future__ import annotations

from typing import Any

import polars as pl

from .common import LETTERS, RowProblem, as_text, normalize_split

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
    question = as_text(question)
    if not question:
        raise RowProblem("empty question")
    options = [as_text(o) for o in options]
    if len(options) < 2:
        raise RowProblem(f"fewer than two options: {options}")
    if any(not o for o in options):
        raise RowProblem(f"empty option text among {options}")
    label = as_text(answer_label).upper()
    if len(label) != 1 or label not in LETTERS[: len(options)]:
        raise RowProblem(f"answer letter outside the options: {answer_label!r} with {len(options)} options")
    if not license:
        raise RowProblem("no licence declared for this source")
    return {
        "item_id": item_id,
        "dataset": dataset,
        "split": normalize_split(split),
        "question": question,
        "context": as_text(context) or None,
        "options": options,
        "answer_label": label,
        "answer": options[LETTERS.index(label)],
        "explanation": as_text(explanation) or None,
        "subject": as_text(subject) or None,
        "source_ref": source_ref,
        "license": license,
    }
