"""Retrievers with the ``search(queries, k, mode)`` interface of ``retrieval.search.Retriever``.

:class:`RandomRetriever` is the control of the learning check and of evaluation: it returns ``k`` passages
drawn at random (seeded) from a fixed pool, whatever the query, so a policy that learns through retrieval
cannot learn through it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from retrieval.search import Hit


class RandomRetriever:
    """``k`` passages drawn uniformly without replacement from ``pool`` for every query (seeded)."""

    def __init__(self, pool: Sequence[Hit], seed: int = 0):
        if not pool:
            raise ValueError("RandomRetriever needs a non-empty passage pool")
        self.pool = list(pool)
        self.rng = random.Random(seed)

    def search(self, queries: list[str], k: int = 3, mode: str = "dense", **_: Any) -> list[list[Hit]]:
        """``k`` random hits per query (score 0.0); ``mode`` is accepted and ignored."""
        k = min(k, len(self.pool))
        return [
            [Hit(h.id, 0.0, h.source, h.title, h.text) for h in self.rng.sample(self.pool, k)]
            for _ in queries
        ]
