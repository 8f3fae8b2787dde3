"""Answer location and option scoring: where the answer starts, the option letters' log-probs after
``<answer>`` with and without the inserted blocks (:func:`score_answers`)."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..generation import Context, next_token_logprobs, token_ids
from ..protocol import ANSWER_OPEN, OPTION_LETTERS, QUERY_OPEN
from .types import Piece, RolloutResult, Trajectory


def _ends(tokenizer: Any, ids: list[int]) -> list[int]:
    """Character offset at which each token of ``ids`` ends in ``decode(ids)``."""
    return [len(tokenizer.decode(ids[: i + 1], skip_special_tokens=False)) for i in range(len(ids))]


def _token_at(ends: list[int], char: int) -> int:
    """Index of the token that holds character ``char`` (``ends`` from :func:`_ends`)."""
    return next(i for i, e in enumerate(ends) if e > char)


def _answer_piece(t: Trajectory) -> Piece | None:
    """The piece holding the last ``<answer>`` opener: a sampled piece whose text has it, or a
    system-inserted opener (kind ``answer``)."""
    for p in reversed(t.pieces):
        if p.inserted and p.kind == "answer":
            return p
        if not p.inserted and ANSWER_OPEN in p.text:
            return p
    return None


def answer_cut(tokenizer: Any, t: Trajectory) -> tuple[int, str] | None:
    """Where to cut a trajectory before its last ``<answer>`` (the model's or the system's): ``(index,
    residue)``, the completion index of the token that holds the tag's ``<``, and the text that token
    carries before the ``<`` (with byte-level BPE ``</think><answer>`` is ``</`` ``think`` ``><`` ``answer``
    ...: cutting at ``><`` drops the ``>`` of ``</think>``, which the caller must put back). None when there
    is no answer."""
    piece = _answer_piece(t)
    if piece is None:
        return None
    if piece.inserted:
        return piece.start, ""
    return _cut_before(tokenizer, t, piece, ANSWER_OPEN)


def _cut_before(tokenizer: Any, t: Trajectory, piece: Piece, tag: str) -> tuple[int, str]:
    """``(index, residue)`` for the last ``tag`` in a sampled ``piece``: the completion index of the token
    holding the tag's ``<``, and the text that token carries before it."""
    ids = t.completion_ids[piece.start : piece.end]
    text = tokenizer.decode(ids, skip_special_tokens=False)
    ends = _ends(tokenizer, ids)
    at = text.rfind(tag)
    i = _token_at(ends, at)
    begin = ends[i - 1] if i else 0
    return piece.start + i, text[begin:at]


def answer_start(tokenizer: Any, t: Trajectory) -> int | None:
    """Completion index of the token holding the ``<`` of the last ``<answer>`` tag, or None."""
    cut = answer_cut(tokenizer, t)
    return None if cut is None else cut[0]


def answer_point(tokenizer: Any, t: Trajectory) -> tuple[int, str] | None:
    """``(index, rest)``: the completion index of the first token the policy sampled that holds a
    non-blank character after the last ``<answer>`` (the answer's first token), and ``rest``, the part of
    the tag that token still carries (``">"`` when the policy wrote ``<answer`` then ``>B``, as Qwen's
    tokenizer spells ``<answer>B``; ``""`` when the tag ended in earlier tokens). None when there is no
    answer or no sampled token follows it. Nothing assumes the tag is one token."""
    piece = _answer_piece(t)
    if piece is None:
        return None
    if piece.inserted:
        i = piece.end
        while (
            i < len(t.completion_ids)
            and t.env_mask[i] == 1
            and not tokenizer.decode(t.completion_ids[i : i + 1], skip_special_tokens=False).strip()
        ):
            i += 1
        return (i, "") if i < len(t.completion_ids) and t.env_mask[i] == 1 else None
    ids = t.completion_ids[piece.start : piece.end]
    text = tokenizer.decode(ids, skip_special_tokens=False)
    tag_end = text.rfind(ANSWER_OPEN) + len(ANSWER_OPEN)
    first = next((c for c in range(tag_end, len(text)) if not text[c].isspace()), None)
    if first is None:
        return None
    ends = _ends(tokenizer, ids)
    i = _token_at(ends, first)
    begin = ends[i - 1] if i else 0
    return piece.start + i, text[begin:tag_end] if begin < tag_end else ""


def answer_position(tokenizer: Any, t: Trajectory) -> int | None:
    """Completion index of the answer's first token (:func:`answer_point`), or None."""
    point = answer_point(tokenizer, t)
    return None if point is None else point[0]


def counterfactual_cut(tokenizer: Any, t: Trajectory) -> tuple[int, str] | None:
    """Where the counterfactual of the confidence-gain reward ends the policy's reasoning: ``(index,
    residue)``, the completion index of the token holding the ``<`` of the ``<query>`` that asked for the
    first inserted block (the reasoning before the first query), and the text that token carries before the
    ``<`` (the ``>`` of ``</think>`` in ``</think><query>``, spelled ``</`` ``think`` ``><`` ``query``). A
    first insertion with no query before it in the same sampled piece (a pre-retrieval of the RAG control, a
    CDIR case) cuts at its own start. None when nothing but the answer frame was inserted."""
    first = next(
        (n for n, p in enumerate(t.pieces) if p.inserted and p.kind not in ("answer", "eos", "residue")),
        None,
    )
    if first is None:
        return None
    piece = t.pieces[first]
    before = t.pieces[first - 1] if first else None
    if piece.kind != "retrieve" or before is None or before.inserted or QUERY_OPEN not in before.text:
        return piece.start, ""
    return _cut_before(tokenizer, t, before, QUERY_OPEN)


