"""The per-item ``eval_results`` table: its schema, how rows are built, scored and validated.

One row is one benchmark item answered by one checkpoint in one mode under one protocol. The rollout
fills what the model did (prediction, confidence, queries, passages, CDIR trace, tokens, latency);
:func:`score_predictions` fills what follows from the prediction and the gold answer (``correct``,
``token_recall``, ``correct_before_cdir``); :func:`validate_results` refuses a frame that breaks the
contract, naming the row and the fix. Metrics (``training.evaluation.metrics``) and the report
(``training.evaluation.report``) read only this table.

Protocols never mix:

- ``mcq``: closed questions as multiple-choice questions. ``prediction`` and ``gold`` are option letters
  (``A``..``J``), ``n_options`` is set, ``correct`` is letter equality (case-insensitive).
- ``open``: the full-set protocol with open answers. ``prediction`` and ``gold`` are answer texts;
  ``correct`` is exact match after :func:`normalize_answer`, ``token_recall`` the share of the gold
  answer's tokens found in the prediction. An optional judge model adds ``judge_correct`` and names
  itself in ``judge_model`` (``training.evaluation.judge``).

A missing prediction (the model gave no parseable answer) is kept as a row with ``prediction`` null and
``correct`` false: nothing is dropped from the denominator. Its ``confidence`` is null and it is left out
of calibration only (counted there as ``n_without_confidence``).
"""

from __future__ import annotations

import hashlib
import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import polars as pl

from .modes import MODES, RETRIEVAL_MODES  # the mode registry (training.evaluation.modes)

PROTOCOLS = ("mcq", "open")
CHECKPOINT_ORDER = ("base", "stage1", "stage2")
"""Display and comparison order of the usual checkpoint labels; other labels follow, sorted."""

LETTERS = "ABCDEFGHIJ"

EVAL_RESULTS_SCHEMA: dict[str, pl.DataType] = {
    # identity: which item, which model, how it was asked
    "benchmark": pl.Utf8,  # partition key: vqa_rad, slake, medqa, pubmedqa, ecbench, ...
    "benchmark_version": pl.Utf8,  # version (content hash / tag) of the benchmark items used
    "item_id": pl.Utf8,  # the item's id in its benchmark table; unique per benchmark
    "checkpoint": pl.Utf8,  # label: base, stage1, stage2 (or another name)
    "checkpoint_version": pl.Utf8,  # the checkpoint manifest's hash: two runs of "stage2" differ here
    "mode": pl.Utf8,  # one of MODES
    "protocol": pl.Utf8,  # one of PROTOCOLS
    # the item, as the benchmark describes it (null where the benchmark has no such field)
    "answer_type": pl.Utf8,  # closed | open (the question's kind, not the protocol)
    "question_type": pl.Utf8,
    "modality": pl.Utf8,
    "organ": pl.Utf8,
    "question": pl.Utf8,
    "n_options": pl.Int32,  # mcq: number of options (chance = 1 / n_options); open: null
    # the answer and its score
    "prediction": pl.Utf8,  # mcq: a letter; open: answer text; null: no parseable answer
    "gold": pl.Utf8,  # mcq: the correct letter; open: the reference answer text
    "correct": pl.Boolean,  # filled by score_predictions: STRICT (an unparsed answer is wrong; the headline)
    "correct_forced": pl.Boolean,  # filled by score_predictions: mcq, the letter scored whether the model
    # wrote it or the forced choice gave it (forced-choice accuracy, shown beside the strict one)
    "token_recall": pl.Float64,  # open only: share of gold tokens in the prediction (multiset)
    "judge_model": pl.Utf8,  # open only: pinned id@revision of the judge, null when none was configured
    "judge_correct": pl.Boolean,  # open only: the judge's verdict, null when no judge
    "confidence": pl.Float64,  # one definition for every row: the probability of the answer's first token
    # (its option letter, mcq) right after <answer>, final pass; for a forced row, of the forced letter
    "answer_forced": pl.Boolean,  # mcq: the model wrote no answer naming an option in its budget; the system
    # appended <answer> and took the most likely option letter (forced choice); null for rows that answered
    "forced_prediction": pl.Utf8,  # mcq: that forced letter (prediction stays null: strict accuracy counts
    # the row wrong); null for rows that answered themselves
    # what the agent did
    "shown_image_refs": pl.List(pl.Utf8),  # shuffled_image: the images shown in place of the item's
    "queries": pl.List(pl.Utf8),  # queries issued, in order (rag_control: the question itself)
    "retrieved_ids": pl.List(pl.Utf8),  # passage ids returned, in order, over all rounds
    "n_rounds": pl.Int32,  # generation rounds (1 = answered without a query)
    "generated_tokens": pl.Int32,  # tokens sampled by the policy (inserted passages excluded)
    "latency_s": pl.Float64,  # wall seconds attributed to the item (a batch's time shared by its items)
    # CDIR (mode rwr_cdir; elsewhere triggered is false and the *_before_cdir fields are null)
    "cdir_lambda": pl.Float64,  # threshold λ: CDIR runs when the first pass's confidence < λ
    "cdir_triggered": pl.Boolean,
    "cdir_case_ids": pl.List(pl.Utf8),  # image cases appended, best first (empty when not triggered)
    "prediction_before_cdir": pl.Utf8,  # the first pass's answer (equals prediction when not triggered)
    "confidence_before_cdir": pl.Float64,
    "correct_before_cdir": pl.Boolean,  # filled by score_predictions
    # pinned versions
    "kb_tag": pl.Utf8,  # LanceDB tag of the text KB searched; null only in mode direct
    "image_index_tag": pl.Utf8,  # tag of the CDIR image index; null unless mode rwr_cdir
}

