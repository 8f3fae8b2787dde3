"""The four Med-RwR rewards as TRL reward functions (docs/method.md §3), each on the model's own spans.

Signature (TRL 1.16): ``f(prompts, completions, completion_ids, **kwargs) -> list[float | None]``. The
rollout passes one :class:`training.rollout.Trajectory` per row as ``trajectory``; dataset columns arrive
as keyword lists too: ``answer_label`` (gold option letter), ``options``, ``answer`` (gold text),
``explanation`` and ``image`` (PIL image or None). Without ``trajectory`` (plain text completions, e.g. an
offline transcript) the completion text is parsed with :func:`training.protocol.parse_text`.

What each reward reads, so that retrieved text can never earn a reward it should not:

- **format** f: grammar of the spans (inserted ``<retrieve>`` blocks are opaque, so a passage with ``<`` or
  ``>`` cannot break it); 1 if well-formed, +1 if the model queried and the answer is correct.
- **accuracy** a: the option extracted from the model's own final ``<answer>`` span equals the gold letter.
- **query semantic** q = q_text + q_image. q_text = |S_Q ∩ S_G|/|S_Q| + |S_K ∩ S_G|/|S_K| with S_Q the
  entities of the model's queries, S_K those of the passages the retriever returned for them (recorded by the
  rollout, not parsed from the prompt), S_G those of the gold answer text and explanation, or, when those
  hold no entity (yes/no and short closed answers), those of the item's question; an empty set's term is 0.
  q_image = mean cosine between the image embedding and each query's text embedding in the same
  CLIP model (0 for a text-only row). No query: q = 0.
- **confidence gain** c = log π(gold letter | with retrieval) − log π(gold letter | without), from
  :func:`training.rollout.score_answers` (the letter is upper-cased: docs/method.md §8); 0 for a row that
  retrieved nothing; None when no answer token could be located.

Total reward: 1·f + 5·a + 0.4·q + 5·c (TRL's ``reward_weights``). The registry :data:`REWARDS` holds each
reward's function, paper weight and stages; adding a reward is its function and one entry there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .lexicon import EntityExtractor
from .protocol import OPTION_LETTERS, Span, answer_matches, answer_text, is_well_formed, parse_text

RewardFn = Callable[..., list[float | None]]
"""TRL reward function: ``f(prompts, completions, completion_ids, **kwargs) -> list[float | None]``."""


def _completion_text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):  # conversational: [{"role": "assistant", "content": ...}]
        return "".join(m.get("content", "") if isinstance(m.get("content"), str) else "" for m in completion)
    return str(completion)


def _spans(i: int, completions: Sequence[Any], trajectory: Sequence[Any] | None) -> list[Span]:
    if trajectory is not None:
        return trajectory[i].spans()
    return parse_text(_completion_text(completions[i]))


def _column(kwargs: dict, name: str, n: int) -> list:
    values = kwargs.get(name)
    return list(values) if values is not None else [None] * n


def _correct(spans: list[Span], label: Any, gold: Any, options: Any) -> bool:
    return answer_matches(answer_text(spans), label, gold, options)


def format_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    completion_ids: Sequence[Any] | None = None,
    **kwargs: Any,
) -> list[float | None]:
    """f: 1.0 for a well-formed completion, plus 1.0 when it queried and answered correctly."""
    n = len(completions)
    traj = kwargs.get("trajectory")
    labels, golds, options = (_column(kwargs, c, n) for c in ("answer_label", "answer", "options"))
    out: list[float | None] = []
    for i in range(n):
        spans = _spans(i, completions, traj)
        if not is_well_formed(spans):
            out.append(0.0)
            continue
        queried = any(s.kind == "query" for s in spans)
        out.append(1.0 + (1.0 if queried and _correct(spans, labels[i], golds[i], options[i]) else 0.0))
    return out


def accuracy_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    completion_ids: Sequence[Any] | None = None,
    **kwargs: Any,
) -> list[float | None]:
    """a: 1.0 when the model's final answer names the gold option (or equals the gold free text)."""
    n = len(completions)
    traj = kwargs.get("trajectory")
    labels, golds, options = (_column(kwargs, c, n) for c in ("answer_label", "answer", "options"))
    return [float(_correct(_spans(i, completions, traj), labels[i], golds[i], options[i])) for i in range(n)]


