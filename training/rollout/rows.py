"""The mutable state of one trajectory while the rollout loop generates it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..generation import Vision
from .types import Piece, Trajectory


class _Row:
    """Mutable state of one trajectory while it is being generated."""

    def __init__(self, prompt_ids: list[int], vision: Vision):
        self.prompt_ids = list(prompt_ids)
        self.ids = list(prompt_ids)
        self.vision = vision
        self.pieces: list[Piece] = []
        self.piece_ids: list[list[int]] = []
        self.overflow: list[str] = []  # per piece: text its last token carries past a stop string
        self.env_mask: list[int] = []
        self.logprobs: list[float] = []  # sampling log-probs; 0.0 at inserted tokens (mask 0)
        self.logprobs_known = True  # False once a sampled piece came without log-probs
        self.queries: list[str] = []
        self.passage_ids: list[list[str]] = []
        self.passages: list[list[str]] = []
        self.rounds = 0
        self.generated = 0
        self.finish = ""
        self.prefix_ok = True
        self.done = False
        self.forced_answer = False

    def append(
        self,
        ids: list[int],
        *,
        inserted: bool,
        round: int,
        kind: str,
        logprobs: list[float] | None = None,
        overflow: str = "",
    ) -> None:
        start = len(self.ids) - len(self.prompt_ids)
        self.ids.extend(ids)
        self.piece_ids.append(list(ids))
        self.overflow.append(overflow)
        self.pieces.append(Piece(start, start + len(ids), inserted, round, kind))
        self.env_mask.extend([0 if inserted else 1] * len(ids))
        if logprobs is None and not inserted and ids:
            self.logprobs_known = False
        self.logprobs.extend(logprobs if logprobs is not None else [0.0] * len(ids))
        if not inserted:
            self.generated += len(ids)

    def drop_last_token(self) -> None:
        """Remove the last completion token (a sampled EOS before a forced answer); ``generated`` keeps
        counting it, since it was sampled."""
        self.ids.pop()
        self.piece_ids[-1].pop()
        self.overflow[-1] = ""
        self.pieces[-1].end -= 1
        self.env_mask.pop()
        self.logprobs.pop()
        if not self.piece_ids[-1]:
            self.piece_ids.pop()
            self.pieces.pop()
            self.overflow.pop()

    @classmethod
    def from_trajectory(cls, t: Trajectory, vision: Vision, upto: int) -> _Row:
        """A row holding ``t`` cut to its first ``upto`` completion tokens (pieces split where needed)."""
        row = cls(t.prompt_ids, vision)
        row.queries, row.passage_ids, row.passages = list(t.queries), list(t.passage_ids), list(t.passages)
        row.rounds = t.rounds
        for p in t.pieces:
            if p.start >= upto:
                break
            end = min(p.end, upto)
            row.append(
                t.completion_ids[p.start : end],
                inserted=p.inserted,
                round=p.round,
                kind=p.kind,
                logprobs=t.logprobs[p.start : end] if t.logprobs is not None else None,
                overflow=p.overflow if end == p.end else "",
            )
        return row

    def trajectory(self, tokenizer: Any, eos_ids: Sequence[int]) -> Trajectory:
        completion = self.ids[len(self.prompt_ids) :]
        concat = list(self.prompt_ids) + [i for ids in self.piece_ids for i in ids]
        ok = self.prefix_ok and concat == self.ids and len(self.env_mask) == len(completion)
        for piece, ids, extra in zip(self.pieces, self.piece_ids, self.overflow, strict=True):
            if piece.kind == "eos":
                piece.text = ""
            else:
                body = ids[:-1] if (ids and ids[-1] in eos_ids and not piece.inserted) else ids
                piece.text = tokenizer.decode(body, skip_special_tokens=False)
                if extra and piece.text.endswith(extra):  # the grammar reads up to the stop string
                    piece.text, piece.overflow = piece.text[: -len(extra)], extra
        return Trajectory(
            prompt_ids=self.prompt_ids,
            completion_ids=completion,
            env_mask=self.env_mask,
            pieces=self.pieces,
            queries=self.queries,
            passage_ids=self.passage_ids,
            passages=self.passages,
            rounds=self.rounds,
            generated_tokens=self.generated,
            finish=self.finish,
            logprobs=self.logprobs if self.logprobs_known else None,
            prefix_ok=ok,
            forced_answer=self.forced_answer,
        )