REQUIRED_COLUMNS = (
    "benchmark",
    "item_id",
    "checkpoint",
    "mode",
    "protocol",
    "answer_type",
    "gold",
    "n_rounds",
    "generated_tokens",
    "latency_s",
)
"""Columns a record must give to :func:`results_frame`; the others default to null (lists to empty)."""

_LIST_COLUMNS = tuple(c for c, t in EVAL_RESULTS_SCHEMA.items() if isinstance(t, pl.List))
_SCORED_COLUMNS = ("correct", "correct_forced", "token_recall", "correct_before_cdir")
_LETTER_INDEX = {letter: i for i, letter in enumerate(LETTERS)}
_NON_NULL = REQUIRED_COLUMNS + ("correct", "cdir_triggered") + _LIST_COLUMNS


class EvalResultsError(ValueError):
    """An ``eval_results`` frame that breaks the contract; the message names the rows and the fix."""


def results_frame(records: Iterable[Mapping[str, Any]]) -> pl.DataFrame:
    """Rows from the rollout as an ``eval_results`` frame (columns in schema order, types cast).

    Each record must hold :data:`REQUIRED_COLUMNS`; missing optional fields become null (list fields an
    empty list, ``cdir_triggered`` false). Unknown keys are refused so that a typo cannot vanish.
    Scoring columns are left as given (null) until :func:`score_predictions`.
    """
    rows = []
    for i, rec in enumerate(records):
        unknown = sorted(set(rec) - set(EVAL_RESULTS_SCHEMA))
        if unknown:
            raise EvalResultsError(
                f"record {i}: unknown fields {unknown}; the schema is EVAL_RESULTS_SCHEMA "
                "in training/evaluation/results.py"
            )
        missing = [c for c in REQUIRED_COLUMNS if rec.get(c) is None]
        if missing:
            raise EvalResultsError(f"record {i} (item {rec.get('item_id')!r}): missing {missing}")
        row = {c: rec.get(c) for c in EVAL_RESULTS_SCHEMA}
        for c in _LIST_COLUMNS:
            row[c] = list(row[c] or [])
        row["cdir_triggered"] = bool(row["cdir_triggered"])
        rows.append(row)
    return pl.DataFrame(rows, schema=EVAL_RESULTS_SCHEMA)