def overlap_score(query_entities: set[str], passage_entities: set[str], gold_entities: set[str]) -> float:
    """q_text = |S_Q ∩ S_G| / |S_Q| + |S_K ∩ S_G| / |S_K| (a term with an empty denominator is 0)."""
    q = len(query_entities & gold_entities) / len(query_entities) if query_entities else 0.0
    k = len(passage_entities & gold_entities) / len(passage_entities) if passage_entities else 0.0
    return q + k


def gold_text(label: Any, gold: Any, options: Any, explanation: Any) -> str:
    """The ground-truth text entities are taken from: the gold option's text (or free answer) and the
    explanation."""
    parts = []
    if options and label and str(label).strip().upper() in OPTION_LETTERS[: len(options)]:
        parts.append(options[OPTION_LETTERS.index(str(label).strip().upper())])
    if gold:
        parts.append(str(gold))
    if explanation:
        parts.append(str(explanation))
    return " ".join(parts)


class QuerySemanticReward:
    """q = q_text + q_image (module docstring). ``ner``: any :class:`EntityExtractor` (offline:
    :class:`training.lexicon.LexiconNER`); ``image_embedder``: an object with ``embed(images)`` and
    ``embed_texts(texts)`` returning L2-normalised rows (``retrieval.embedders.ImageEmbedder``), or None
    to leave q_image at 0."""

    __name__ = "query_semantic"

    def __init__(self, ner: EntityExtractor, image_embedder: Any = None):
        self.ner = ner
        self.image_embedder = image_embedder

    def text_part(
        self, queries: Sequence[str], passages: Sequence[str], gold: str, question: str = ""
    ) -> float:
        """q_text with S_G the entities of ``gold`` (answer + explanation); when those hold none (a yes/no
        or short closed answer without explanation, most stage-2 items) S_G is the question's entities, so
        the term still rewards queries about what the item asks instead of always being 0."""
        s_q, s_k, s_g, s_question = self.ner.entities(
            [" ; ".join(queries), " ; ".join(passages), gold, question]
        )
        return overlap_score(s_q, s_k, s_g or s_question)

    def image_part(self, images: Sequence[Any], queries: Sequence[Sequence[str]]) -> list[float]:
        """Mean image-query cosine per row; 0.0 where a row has no image or no query."""
        out = [0.0] * len(images)
        rows = [i for i, (img, q) in enumerate(zip(images, queries, strict=True)) if img is not None and q]
        if self.image_embedder is None or not rows:
            return out
        img_vecs = self.image_embedder.embed([images[i] for i in rows])
        flat = [q for i in rows for q in queries[i]]
        txt_vecs = self.image_embedder.embed_texts(flat)
        at = 0
        for j, i in enumerate(rows):
            n = len(queries[i])
            out[i] = float(np.mean(txt_vecs[at : at + n] @ img_vecs[j]))
            at += n
        return out

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        n = len(completions)
        traj = kwargs.get("trajectory")
        labels, golds, options, expl, questions = (
            _column(kwargs, c, n) for c in ("answer_label", "answer", "options", "explanation", "question")
        )
        images = [_first_image(x) for x in _column(kwargs, "image", n)]
        queries, passages = [], []
        for i in range(n):
            if traj is not None:
                queries.append(list(traj[i].queries))
                passages.append([p for ps in traj[i].passages for p in ps])
            else:
                spans = parse_text(_completion_text(completions[i]))
                queries.append([s.text.strip() for s in spans if s.kind == "query" and s.text.strip()])
                passages.append([s.text for s in spans if s.kind == "retrieve"])
        q_image = self.image_part(images, queries)
        out: list[float | None] = []
        for i in range(n):
            if not queries[i]:
                out.append(0.0)
                continue
            gold = gold_text(labels[i], golds[i], options[i], expl[i])
            out.append(self.text_part(queries[i], passages[i], gold, questions[i] or "") + q_image[i])
        return out


