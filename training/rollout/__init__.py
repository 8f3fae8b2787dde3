"""The one rollout shared by GRPO training and evaluation: reasoning with retrieval, token in / token out.

:class:`Rollout` runs a batch of prompts for at most ``max_rounds`` generation rounds. Each round is one
batched ``generate`` call that stops at ``</query>``, ``</answer>`` or EOS. Every row that stopped at
``</query>`` gets its passages from **one** batched ``retriever.search(queries, k, mode)`` call per round;
the ``<retrieve>`` block is tokenised on its own and appended as token ids with env mask 0. Sampled ids are
kept exactly as sampled, never decoded and re-encoded. In evaluation (``ban_queries=True``, the default)
the last round bans ``<query>`` and stops only at the answer or EOS, so every trajectory that finishes in
budget ends with an answer. Training (``ban_queries=False``) bans nothing, since TRL scores the
unconstrained softmax: the last round also stops at ``</query>`` and that row ends unanswered
(``query_at_last_round``). A row that stops at
``</answer>`` gets the EOS token appended by the system (mask 0), so TRL sees a terminated completion.

``force_answer=True`` (default False: the row ends as the policy left it): a row whose rounds ended without
an ``<answer>`` tag (EOS, round or trajectory budget) gets ``<answer>`` appended by the system (its ids,
mask 0, piece kind ``answer``; :attr:`Trajectory.forced_answer` is True) and one more short generation
(``answer_tokens`` tokens at most, stop at ``</answer>``, ``<query>`` banned unless ``ban_queries=False``),
so every trajectory ends
with an answer whose first token the policy sampled. An EOS the policy sampled before it is dropped from
the trajectory (a model context never holds an EOS mid-sequence; ``generated_tokens`` still counts it). A
row that opened ``<answer>`` itself but did not close it in budget gets the short generation without an
inserted tag. ``answer_tokens`` are reserved out of ``max_completion_tokens``, so the sampled total stays
within it. The inserted opener is a boundary for the parser (:func:`training.protocol.parse_pieces`): a
block the model left open before it stays open and breaks the grammar.

Every trajectory is checked for the prefix property (the ids fed to each round are exactly the ids
generated so far, and the final ids are exactly prompt + the concatenation of sampled and inserted pieces);
:attr:`RolloutStats.prefix_violations` counts failures and must stay 0.

Evaluation uses the same loop through small parameters:

- confidence and chosen option: :func:`score_answers` (log-probs of each option letter as the first token
  after ``<answer>`` (sampled or system-inserted), the probability of the token actually sampled there, and,
  unless ``counterfactual=False``, the same log-probs from one batched counterfactual pass that answers right
  after the reasoning preceding the first query, for the confidence-gain reward);
- direct answer (no retrieval): ``run(..., allow_retrieval=False)`` (one round, ``<query>`` banned);
- training-free RAG control: ``run(..., first_queries=[question, ...], allow_retrieval=False)``: the system
  retrieves once with the given query and inserts the block before the model writes anything;
- random-retriever control: any object with ``search(queries, k, mode) -> list[list[Hit]]``, e.g.
  :class:`training.retrievers.RandomRetriever`, passed as ``retriever``;
- CDIR: :meth:`Rollout.continue_with` cuts a finished trajectory before its ``<answer>``, appends
  system-inserted content (one or several :class:`Insert` per row: a similar case's description and, where
  the model takes images, the image itself as vision tokens) and generates once more; the new round is
  numbered after each row's own rounds.

For TRL, a :class:`Rollout` instance is the ``rollout_func``: ``GRPOTrainer(..., rollout_func=rollout)``.
It returns ``prompt_ids`` (from the processor's chat template, so TRL's own ``pixel_values`` line up),
``completion_ids``, ``logprobs``, ``env_mask`` and ``trajectory`` (one :class:`Trajectory` per row, which
TRL forwards to the reward functions as a keyword argument).
"""

from .loop import Rollout
from .prompts import encode_prompts, prompt_images
from .scoring import (
    answer_cut,
    answer_point,
    answer_position,
    answer_start,
    counterfactual_ids,
    letter_token_ids,
    score_answers,
)
from .settings import RolloutSettings
from .types import Insert, Piece, RolloutResult, RolloutStats, Trajectory

__all__ = [
    "Insert",
    "Piece",
    "Rollout",
    "RolloutResult",
    "RolloutSettings",
    "RolloutStats",
    "Trajectory",
    "answer_cut",
    "answer_point",
    "counterfactual_ids",
    "answer_position",
    "answer_start",
    "encode_prompts",
    "letter_token_ids",
    "prompt_images",
    "score_answers",
]