# ---- answer normalization and per-item scores -----------------------------------------------------
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation})


def normalize_answer(text: str | None) -> str:
    """Lower case, punctuation to spaces, articles (a, an, the) removed, whitespace collapsed.

    The SQuAD-style normalization used for open-answer exact match and token recall.
    """
    if text is None:
        return ""
    t = _ARTICLES.sub(" ", text.lower().translate(_PUNCT))
    return " ".join(t.split())


def exact_match(prediction: str | None, gold: str) -> bool:
    """Open answers: equal after :func:`normalize_answer`; an empty prediction never matches."""
    p = normalize_answer(prediction)
    return bool(p) and p == normalize_answer(gold)


def token_recall(prediction: str | None, gold: str) -> float:
    """Share of the gold answer's normalized tokens found in the prediction (multiset counts).

    ``|tokens(gold) ∩ tokens(prediction)| / |tokens(gold)|``, the open-set recall of the medical VQA
    literature (LLaVA-Med). A gold answer with no tokens after normalization is an error.
    """
    g = Counter(normalize_answer(gold).split())
    if not g:
        raise EvalResultsError(f"gold answer {gold!r} has no tokens after normalization")
    p = Counter(normalize_answer(prediction).split())
    return sum((g & p).values()) / sum(g.values())


def letter_match(prediction: str | None, gold: str) -> bool:
    """MCQ answers: the predicted letter equals the gold letter (case and surrounding space ignored)."""
    return prediction is not None and prediction.strip().upper() == gold.strip().upper()


def _score(protocol: str, prediction: str | None, gold: str) -> bool:
    return letter_match(prediction, gold) if protocol == "mcq" else exact_match(prediction, gold)


def score_predictions(results: pl.DataFrame) -> pl.DataFrame:
    """Fill ``correct`` (strict), ``correct_forced``, ``token_recall`` (open) and ``correct_before_cdir``
    (rwr_cdir) from the answers.

    Recomputes those columns from ``prediction``, ``forced_prediction``, ``prediction_before_cdir`` and
    ``gold``, so a frame can never hold a score that disagrees with its own answers. ``correct`` is strict:
    a row without a parsed prediction is wrong even when a forced choice exists; ``correct_forced`` scores
    the forced letter in its place (mcq; equal to ``correct`` for open rows). Returns a new frame in schema
    order.
    """
    _check_columns(results)
    protocols = results["protocol"].to_list()
    golds = results["gold"].to_list()
    preds = results["prediction"].to_list()
    forced = results["forced_prediction"].to_list()
    before = results["prediction_before_cdir"].to_list()
    modes = results["mode"].to_list()
    correct, correct_forced, recall, correct_before = [], [], [], []
    for i, (proto, gold, pred, fp, pb, mode) in enumerate(
        zip(protocols, golds, preds, forced, before, modes, strict=True)
    ):
        if proto not in PROTOCOLS:
            raise EvalResultsError(f"row {i}: protocol {proto!r} is not one of {PROTOCOLS}")
        if gold is None:
            raise EvalResultsError(f"row {i} (item {results['item_id'][i]!r}): gold answer is null")
        correct.append(_score(proto, pred, gold))
        correct_forced.append(_score(proto, pred if pred is not None else fp, gold))
        recall.append(token_recall(pred, gold) if proto == "open" else None)
        correct_before.append(_score(proto, pb, gold) if mode == "rwr_cdir" else None)
    return results.with_columns(
        pl.Series("correct", correct, dtype=pl.Boolean),
        pl.Series("correct_forced", correct_forced, dtype=pl.Boolean),
        pl.Series("token_recall", recall, dtype=pl.Float64),
        pl.Series("correct_before_cdir", correct_before, dtype=pl.Boolean),
    ).select(list(EVAL_RESULTS_SCHEMA))


