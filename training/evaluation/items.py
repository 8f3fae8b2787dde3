"""Benchmark items for evaluation: one normalised frame from the repository's item tables.

:func:`benchmark_items` takes the rows of one of the repository's item tables and returns the columns
:func:`training.evaluation.evaluate.evaluate` reads (:data:`EVAL_ITEM_SCHEMA`), one row per item. The source
table is recognised by its columns:

- ``vqa_items`` (``dataset``, ``image_refs``, ``answer_type`` ...): rows of ``dataset == benchmark``; SLAKE's
  English subset through ``language`` (rows whose ``language`` differs are not part of the benchmark);
- ``text_qa_items`` (``dataset``, ``context``, no images): rows of ``dataset == benchmark``; the PubMedQA
  abstract travels as ``context``; MedQA's and MedMCQA's ``subject`` (exam step, specialty) become
  ``question_type`` (PubMedQA's ``subject`` is a MeSH list, not a question type, and is not used);
- ECBench items (``clip_id``, ``benchmark``): rows of ``benchmark == "ecbench"``; modality
  ``Echocardiography``, organ ``Heart``; the keyframe ids are the item's images.

Protocol per item, never mixed in one row:

- ``mcq``: the item has options and a gold letter (or an answer text equal to exactly one option): ``gold``
  is the letter, ``n_options`` the number of options;
- ``open``: the item has no options (open questions, and closed ones that are not yes/no): ``gold`` is the
  answer text, scored by exact match and token recall (:mod:`training.evaluation.results`).

An item that fits neither (options but no resolvable gold letter, more options than letters, an open
answer with no tokens, no question) raises :class:`BenchmarkItemsError` naming the items: the item tables'
contracts should have quarantined them, so this is a bug upstream, not something to skip silently.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from ..protocol import extract_choice
from .results import LETTERS, normalize_answer

EVAL_ITEM_SCHEMA: dict[str, pl.DataType] = {
    "item_id": pl.Utf8,
    "question": pl.Utf8,
    "context": pl.Utf8,  # text shown before the question (PubMedQA abstract), else null
    "options": pl.List(pl.Utf8),  # mcq: the option texts, in letter order; open: empty
    "gold": pl.Utf8,  # mcq: the correct letter; open: the reference answer text
    "protocol": pl.Utf8,  # mcq | open
    "answer_type": pl.Utf8,  # closed | open (the question's kind, from the benchmark)
    "question_type": pl.Utf8,
    "modality": pl.Utf8,
    "organ": pl.Utf8,
    "image_refs": pl.List(pl.Utf8),  # content ids of the item's images (Storage layout), empty for text
    "n_options": pl.Int32,
}

SUBJECT_AS_QUESTION_TYPE = ("medqa", "medmcqa")
ECBENCH_MODALITY = "Echocardiography"
ECBENCH_ORGAN = "Heart"


class BenchmarkItemsError(ValueError):
    """Benchmark rows that cannot be evaluated; the message names the items and the fix."""


def _kind(frame: pl.DataFrame) -> str:
    cols = set(frame.columns)
    if {"clip_id", "benchmark", "image_refs", "options", "answer_label"} <= cols:
        return "ecbench"
    if {"dataset", "image_refs", "answer_type", "options", "answer"} <= cols:
        return "vqa_items"
    if {"dataset", "context", "options", "answer_label"} <= cols:
        return "text_qa_items"
    raise BenchmarkItemsError(
        f"unrecognised item table with columns {sorted(cols)}; expected vqa_items, text_qa_items or ECBench "
        "items (assets/ingest/vqa.py, assets/ingest/text_qa.py, assets/benchmark/ecbench.py)"
    )


def _col(frame: pl.DataFrame, name: str, dtype: pl.DataType = pl.Utf8) -> pl.Expr:
    return pl.col(name).cast(dtype) if name in frame.columns else pl.lit(None, dtype)


def _select(
    frame: pl.DataFrame, benchmark: str, kind: str, splits: Sequence[str] | None, language: str | None
) -> pl.DataFrame:
    key = "benchmark" if kind == "ecbench" else "dataset"
    rows = frame.filter(pl.col(key) == benchmark)
    if rows.is_empty():
        raise BenchmarkItemsError(
            f"no {kind} rows with {key} == {benchmark!r}; the table holds "
            f"{sorted(frame[key].unique().drop_nulls().to_list())}"
        )
    if splits is not None:
        rows = rows.filter(pl.col("split").is_in(list(splits)))
    if language is not None and "language" in rows.columns:
        rows = rows.filter(pl.col("language") == language)
    if rows.is_empty():
        have = (
            frame.filter(pl.col(key) == benchmark)
            .select([c for c in ("split", "language") if c in frame.columns])
            .unique()
            .to_dicts()
        )
        raise BenchmarkItemsError(
            f"{benchmark}: no rows in splits {list(splits) if splits else 'any'} "
            f"and language {language!r}; available: {have}"
        )
    return rows


def _gold(row: dict) -> tuple[str, str, int | None]:
    """(protocol, gold, n_options) of one row, or :class:`ValueError` with the reason."""
    options = list(row["options"] or [])
    if options:
        if len(options) > len(LETTERS):
            raise ValueError(f"{len(options)} options, more than the {len(LETTERS)} letters A-J")
        label = (row.get("answer_label") or "").strip().upper()
        if not label:
            label = extract_choice(row.get("answer"), options) or ""
        if len(label) != 1 or label not in LETTERS[: len(options)]:
            raise ValueError(
                f"no gold letter among {len(options)} options (answer_label "
                f"{row.get('answer_label')!r}, answer {row.get('answer')!r})"
            )
        return "mcq", label, len(options)
    answer = row.get("answer")
    if not normalize_answer(answer):
        raise ValueError(f"open question whose answer {answer!r} has no tokens after normalization")
    return "open", answer, None


def benchmark_items(
    frame: pl.DataFrame, benchmark: str, *, splits: Sequence[str] | None = None, language: str | None = "en"
) -> pl.DataFrame:
    """The items of ``benchmark`` in ``frame`` (a vqa_items, text_qa_items or ECBench frame), normalised to
    :data:`EVAL_ITEM_SCHEMA` and sorted by ``item_id``.

    ``splits``: keep only these splits (None: every split present; the caller picks the evaluation splits,
    e.g. with ``training.data.split_use``). ``language``: keep rows in this language when the table has a
    ``language`` column (SLAKE English); None keeps all. Raises :class:`BenchmarkItemsError` when nothing
    is selected, when item ids repeat, or when items cannot be given a protocol (see the module docstring).
    """
    kind = _kind(frame)
    rows = _select(frame, benchmark, kind, splits, language)
    if kind == "ecbench":
        base = rows.select(
            "item_id",
            "question",
            pl.lit(None, pl.Utf8).alias("context"),
            "options",
            "answer_label",
            "answer",
            pl.lit("closed").alias("answer_type"),
            _col(rows, "question_type"),
            pl.lit(ECBENCH_MODALITY).alias("modality"),
            pl.lit(ECBENCH_ORGAN).alias("organ"),
            "image_refs",
        )
    elif kind == "vqa_items":
        base = rows.select(
            "item_id",
            "question",
            pl.lit(None, pl.Utf8).alias("context"),
            "options",
            "answer_label",
            "answer",
            "answer_type",
            _col(rows, "question_type"),
            _col(rows, "modality"),
            _col(rows, "organ"),
            "image_refs",
        )
    else:
        qtype = _col(rows, "subject") if benchmark in SUBJECT_AS_QUESTION_TYPE else pl.lit(None, pl.Utf8)
        base = rows.select(
            "item_id",
            "question",
            _col(rows, "context"),
            "options",
            "answer_label",
            _col(rows, "answer"),
            pl.lit(None, pl.Utf8).alias("answer_type"),
            qtype.alias("question_type"),
            pl.lit(None, pl.Utf8).alias("modality"),
            pl.lit(None, pl.Utf8).alias("organ"),
            pl.lit([], pl.List(pl.Utf8)).alias("image_refs"),
        )
    dup = base.filter(pl.col("item_id").is_duplicated())["item_id"].unique().sort().to_list()
    if dup:
        raise BenchmarkItemsError(
            f"{benchmark}: {len(dup)} item id(s) repeat, e.g. {dup[:5]}; each item once"
        )
    out, bad = [], []
    for row in base.iter_rows(named=True):
        try:
            if not (row["question"] or "").strip():
                raise ValueError("empty question")
            protocol, gold, n = _gold(row)
        except ValueError as e:
            bad.append(f"{row['item_id']}: {e}")
            continue
        answer_type = (row["answer_type"] or ("closed" if protocol == "mcq" else "open")).strip().lower()
        out.append(
            {
                "item_id": row["item_id"],
                "question": row["question"],
                "context": row["context"],
                "options": list(row["options"] or []) if protocol == "mcq" else [],
                "gold": gold,
                "protocol": protocol,
                "answer_type": answer_type,
                "question_type": row["question_type"],
                "modality": row["modality"],
                "organ": row["organ"],
                "image_refs": list(row["image_refs"] or []),
                "n_options": n,
            }
        )
    if bad:
        raise BenchmarkItemsError(
            f"{benchmark}: {len(bad)} item(s) cannot be evaluated: {bad[:5]}"
            f"{' ...' if len(bad) > 5 else ''}; fix or quarantine them in the item table"
        )
    return pl.DataFrame(out, schema=EVAL_ITEM_SCHEMA).sort("item_id")


def check_items(items: pl.DataFrame) -> pl.DataFrame:
    """``items`` if it has :data:`EVAL_ITEM_SCHEMA`'s columns and at least one row; raises otherwise."""
    missing = [c for c in EVAL_ITEM_SCHEMA if c not in items.columns]
    if missing:
        raise BenchmarkItemsError(
            f"items lack columns {missing}; normalise them with benchmark_items() first"
        )
    if items.is_empty():
        raise BenchmarkItemsError("no items to evaluate: an evaluation of 0 items is a failure")
    if items["item_id"].is_duplicated().any():
        raise BenchmarkItemsError("item ids repeat; normalise the items with benchmark_items()")
    bad = items.filter(~pl.col("protocol").is_in(["mcq", "open"]))
    if not bad.is_empty():
        raise BenchmarkItemsError(f"items with an unknown protocol: {bad['item_id'].head(5).to_list()}")
    return items.select(list(EVAL_ITEM_SCHEMA)).cast(EVAL_ITEM_SCHEMA)


__all__ = ["EVAL_ITEM_SCHEMA", "BenchmarkItemsError", "benchmark_items", "check_items"]
