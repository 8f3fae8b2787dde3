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
        self.env_mask: list[int] = []
        self.logprobs: list[float] = []
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
        self, ids: list[int], *, inserted: bool, round: int, kind: str, logprobs: list[float] | None = None
    ) -> None:
        start = len(self.ids) - len(self.prompt_ids)
        self.ids.extend(ids)
        self.piece_ids.append(list(ids))
        self.pieces.append(Piece(start, start + len(ids), inserted, round, kind))
        self.env_mask.extend([0 if inserted else 1] * len(ids))
        self.logprobs.extend(logprobs if logprobs is not None else [0.0] * len(ids))
        if not inserted:
            self.generated += len(ids)

    def drop_last_token(self) -> None:
        """Remove the last completion token (a sampled EOS before a forced answer); ``generated`` keeps
        counting it, since it was sampled."""
        self.ids.pop()
        self.piece_ids[-1].pop()
        self.pieces[-1].end -= 1
        self.env_mask.pop()
        self.logprobs.pop()
        if not self.piece_ids[-1]:
            self.piece_ids.pop()
            self.pieces.pop()

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
                logprobs=t.logprobs[p.start : end],
            )
        return row

    def trajectory(self, tokenizer: Any, eos_ids: Sequence[int]) -> Trajectory:
        completion = self.ids[len(self.prompt_ids) :]
        concat = list(self.prompt_ids) + [i for ids in self.piece_ids for i in ids]
        ok = self.prefix_ok and concat == self.ids and len(self.env_mask) == len(completion)
        for piece, ids in zip(self.pieces, self.piece_ids, strict=True):
            if piece.kind == "eos":
                piece.text = ""
            else:
                body = ids[:-1] if (ids and ids[-1] in eos_ids and not piece.inserted) else ids
                piece.text = tokenizer.decode(body, skip_special_tokens=False)
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
            logprobs=self.logprobs,
            prefix_ok=ok,
            forced_answer=self.forced_answer,
        )