def results_digest(results: pl.DataFrame) -> str:
    """sha256 of an ``eval_results`` frame in a fixed row order (benchmark, item, checkpoint, mode) and column
    order: what a report records of the rows it was built from, and what an audit recomputes."""
    keys = [c for c in ("benchmark", "item_id", "checkpoint", "mode") if c in results.columns]
    ordered = results.select(sorted(results.columns)).sort(keys, maintain_order=True) if keys else results
    return hashlib.sha256(ordered.write_ndjson().encode()).hexdigest()


# ---- validation -----------------------------------------------------------------------------------
def _check_columns(results: pl.DataFrame) -> None:
    missing = [c for c in EVAL_RESULTS_SCHEMA if c not in results.columns]
    if missing:
        raise EvalResultsError(f"eval_results frame lacks columns {missing}; build it with results_frame()")
    wrong = [
        f"{c}: {results.schema[c]} (expected {t})"
        for c, t in EVAL_RESULTS_SCHEMA.items()
        if results.schema[c] != t
    ]
    if wrong:
        raise EvalResultsError(f"eval_results columns with the wrong type: {wrong}")


def _bad_rows(results: pl.DataFrame, mask: pl.Expr | pl.Series, what: str, fix: str) -> str | None:
    bad = results.with_row_index("_row").filter(mask)
    if bad.is_empty():
        return None
    shown = ", ".join(
        f"row {r} ({b}/{i}/{c}/{m})"
        for r, b, i, c, m in bad.select("_row", "benchmark", "item_id", "checkpoint", "mode")
        .head(5)
        .iter_rows()
    )
    return f"{bad.height} row(s) {what}: {shown}{' ...' if bad.height > 5 else ''}; {fix}"


