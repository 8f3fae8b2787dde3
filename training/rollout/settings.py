"""The rollout's budgets and retrieval knobs, one name per concept for training and evaluation.

:class:`RolloutSettings` is what :class:`training.rollout.Rollout` takes; the trainer config produces it
(:meth:`training.config.StageConfig.rollout_settings`, the one place GRPOConfig's ``max_completion_length``
maps to ``max_completion_tokens``) and so does the evaluation config (``EvalConfig.rollout_settings()``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any


@dataclass(frozen=True)
class RolloutSettings:
    """Budgets of one rollout.

    ``max_rounds``: generation rounds per trajectory (paper code: 3); retrieval after rounds 1..max-1.
    ``retrieval_k``: passages per query (paper: 3). ``max_new_tokens_per_round``: token budget of one round.
    ``max_completion_tokens``: sampled tokens per trajectory. ``search_mode``: passed to
    ``retriever.search`` as ``mode`` (``dense``/``lexical``/``hybrid``; None: not passed)."""

    max_rounds: int = 3
    retrieval_k: int = 3
    max_new_tokens_per_round: int = 256
    max_completion_tokens: int = 1024
    search_mode: str | None = "dense"

    def __post_init__(self):
        if self.max_rounds < 1:
            raise ValueError(f"max_rounds must be >= 1, got {self.max_rounds}")

    def with_(self, **changes: Any) -> RolloutSettings:
        """A copy with ``changes`` (field names of this class; another name raises ``TypeError``)."""
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise TypeError(
                f"unknown rollout settings {unknown}; the fields of "
                f"training.rollout.RolloutSettings are {[f.name for f in fields(self)]}"
            )
        return replace(self, **changes)
