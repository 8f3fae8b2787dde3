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


MAX_FIELD_CHARS = {"question": 20_000, "option": 4_000, "context": 200_000, "explanation": 50_000}
"""The longest text a field of a ``text_qa_items`` row may hold (characters). The longest fields of the
released MedQA (1,273 items), MedMCQA dev (4,183) and PubMedQA (1,000) are far shorter: question 3,543,
option 275, context 2,725, explanation 4,207 characters. A row with a longer field is quarantined naming the
field, never published (a 50 MB question would be copied into every prompt and every table read)."""


def _check_size(field: str, value: str | None) -> None:
    limit = MAX_FIELD_CHARS["option" if field.startswith("option") else field]
    if value is not None and len(value) > limit:
        raise RowProblem(
            f"{field} is {len(value):,} characters, above the limit of {limit:,} (MAX_FIELD_CHARS); "
            "a corrupt cell or a wrong column mapping?"
        )


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
    _check_size("question", question)
    for letter, option in zip(LETTERS, options, strict=False):
        _check_size(f"option {letter}", option)
    _check_size("context", as_text(context) or None)
    _check_size("explanation", as_text(explanation) or None)
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
