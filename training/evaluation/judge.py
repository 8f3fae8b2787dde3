"""An optional judge model for open answers, pinned by id and recorded with every verdict.

Exact match and token recall (``training.evaluation.results``) are always computed. A judge adds a verdict per
open answer: a causal language model is asked whether the candidate answer means the same as the
reference answer, and says yes when its next-token probability of "yes" exceeds that of "no".

Pinning: a hub model needs a 40-hex commit ``revision`` (a branch name is not a pin); a local folder is
pinned by the SHA-256 of its files. The pin (:attr:`HFJudge.judge_id`) goes into ``judge_model`` on every
judged row. When a judge is configured but cannot be loaded, :func:`load_judge` raises
:class:`JudgeUnavailableError`: there is no silent fallback to exact match.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import polars as pl

from storage.provenance import folder_digest

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
PROMPT = (
    "You grade answers to medical questions.\n"
    "Question: {question}\n"
    "Reference answer: {gold}\n"
    "Candidate answer: {prediction}\n"
    "Does the candidate answer mean the same as the reference answer? Reply yes or no.\n"
    "Reply:"
)


class JudgeUnavailableError(RuntimeError):
    """A judge was configured but cannot be used; the message says what is missing and what to do."""


class AnswerJudge(Protocol):
    """What :func:`apply_judge` needs: a pinned id and a batch verdict."""

    judge_id: str

    def judge(self, questions: Sequence[str], golds: Sequence[str], predictions: Sequence[str]) -> list[bool]:
        """One verdict per (question, gold, prediction): True when the prediction is judged correct."""
        ...


class HFJudge:
    """A transformers causal LM used as a yes/no judge (see module docstring)."""

    def __init__(self, model, tokenizer, judge_id: str, *, batch_size: int = 8):
        import torch

        self.model, self.tokenizer, self.judge_id, self.batch_size = model, tokenizer, judge_id, batch_size
        self._torch = torch
        self.yes_ids = self._single_token_ids(("yes", " yes", "Yes", " Yes"))
        self.no_ids = self._single_token_ids(("no", " no", "No", " No"))
        if not self.yes_ids or not self.no_ids:
            raise JudgeUnavailableError(
                f"judge {judge_id}: its tokenizer has no single token for 'yes' or 'no'; "
                "use an instruction-tuned causal LM with a word-level vocabulary"
            )

    def _single_token_ids(self, words: Sequence[str]) -> list[int]:
        ids = {tuple(self.tokenizer.encode(w, add_special_tokens=False)) for w in words}
        return sorted({t[0] for t in ids if len(t) == 1})

    def _prompt(self, question: str, gold: str, prediction: str) -> str:
        text = PROMPT.format(question=question, gold=gold, prediction=prediction)
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
            )
        return text

    def judge(self, questions: Sequence[str], golds: Sequence[str], predictions: Sequence[str]) -> list[bool]:
        """Verdicts in batches of ``batch_size``: P(yes) > P(no) for the next token after the prompt."""
        torch = self._torch
        verdicts: list[bool] = []
        prompts = [self._prompt(q, g, p) for q, g, p in zip(questions, golds, predictions, strict=True)]
        for start in range(0, len(prompts), self.batch_size):
            enc = self.tokenizer(
                prompts[start : start + self.batch_size],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
            ).to(self.model.device)
            with torch.no_grad():
                logits = self.model(**enc).logits[:, -1, :].float()
            probs = torch.softmax(logits, dim=-1)
            yes = probs[:, self.yes_ids].sum(dim=-1)
            no = probs[:, self.no_ids].sum(dim=-1)
            verdicts += (yes > no).tolist()
        return verdicts


def load_judge(
    model: str | None,
    revision: str | None = None,
    *,
    device: str = "cpu",
    batch_size: int = 8,
    local_files_only: bool = False,
) -> HFJudge | None:
    """The judge named by ``model`` (a local folder or a hub id), or None when no judge is configured.

    A hub id needs ``revision`` as a 40-hex commit. Raises :class:`JudgeUnavailableError` when the folder
    does not exist, the revision is not a pin, or the model cannot be loaded (offline, not in the cache,
    not a causal LM) — never falls back to exact match.
    """
    if not model:
        return None
    path = Path(model)
    if path.is_dir():
        judge_id = f"{path.resolve()}@sha256:{folder_digest(path)}"
        source, kwargs = str(path), {}
    elif _HUB_ID.match(model) and not path.exists():
        if not revision or not _COMMIT.match(revision):
            raise JudgeUnavailableError(
                f"judge {model!r}: revision {revision!r} is not a commit hash; pin the "
                "judge to a 40-hex commit of its hub repository"
            )
        judge_id = f"{model}@{revision}"
        source, kwargs = model, {"revision": revision, "local_files_only": local_files_only}
    else:
        raise JudgeUnavailableError(
            f"judge {model!r}: no such folder and not a hub id (owner/name); "
            "point it at a model folder or a hub id with a pinned revision"
        )
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        lm = AutoModelForCausalLM.from_pretrained(source, **kwargs).to(device).eval()
    except (OSError, ValueError) as e:
        raise JudgeUnavailableError(
            f"judge {judge_id} could not be loaded: {str(e).rstrip('.')}. Make the model available "
            "(download it into the cache or a folder) or remove the judge setting; "
            "open answers are not re-scored without it"
        ) from e
    return HFJudge(lm, tokenizer, judge_id, batch_size=batch_size)


def apply_judge(results: pl.DataFrame, judge: AnswerJudge | None) -> pl.DataFrame:
    """Fill ``judge_model`` and ``judge_correct`` on the open-protocol rows; unchanged when ``judge`` is None.

    Rows without a prediction get ``judge_correct`` false without asking the model. The frame needs a
    ``question`` on every open row (the judge reads it); a missing one is an error, not a skipped row.
    """
    if judge is None:
        return results
    open_rows = results.with_row_index("_row").filter(pl.col("protocol") == "open")
    if open_rows.is_empty():
        return results
    missing_q = open_rows.filter(pl.col("question").is_null())
    if not missing_q.is_empty():
        raise ValueError(
            f"{missing_q.height} open row(s) have no question text (e.g. item "
            f"{missing_q['item_id'][0]!r}); the judge needs it: record the question in the rollout"
        )
    answered = open_rows.filter(pl.col("prediction").is_not_null())
    verdicts = judge.judge(
        answered["question"].to_list(), answered["gold"].to_list(), answered["prediction"].to_list()
    )
    if len(verdicts) != answered.height:
        raise RuntimeError(
            f"judge {judge.judge_id} returned {len(verdicts)} verdicts for {answered.height} answers"
        )
    by_row = dict(zip(answered["_row"].to_list(), verdicts, strict=True))
    rows = set(open_rows["_row"].to_list())
    judged = [by_row.get(i, False) if i in rows else None for i in range(results.height)]
    return results.with_columns(
        pl.Series("judge_correct", judged, dtype=pl.Boolean),
        pl.when(pl.Series([i in rows for i in range(results.height)]))
        .then(pl.lit(judge.judge_id))
        .otherwise(pl.col("judge_model"))
        .alias("judge_model"),
    )