def validate_results(results: pl.DataFrame) -> pl.DataFrame:
    """Check a scored ``eval_results`` frame; return it unchanged or raise :class:`EvalResultsError`.

    Checked: every schema column present with its type; required columns, ``correct`` and
    ``cdir_triggered`` non-null; known mode and protocol; one row per (benchmark, checkpoint, mode,
    protocol, item_id); mcq rows have a gold letter within ``n_options`` and open rows a token recall;
    confidences in [0, 1]; the scores agree with the answers (re-scored here); retrieval modes name their
    ``kb_tag``; CDIR fields only in mode rwr_cdir, a triggered row had a first-pass confidence below its
    λ and lists the cases it appended. All problems are reported together.
    """
    _check_columns(results)
    if results.is_empty():
        raise EvalResultsError("eval_results frame has no rows: an evaluation that scored nothing failed")
    c = pl.col
    problems = [
        *(
            _bad_rows(results, c(col).is_null(), f"with null {col}", "fill it in the rollout record")
            for col in _NON_NULL
        ),
        _bad_rows(results, ~c("mode").is_in(MODES), "with an unknown mode", f"use one of {MODES}"),
        _bad_rows(
            results, ~c("protocol").is_in(PROTOCOLS), "with an unknown protocol", f"use one of {PROTOCOLS}"
        ),
        _bad_rows(
            results,
            ~c("answer_type").is_in(["closed", "open"]),
            "with answer_type not closed/open",
            "take answer_type from the benchmark item",
        ),
        _bad_rows(
            results,
            pl.struct("benchmark", "checkpoint", "mode", "protocol", "item_id").is_duplicated(),
            "duplicated for one (benchmark, checkpoint, mode, protocol, item_id)",
            "evaluate each item once per checkpoint, mode and protocol",
        ),
        _bad_rows(
            results,
            (c("protocol") == "mcq")
            & (
                c("n_options").is_null()
                | (c("n_options") < 2)
                | (c("n_options") > len(LETTERS))
                | ~c("gold").str.to_uppercase().is_in(list(LETTERS))
                | (c("gold").str.to_uppercase().replace_strict(_LETTER_INDEX, default=99) >= c("n_options"))
            ),
            "in protocol mcq without a gold letter inside 2..10 options",
            "give gold as a letter and n_options",
        ),
        _bad_rows(
            results,
            c("forced_prediction").is_not_null()
            & (
                (c("protocol") != "mcq")
                | c("prediction").is_not_null()
                | ~c("answer_forced").fill_null(False)
            ),
            "with a forced_prediction beside a prediction, outside mcq, or without answer_forced",
            "a forced choice stands in for a missing mcq answer only (prediction null, answer_forced true)",
        ),
        _bad_rows(
            results,
            (c("shown_image_refs").list.len() > 0) & (c("mode") != "shuffled_image"),
            "with shown_image_refs outside mode shuffled_image",
            "only the shuffled-image control shows other images than the item's",
        ),
        _bad_rows(
            results,
            (c("protocol") == "open") & c("token_recall").is_null(),
            "in protocol open without token_recall",
            "run score_predictions",
        ),
        _bad_rows(
            results,
            (c("protocol") == "mcq") & (c("judge_model").is_not_null() | c("token_recall").is_not_null()),
            "in protocol mcq with open-answer scores",
            "judges and token recall apply to open answers only",
        ),
        _bad_rows(
            results,
            c("judge_model").is_null() != c("judge_correct").is_null(),
            "with judge_model and judge_correct not both set",
            "record the judge with its verdicts",
        ),
        _bad_rows(
            results,
            ~c("confidence").is_between(0, 1) | ~c("confidence_before_cdir").is_between(0, 1),
            "with a confidence outside [0, 1]",
            "store the probability, not a log-probability",
        ),
        _bad_rows(
            results,
            c("mode").is_in(RETRIEVAL_MODES) & c("kb_tag").is_null(),
            "in a retrieval mode without kb_tag",
            "pin the KB version searched",
        ),
        _bad_rows(
            results,
            (c("mode") != "rwr_cdir")
            & (
                c("cdir_triggered")
                | (c("cdir_case_ids").list.len() > 0)
                | c("cdir_lambda").is_not_null()
                | c("confidence_before_cdir").is_not_null()
                | c("prediction_before_cdir").is_not_null()
            ),
            "with CDIR fields outside mode rwr_cdir",
            "leave CDIR fields empty in other modes",
        ),
        _bad_rows(
            results,
            (c("mode") == "rwr_cdir") & c("cdir_lambda").is_null(),
            "in mode rwr_cdir without cdir_lambda",
            "record the threshold λ used",
        ),
        _bad_rows(
            results,
            c("cdir_triggered")
            & ((c("confidence_before_cdir") >= c("cdir_lambda")) | (c("cdir_case_ids").list.len() == 0)),
            "triggered although the first-pass confidence was >= λ or no case was appended",
            "trigger CDIR only when confidence < λ and record the case ids",
        ),
        _bad_rows(
            results,
            (c("mode") == "rwr_cdir")
            & ~c("cdir_triggered")
            & (
                (c("prediction_before_cdir").ne_missing(c("prediction")))
                | (c("confidence_before_cdir").ne_missing(c("confidence")))
            ),
            "not triggered but with a first pass that differs from the final answer",
            "without CDIR the first pass is the final answer",
        ),
    ]
    problems = [p for p in problems if p]
    if not problems:
        rescored = score_predictions(results)
        for col in _SCORED_COLUMNS:
            bad = _bad_rows(
                results,
                pl.Series(rescored[col].ne_missing(results[col]).to_list()),
                f"whose {col} disagrees with the answers",
                "run score_predictions",
            )
            if bad:
                problems.append(bad)
    if problems:
        raise EvalResultsError("eval_results invalid:\n- " + "\n- ".join(problems))
    return results