def counterfactual_ids(tokenizer: Any, t: Trajectory) -> list[int] | None:
    """The completion part of the confidence-gain counterfactual (:func:`score_answers`): the policy's ids
    up to :func:`counterfactual_cut`, then the cut token's residue and ``<answer>`` tokenised; the next token
    is the answer's first. None when nothing was inserted before the answer."""
    cut = counterfactual_cut(tokenizer, t)
    if cut is None:
        return None
    at, residue = cut
    return t.completion_ids[:at] + tokenizer(residue + ANSWER_OPEN, add_special_tokens=False)["input_ids"]


def letter_token_ids(tokenizer: Any, letters: str = OPTION_LETTERS, rest: str = "") -> dict[str, list[int]]:
    """For each option letter, the ids of the single tokens that spell it at an answer's first token:
    ``rest`` (what is left of the ``<answer>`` tag, :func:`answer_point`), optional blank, the letter (``B``,
    `` B`` after a whole tag; ``>B`` after ``<answer``). Only spellings the tokenizer itself produces count
    (``tokenizer(s)`` is one token). Upper case only: the ground truth is upper-cased before lookup
    (docs/method.md §8)."""
    out: dict[str, list[int]] = {}
    for letter in letters:
        ids = {
            tuple(tokenizer(rest + blank + letter, add_special_tokens=False)["input_ids"])
            for blank in ("", " ", "\n")
        }
        out[letter] = sorted(i[0] for i in ids if len(i) == 1)
    return out


def _letter_logprobs(row: torch.Tensor, letter_ids: dict[str, list[int]]) -> dict[str, float]:
    return {L: float(torch.logsumexp(row[ids], dim=0)) if ids else -math.inf for L, ids in letter_ids.items()}


def score_answers(
    model: Any,
    tokenizer: Any,
    result: RolloutResult,
    letters: str = OPTION_LETTERS,
    batch_size: int = 16,
    counterfactual: bool = True,
) -> None:
    """Fill each trajectory's answer fields in place from two batched forward passes (one when
    ``counterfactual=False``):

    - ``answer_logprobs``: log-prob of each option letter as the first token after ``<answer>`` given the
      whole trajectory (retrieved passages included); ``answer_token_prob``: probability of the token the
      policy actually sampled there (the confidence η of CDIR);
    - ``answer_logprobs_no_retrieval``: the same in the counterfactual "answer without the retrieved
      passages": the prompt, the policy's reasoning up to the query that asked for the first inserted block
      (:func:`counterfactual_cut`), then ``<answer>`` inserted. Everything after that point goes, not only
      the passages: the policy's later reasoning usually restates them, and keeping it would bias the gain
      toward 0. Equal to ``answer_logprobs`` when nothing was inserted. With ``counterfactual=False`` it is
      left ``None`` (no counterfactual pass; evaluation needs only the confidence).
    Rows without a locatable answer keep ``None``. Images inserted after the prompt go with the passages.
    """
    tok = token_ids(tokenizer)
    letter_ids: dict[str, dict[str, list[int]]] = {}  # rest of the tag -> letter -> token ids
    with_ctx, cf_ctx, cf_rows, rows, rests = [], [], [], [], {}
    for i, (t, vision) in enumerate(zip(result.trajectories, result.vision, strict=True)):
        point = answer_point(tok, t)
        t.answer_position = pos = None if point is None else point[0]
        if point is None:
            continue
        rests[i] = point[1]
        if point[1] not in letter_ids:
            letter_ids[point[1]] = letter_token_ids(tok, letters, point[1])
        rows.append(i)
        with_ctx.append(Context(t.prompt_ids + t.completion_ids[:pos], vision))
        cut = counterfactual_cut(tok, t) if counterfactual else None
        if cut is not None and cut[0] < pos:
            # the reasoning before the first query, the '>' its cut token held, then the answer opener
            own = t.prompt_ids + counterfactual_ids(tok, t)
            start_id = getattr(getattr(model, "config", None), "vision_start_token_id", None)
            prompt_images = sum(1 for x in t.prompt_ids if x == start_id) if start_id is not None else 0
            cf_ctx.append(Context(own, vision.head(prompt_images)))  # inserted images go too
            cf_rows.append(i)
            if "" not in letter_ids:
                letter_ids[""] = letter_token_ids(tok, letters, "")
    if not rows:
        return
    pad = tok.pad_token_id
    with torch.no_grad():
        lp_with = next_token_logprobs(model, with_ctx, pad, batch_size)
        lp_cf = next_token_logprobs(model, cf_ctx, pad, batch_size) if cf_ctx else None
    for j, i in enumerate(rows):
        t = result.trajectories[i]
        t.answer_logprobs = _letter_logprobs(lp_with[j], letter_ids[rests[i]])
        t.answer_token_prob = float(lp_with[j, t.completion_ids[t.answer_position]].exp())
        t.answer_logprobs_no_retrieval = dict(t.answer_logprobs) if counterfactual else None
    # the counterfactual's tag is whole: letters as after a complete '<answer>'
    for j, i in enumerate(cf_rows):
        result.trajectories[i].answer_logprobs_no_retrieval = _letter_logprobs(lp_cf[j], letter_ids[""])
