"""The rollout's data: :class:`Piece`, :class:`Trajectory`, :class:`RolloutStats`, :class:`RolloutResult`
and the CDIR :class:`Insert` (see :mod:`training.rollout`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..generation import Vision
from ..protocol import Span, answer_text, parse_pieces


@dataclass
class Piece:
    """A contiguous run of completion tokens ``[start, end)`` written by one party in one round.
    ``kind``: ``sampled`` (the policy), ``retrieve`` (passages), ``case`` (a CDIR insert), ``answer`` (a
    system-inserted ``<answer>`` opener, see ``force_answer``), ``eos``, ``residue`` (when a CDIR cut falls
    inside a sampled token, e.g. ``><`` of ``</think><answer>``, the text of that token before the cut,
    re-inserted). ``text``: the piece decoded, up to the stop string that ended it; ``overflow``: what its
    last token carries past that stop string (``</`` when ``</answer></`` ends in the token ``></``), kept in
    the ids, left out of ``text`` so that the grammar reads what the stop rule accepted."""

    start: int
    end: int
    inserted: bool
    round: int
    kind: str
    text: str = ""
    overflow: str = ""


@dataclass
class Trajectory:
    """One rollout row: everything training and evaluation need, with exact ids.

    ``env_mask[i]`` is 1 where ``completion_ids[i]`` was sampled by the policy, 0 where the system inserted
    it. ``passage_ids[j]``/``passages[j]`` are what query ``j`` retrieved. ``logprobs`` holds the sampling
    log-prob of each sampled token (0.0 for inserted tokens, which have mask 0), or ``None`` when they were
    not requested (never zeros a trainer could take for log-probs).
    ``forced_answer``: the system inserted the ``<answer>`` opener (``force_answer``); ``generated_tokens``
    counts every token the policy sampled (an EOS dropped before a forced answer included).
    The ``answer_*`` fields are filled by :func:`score_answers`."""

    prompt_ids: list[int]
    completion_ids: list[int]
    env_mask: list[int]
    pieces: list[Piece]
    queries: list[str] = field(default_factory=list)
    passage_ids: list[list[str]] = field(default_factory=list)
    passages: list[list[str]] = field(default_factory=list)
    rounds: int = 0
    generated_tokens: int = 0
    finish: str = ""
    logprobs: list[float] | None = field(default_factory=list)
    prefix_ok: bool = True
    forced_answer: bool = False
    answer_position: int | None = None
    answer_token_prob: float | None = None
    answer_logprobs: dict[str, float] | None = None
    answer_logprobs_no_retrieval: dict[str, float] | None = None

    def spans(self) -> list[Span]:
        """Protocol spans from the pieces; inserted blocks are opaque (see :mod:`training.protocol`)."""
        return parse_pieces((p.text, p.inserted) for p in self.pieces)

    def answer(self) -> str | None:
        """The text of the final answer span, or None."""
        return answer_text(self.spans())

    @property
    def retrieved(self) -> bool:
        """True when any passages were inserted (by a model query or a RAG pre-retrieval)."""
        return any(p.kind == "retrieve" for p in self.pieces)


@dataclass
class RolloutStats:
    """Counters of one rollout call (logged as metrics)."""

    rows: int = 0
    generate_calls: int = 0
    retrieval_calls: int = 0
    queries: int = 0
    prefix_violations: int = 0
    generated_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    def metrics(self, trajectories: Sequence[Trajectory]) -> dict[str, float]:
        """Scalar metrics: query rate, rounds, retrieval calls, prefix violations, tokens/s."""
        n = max(len(trajectories), 1)
        return {
            "rollout/query_rate": sum(bool(t.queries) for t in trajectories) / n,
            "rollout/queries_per_row": self.queries / n,
            "rollout/rounds": sum(t.rounds for t in trajectories) / n,
            "rollout/retrieval_calls": float(self.retrieval_calls),
            "rollout/generate_calls": float(self.generate_calls),
            "rollout/prefix_violations": float(self.prefix_violations),
            "rollout/answered": sum(t.finish == "answer" for t in trajectories) / n,
            "rollout/generated_tokens": float(self.generated_tokens),
            "rollout/tokens_per_s": self.generated_tokens / self.seconds if self.seconds > 0 else 0.0,
        }


@dataclass
class RolloutResult:
    """Trajectories in input order, each row's vision inputs (for scoring and continuation) and stats."""

    trajectories: list[Trajectory]
    vision: list[Vision]
    stats: RolloutStats

    def trl_output(self) -> dict[str, list]:
        """The dict TRL's ``rollout_func`` contract expects, plus ``trajectory`` for the rewards."""
        return {
            "prompt_ids": [t.prompt_ids for t in self.trajectories],
            "completion_ids": [t.completion_ids for t in self.trajectories],
            # None unless every row has sampling log-probs: TRL then computes its own, never reads zeros
            "logprobs": (
                None
                if any(t.logprobs is None for t in self.trajectories)
                else [t.logprobs for t in self.trajectories]
            ),
            "env_mask": [t.env_mask for t in self.trajectories],
            "trajectory": list(self.trajectories),
        }


@dataclass
class Insert:
    """System-inserted content for a CDIR continuation: a similar case's description and, optionally,
    its image (a PIL image); shown inside a ``<retrieve>`` block after the previous reasoning. Several
    inserts for one row are appended in order, one block (one piece of kind ``case``) each."""

    text: str
    image: Any = None
    case_id: str | None = None