def _first_image(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return value[0] if value else None
    return value


def confidence_gain_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    completion_ids: Sequence[Any] | None = None,
    **kwargs: Any,
) -> list[float | None]:
    """c = log π(gold | with retrieval) − log π(gold | without), gold letter upper-cased; 0.0 for a row
    that retrieved nothing; None for a row whose answer token could not be located or has no gold letter."""
    n = len(completions)
    traj = kwargs.get("trajectory")
    if traj is None:
        raise ValueError(
            "confidence_gain_reward needs the rollout's 'trajectory' column (scored with score=True)"
        )
    labels = _column(kwargs, "answer_label", n)
    out: list[float | None] = []
    for t, label in zip(traj, labels, strict=True):
        gold = str(label).strip().upper() if label else ""
        if not t.retrieved:
            out.append(0.0)
        elif t.answer_logprobs is None or gold not in t.answer_logprobs:
            out.append(None)
        elif t.answer_logprobs_no_retrieval is None:
            raise ValueError(
                "confidence_gain_reward: trajectory scored without the counterfactual pass; build the "
                "Rollout with score=True and score_counterfactual=True"
            )
        else:
            with_r, without = t.answer_logprobs[gold], t.answer_logprobs_no_retrieval[gold]
            out.append(float(with_r - without) if np.isfinite(with_r) and np.isfinite(without) else None)
    return out


format_reward.__name__ = "format"
accuracy_reward.__name__ = "accuracy"
confidence_gain_reward.__name__ = "confidence_gain"


@dataclass(frozen=True)
class Reward:
    """A registry entry: the TRL reward function (None for one built per run from run inputs and passed to
    :func:`stage_rewards` by name, e.g. ``query_semantic``: lexicon NER and image embedder), the paper's
    weight, and the stages that use it."""

    fn: RewardFn | None
    weight: float
    stages: tuple[int, ...]


REWARDS: dict[str, Reward] = {
    "format": Reward(format_reward, 1.0, (1, 2)),
    "accuracy": Reward(accuracy_reward, 5.0, (1, 2)),
    "query_semantic": Reward(None, 0.4, (2,)),  # QuerySemanticReward(ner, image_embedder), built per run
    "confidence_gain": Reward(confidence_gain_reward, 5.0, (2,)),
}
"""The reward registry (docs/method.md §3): adding a reward is one entry here and its function. The order is
the order of TRL's ``reward_funcs`` and ``reward_weights``; the name is TRL's ``rewards/<name>`` metric."""

PAPER_WEIGHTS: dict[str, float] = {name: r.weight for name, r in REWARDS.items()}
STAGE_REWARDS: dict[int, tuple[str, ...]] = {
    stage: tuple(n for n, r in REWARDS.items() if stage in r.stages) for stage in (1, 2)
}
"""The rewards of each stage, in registry order."""


def stage_weights(stage: int) -> list[float]:
    """The paper's weights of ``stage``'s rewards (the default of ``StageConfig.reward_weights``)."""
    if stage not in STAGE_REWARDS:
        raise ValueError(f"unknown stage {stage!r}: expected 1 or 2")
    return [PAPER_WEIGHTS[name] for name in STAGE_REWARDS[stage]]


def stage_rewards(
    stage: int, query_reward: QuerySemanticReward | None = None
) -> tuple[list[Any], list[float]]:
    """Reward functions and paper weights of a stage, from :data:`REWARDS`: stage 1 = format + accuracy
    (1, 5); stage 2 = all four (1, 5, 0.4, 5), which needs ``query_reward``."""
    weights = stage_weights(stage)
    built: dict[str, RewardFn | None] = {"query_semantic": query_reward}
    funcs = []
    for name in STAGE_REWARDS[stage]:
        fn = REWARDS[name].fn or built.get(name)
        if fn is None:
            raise ValueError(
                f"stage {stage} needs the {name} reward built for the run"
                + (
                    ": a QuerySemanticReward (lexicon NER and image embedder)"
                    if name == "query_semantic"
                    else ""
                )
            )
        funcs.append(fn)
    return funcs, weights
