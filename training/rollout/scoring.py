"""Answer location and option scoring: where the answer starts, the option letters' log-probs after
``<answer>`` with and without the inserted blocks (:func:`score_answers`)."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..generation import Context, next_token_logprobs, token_ids
from ..protocol import ANSWER_OPEN, OPTION_LETTERS
from .types import Piece, RolloutResult, Trajectory


def _tag_end(tokenizer: Any, ids: list[int], marker: str) -> int | None:
    """Smallest ``i`` such that ``decode(ids[:i])`` contains ``marker`` (binary search), or None."""
    if marker not in tokenizer.decode(ids, skip_special_tokens=False):
        return None
    lo, hi = 1, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if marker in tokenizer.decode(ids[:mid], skip_special_tokens=False):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _answer_piece(t: Trajectory) -> Piece | None:
    """The piece holding the last ``<answer>`` opener: a sampled piece whose text has it, or a
    system-inserted opener (kind ``answer``)."""
    for p in reversed(t.pieces):
        if p.inserted and p.kind == "answer":
            return p
        if not p.inserted and ANSWER_OPEN in p.text:
            return p
    return None


def answer_start(tokenizer: Any, t: Trajectory) -> int | None:
    """Completion index of the first token of the last ``<answer>`` tag (the model's or the system's), or
    None."""
    piece = _answer_piece(t)
    if piece is None:
        return None
    if piece.inserted:
        return piece.start
    ids = t.completion_ids[piece.start : piece.end]
    end = _tag_end(tokenizer, ids, ANSWER_OPEN)
    text = tokenizer.decode(ids[:end], skip_special_tokens=False)
    before = len(text[: text.rfind(ANSWER_OPEN)])
    i = end - 1
    while i > 0 and len(tokenizer.decode(ids[:i], skip_special_tokens=False)) > before:
        i -= 1
    return piece.start + i


def answer_position(tokenizer: Any, t: Trajectory) -> int | None:
    """Completion index of the first non-blank token the policy sampled after the last ``<answer>`` (written
    by the model or inserted by the system); None when there is no answer, when no sampled token follows,
    or when that token also holds the tag's ``>`` (the boundary is not a token boundary)."""
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
        return i if i < len(t.completion_ids) and t.env_mask[i] == 1 else None
    ids = t.completion_ids[piece.start : piece.end]
    end = _tag_end(tokenizer, ids, ANSWER_OPEN)
    head = tokenizer.decode(ids[:end], skip_special_tokens=False)
    if head.rsplit(ANSWER_OPEN, 1)[1].strip():
        return None
    i = end
    while i < len(ids) and not tokenizer.decode(ids[i : i + 1], skip_special_tokens=False).strip():
        i += 1
    return piece.start + i if i < len(ids) else None


def letter_token_ids(tokenizer: Any, letters: str = OPTION_LETTERS) -> dict[str, list[int]]:
    """For each option letter, the single-token spellings of ``L`` and `` L`` (upper case only: the
    ground truth is upper-cased before lookup, docs/method.md §8)."""
    out: dict[str, list[int]] = {}
    for letter in letters:
        ids = {tuple(tokenizer(s, add_special_tokens=False)["input_ids"]) for s in (letter, " " + letter)}
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
    - ``answer_logprobs_no_retrieval``: the same from the counterfactual context with every inserted block
      removed (prompt + the policy's own tokens only); equal to ``answer_logprobs`` when nothing was inserted.
      With ``counterfactual=False`` it is left ``None`` (no counterfactual pass; evaluation needs only the
      confidence).
    Rows without a locatable answer keep ``None``. A system-inserted ``<answer>`` opener is not removed in the
    counterfactual: it is the answer's frame, not retrieved content.
    """
    tok = token_ids(tokenizer)
    letter_ids = letter_token_ids(tok, letters)
    with_ctx, cf_ctx, cf_rows, rows = [], [], [], []
    for i, (t, vision) in enumerate(zip(result.trajectories, result.vision, strict=True)):
        pos = answer_position(tok, t)
        t.answer_position = pos
        if pos is None:
            continue
        rows.append(i)
        with_ctx.append(Context(t.prompt_ids + t.completion_ids[:pos], vision))
        if counterfactual and any(p.inserted and p.kind != "answer" and p.start < pos for p in t.pieces):
            keep = [0] * len(t.completion_ids)
            for p in t.pieces:
                if not p.inserted or p.kind == "answer":
                    keep[p.start : p.end] = [1] * (p.end - p.start)
            own = [x for x, m in zip(t.completion_ids[:pos], keep[:pos], strict=True) if m == 1]
            start_id = getattr(getattr(model, "config", None), "vision_start_token_id", None)
            prompt_images = sum(1 for x in t.prompt_ids if x == start_id) if start_id is not None else 0
            cf_ctx.append(Context(t.prompt_ids + own, vision.head(prompt_images)))  # inserted images go too
            cf_rows.append(i)
    if not rows:
        return
    pad = tok.pad_token_id
    with torch.no_grad():
        lp_with = next_token_logprobs(model, with_ctx, pad, batch_size)
        lp_cf = next_token_logprobs(model, cf_ctx, pad, batch_size) if cf_ctx else None
    for j, i in enumerate(rows):
        t = result.trajectories[i]
        t.answer_logprobs = _letter_logprobs(lp_with[j], letter_ids)
        t.answer_token_prob = float(lp_with[j, t.completion_ids[t.answer_position]].exp())
        t.answer_logprobs_no_retrieval = dict(t.answer_logprobs) if counterfactual else None
    for j, i in enumerate(cf_rows):
        result.trajectories[i].answer_logprobs_no_retrieval = _letter_logprobs(lp_cf[j], letter_ids)
