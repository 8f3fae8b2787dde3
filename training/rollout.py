"""The one rollout shared by GRPO training and evaluation: reasoning with retrieval, token in / token out.

:class:`Rollout` runs a batch of prompts for at most ``max_rounds`` generation rounds. Each round is one
batched ``generate`` call that stops at ``</query>``, ``</answer>`` or EOS. Every row that stopped at
``</query>`` gets its passages from **one** batched ``retriever.search(queries, k, mode)`` call per round;
the ``<retrieve>`` block is tokenised on its own and appended as token ids with env mask 0. Sampled ids are
kept exactly as sampled, never decoded and re-encoded. The last round bans ``<query>`` and stops only at
the answer or EOS, so every trajectory that finishes in budget ends with an answer. A row that stops at
``</answer>`` gets the EOS token appended by the system (mask 0), so TRL sees a terminated completion.

``force_answer=True`` (default False: the row ends as the policy left it): a row whose rounds ended without
an ``<answer>`` tag (EOS, round or trajectory budget) gets ``<answer>`` appended by the system (its ids,
mask 0, piece kind ``answer``; :attr:`Trajectory.forced_answer` is True) and one more short generation
(``answer_tokens`` tokens at most, stop at ``</answer>``, ``<query>`` banned), so every trajectory ends
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
  unless ``counterfactual=False``, the same log-probs from one batched counterfactual pass with every inserted
  block removed, for the confidence-gain reward);
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

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .generation import Context, HFGenerator, Vision, next_token_logprobs, token_ids
from .protocol import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    OPTION_LETTERS,
    QUERY_CLOSE,
    QUERY_OPEN,
    RETRIEVE_CLOSE,
    RETRIEVE_OPEN,
    Span,
    answer_text,
    neutralize,
    parse_pieces,
    passage_text,
    retrieve_block,
)


@dataclass
class Piece:
    """A contiguous run of completion tokens ``[start, end)`` written by one party in one round.
    ``kind``: ``sampled`` (the policy), ``retrieve`` (passages), ``case`` (a CDIR insert), ``answer`` (a
    system-inserted ``<answer>`` opener, see ``force_answer``), ``eos``."""

    start: int
    end: int
    inserted: bool
    round: int
    kind: str
    text: str = ""


@dataclass
class Trajectory:
    """One rollout row: everything training and evaluation need, with exact ids.

    ``env_mask[i]`` is 1 where ``completion_ids[i]`` was sampled by the policy, 0 where the system inserted
    it. ``passage_ids[j]``/``passages[j]`` are what query ``j`` retrieved. ``logprobs`` holds the sampling
    log-prob of each sampled token (0.0 for inserted tokens, and everywhere unless requested).
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
    logprobs: list[float] = field(default_factory=list)
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

    def sampled_text(self) -> str:
        """The policy's own text (sampled pieces only), in order."""
        return "".join(p.text for p in self.pieces if not p.inserted)


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
            "logprobs": [t.logprobs for t in self.trajectories],
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

    def append(self, ids: list[int], *, inserted: bool, round: int, kind: str,
               logprobs: list[float] | None = None) -> None:
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
            row.append(t.completion_ids[p.start : end], inserted=p.inserted, round=p.round, kind=p.kind,
                       logprobs=t.logprobs[p.start : end])
        return row

    def trajectory(self, tokenizer: Any, eos_ids: Sequence[int]) -> Trajectory:
        completion = self.ids[len(self.prompt_ids):]
        concat = list(self.prompt_ids) + [i for ids in self.piece_ids for i in ids]
        ok = self.prefix_ok and concat == self.ids and len(self.env_mask) == len(completion)
        for piece, ids in zip(self.pieces, self.piece_ids, strict=True):
            if piece.kind == "eos":
                piece.text = ""
            else:
                body = ids[:-1] if (ids and ids[-1] in eos_ids and not piece.inserted) else ids
                piece.text = tokenizer.decode(body, skip_special_tokens=False)
        return Trajectory(
            prompt_ids=self.prompt_ids, completion_ids=completion, env_mask=self.env_mask, pieces=self.pieces,
            queries=self.queries, passage_ids=self.passage_ids, passages=self.passages, rounds=self.rounds,
            generated_tokens=self.generated, finish=self.finish, logprobs=self.logprobs, prefix_ok=ok,
            forced_answer=self.forced_answer,
        )


def prompt_images(messages: Sequence[dict]) -> list[Any]:
    """The images of a conversational prompt, in order (``{"type": "image", "image": img}`` items)."""
    images = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            for item in content:
                if isinstance(item, dict) and item.get("type") == "image" and item.get("image") is not None:
                    images.append(item["image"])
    return images


def encode_prompts(processor: Any, prompts: Sequence[Sequence[dict]]) -> list[Context]:
    """Prompt ids (and vision inputs) from the processor's chat template with the generation prompt,
    exactly as TRL tokenises a prompt for its forward pass (so ``pixel_values`` line up)."""
    tokenizer = token_ids(processor)
    contexts = []
    for messages in prompts:
        images = prompt_images(messages)
        text = processor.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        if images:
            enc = processor(text=[text], images=images, return_tensors="pt")
            vision = Vision(enc["pixel_values"], enc["image_grid_thw"])
            ids = enc["input_ids"][0].tolist()
        else:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            vision = Vision()
        contexts.append(Context(ids, vision))
    return contexts


class Rollout:
    """Reasoning-with-retrieval rollout; also TRL's ``rollout_func`` (see the module docstring).

    Args:
        retriever: object with ``search(queries: list[str], k: int, mode: str) -> list[list[Hit]]``
            (``retrieval.search.Retriever`` pinned to a KB tag in production).
        k: passages per query (paper: 3).
        max_rounds: generation rounds per trajectory (paper code: 3); retrieval after rounds 1..max-1.
        max_new_tokens: token budget of one round; ``max_completion_tokens``: sampled tokens per trajectory.
        search_mode: passed to ``retriever.search`` as ``mode`` (``dense``/``lexical``/``hybrid``).
        temperature, top_p, do_sample: sampling (TRL's ``temperature``/``top_p`` override them in training).
        score: run :func:`score_answers` after generation (needed by the confidence-gain reward);
            ``score_counterfactual=False`` skips its counterfactual pass (evaluation needs only the confidence).
        want_logprobs: record per-token sampling log-probs (costs a softmax per step).
        sync_rounds: always make ``max_rounds`` generate calls (a 1-token dummy call when no row is
            active; likewise the forced-answer call): ranks of ZeRO-3 / vLLM-server training must make the
            same number of calls.
        force_answer: end every row with an answer (module docstring); ``answer_tokens``: the budget of
            that short generation, reserved out of ``max_completion_tokens``.
        generator_factory: ``(model, processor) -> backend`` (default :class:`HFGenerator`; see
            :mod:`training.vllm_backend`).
    """

    def __init__(self, retriever: Any, *, k: int = 3, max_rounds: int = 3, max_new_tokens: int = 256,
                 max_completion_tokens: int = 1024, search_mode: str | None = "dense", temperature: float = 1.0,
                 top_p: float = 1.0, do_sample: bool = True, score: bool = False, score_counterfactual: bool = True,
                 want_logprobs: bool = False, sync_rounds: bool = False, force_answer: bool = False,
                 answer_tokens: int = 8, generator_factory: Any = HFGenerator):
        if max_rounds < 1:
            raise ValueError(f"max_rounds must be >= 1, got {max_rounds}")
        if answer_tokens < 1:
            raise ValueError(f"answer_tokens must be >= 1, got {answer_tokens}")
        self.retriever = retriever
        self.k = k
        self.max_rounds = max_rounds
        self.max_new_tokens = max_new_tokens
        self.max_completion_tokens = max_completion_tokens
        self.search_mode = search_mode
        self.temperature = temperature
        self.top_p = top_p
        self.do_sample = do_sample
        self.score = score
        self.score_counterfactual = score_counterfactual
        self.want_logprobs = want_logprobs
        self.sync_rounds = sync_rounds
        self.force_answer = force_answer
        self.answer_tokens = answer_tokens
        self.generator_factory = generator_factory
        self.last_stats: RolloutStats | None = None

    # ---- public API -------------------------------------------------------------------------------------
    def run(self, model: Any, processor: Any, prompts: Sequence[Sequence[dict]], *, allow_retrieval: bool = True,
            first_queries: Sequence[str | None] | None = None, max_rounds: int | None = None,
            force_answer: bool | None = None) -> RolloutResult:
        """Roll out conversational ``prompts`` (TRL layout; images as ``{"type": "image", "image": img}``).

        ``allow_retrieval=False``: direct answer (one round, ``<query>`` banned). ``first_queries``: the system
        retrieves once with these queries (None for a row: no pre-retrieval) before the model writes.
        ``force_answer``: overrides the instance's setting for this call.
        """
        contexts = encode_prompts(processor, prompts)
        return self.run_contexts(self.generator_factory(model, processor), contexts,
                                 allow_retrieval=allow_retrieval, first_queries=first_queries, max_rounds=max_rounds,
                                 model=model, force_answer=force_answer)

    def run_contexts(self, generator: Any, contexts: Sequence[Context], *, allow_retrieval: bool = True,
                     first_queries: Sequence[str | None] | None = None, max_rounds: int | None = None,
                     model: Any = None, force_answer: bool | None = None) -> RolloutResult:
        """:meth:`run` on already-encoded prompts and an existing backend."""
        start = time.perf_counter()
        tokenizer = generator.tokenizer
        stats = RolloutStats(rows=len(contexts))
        rows = [_Row(c.ids, c.vision) for c in contexts]
        if first_queries is not None:
            if len(first_queries) != len(rows):
                raise ValueError(f"first_queries has {len(first_queries)} entries for {len(rows)} prompts")
            asking = [(r, q) for r, q in zip(rows, first_queries, strict=True) if q]
            self._retrieve(tokenizer, asking, stats=stats)
        rounds = (max_rounds or self.max_rounds) if allow_retrieval else 1
        force = self.force_answer if force_answer is None else force_answer
        calls0 = generator.calls
        self._loop(generator, rows, rounds, stats, force=force)
        stats.generate_calls = generator.calls - calls0
        result = self._finish(generator, rows, stats, start)
        if self.score and model is not None:
            score_answers(model, tokenizer, result, counterfactual=self.score_counterfactual)
        return result

    def continue_with(self, model: Any, processor: Any, result: RolloutResult,
                      inserts: Sequence[Insert | Sequence[Insert] | None], *,
                      force_answer: bool | None = None) -> RolloutResult:
        """CDIR: for each row with inserts (one :class:`Insert` or a sequence of them, appended in order),
        cut the trajectory before its ``<answer>`` (model-written or inserted; or before a final sampled EOS
        when it has no answer), append the inserts as system tokens (mask 0; an image as vision tokens when
        the model has a vision tower) and generate once more (``<query>`` banned; the round is numbered
        ``rounds + 1`` of that row). Rows with ``None`` are returned unchanged. The new trajectories satisfy
        the same prefix property."""
        if len(inserts) != len(result.trajectories):
            raise ValueError(f"{len(inserts)} inserts for {len(result.trajectories)} trajectories")
        generator = self.generator_factory(model, processor)
        tokenizer = generator.tokenizer
        start = time.perf_counter()
        stats = RolloutStats(rows=sum(i is not None for i in inserts))
        rows: list[_Row] = []
        for n, (t, vision, ins) in enumerate(zip(result.trajectories, result.vision, inserts, strict=True)):
            if ins is None:
                continue
            # a list/tuple holds several inserts; anything else is one insert (a subclass's own insert type,
            # e.g. training.cdir.Cases, is formatted by its _insert_ids)
            parts = list(ins) if isinstance(ins, (list, tuple)) else [ins]
            if not parts:
                raise ValueError(f"row {n}: give an Insert, a non-empty sequence of Insert, or None (no continuation)")
            cut = answer_start(tokenizer, t)
            if cut is None:
                cut = len(t.completion_ids)
                if t.finish == "eos" and t.completion_ids and t.completion_ids[-1] in generator.eos_ids:
                    cut -= 1  # no EOS in the middle of a context
            row = _Row.from_trajectory(t, vision, cut)
            for part in parts:
                ids, extra = self._insert_ids(processor, model, part)
                if extra is not None:
                    row.vision = row.vision.extended(*extra)
                row.append(ids, inserted=True, round=row.rounds, kind="case")
            rows.append(row)
        force = self.force_answer if force_answer is None else force_answer
        calls0 = generator.calls
        self._loop(generator, rows, 1, stats, force=force)
        stats.generate_calls = generator.calls - calls0
        continued = self._finish(generator, rows, stats, start)
        if self.score:
            score_answers(model, tokenizer, continued, counterfactual=self.score_counterfactual)
        it = iter(zip(continued.trajectories, continued.vision, strict=True))
        trajs, visions = [], []
        for t, v, ins in zip(result.trajectories, result.vision, inserts, strict=True):
            if ins is not None:
                t, v = next(it)
            trajs.append(t)
            visions.append(v)
        return RolloutResult(trajs, visions, continued.stats)

    def __call__(self, prompts: list, trainer: Any) -> dict[str, list]:
        """TRL 1.16 ``rollout_func(prompts, trainer)``: generation with the trainer's unwrapped model,
        sampling settings from ``trainer.args``, rollout metrics through ``trainer._log_metric``."""
        from trl.models import unwrap_model_for_generation

        args = trainer.args
        self.temperature, self.top_p = args.temperature, args.top_p
        with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator,
                                         gather_deepspeed3_params=args.ds3_gather_for_generation) as model:
            was_training = model.training
            model.eval()
            try:
                result = self.run(model, trainer.processing_class, prompts)
            finally:
                model.train(was_training)
        log = getattr(trainer, "_log_metric", None)
        if log is not None:
            for name, value in result.stats.metrics(result.trajectories).items():
                log(name, value)
        return result.trl_output()

    # ---- internals --------------------------------------------------------------------------------------
    def _query_ban(self, tokenizer: Any) -> list[list[int]]:
        """Token sequences that would open a query: ``<query>`` with and without a leading space."""
        seqs = {tuple(tokenizer(s, add_special_tokens=False)["input_ids"]) for s in (QUERY_OPEN, " " + QUERY_OPEN)}
        return [list(s) for s in seqs if s]

    def _loop(self, generator: Any, rows: list[_Row], max_rounds: int, stats: RolloutStats,
              force: bool = False) -> None:
        """Up to ``max_rounds`` rounds; each row numbers them after its own ``rounds`` so far."""
        tokenizer = generator.tokenizer
        eos = generator.eos_ids[0]
        limit = self.max_completion_tokens - (self.answer_tokens if force else 0)
        if limit < 1:
            raise ValueError(f"max_completion_tokens ({self.max_completion_tokens}) must exceed answer_tokens "
                             f"({self.answer_tokens}) with force_answer")
        base = {id(row): row.rounds for row in rows}
        for r in range(1, max_rounds + 1):
            active = [row for row in rows if not row.done]
            last = r == max_rounds
            if not active:
                if self.sync_rounds and rows:
                    generator.generate([Context(rows[0].ids, rows[0].vision)], stop_strings=[], max_new_tokens=1)
                    continue
                break
            stops = [ANSWER_CLOSE] if last else [QUERY_CLOSE, ANSWER_CLOSE]
            budget = max(limit - row.generated for row in active)
            outs = generator.generate(
                [Context(row.ids, row.vision) for row in active], stop_strings=stops,
                max_new_tokens=max(1, min(self.max_new_tokens, budget)),
                banned=self._query_ban(tokenizer) if last else (), do_sample=self.do_sample,
                temperature=self.temperature, top_p=self.top_p, want_logprobs=self.want_logprobs)
            asking: list[tuple[_Row, str]] = []
            for row, g in zip(active, outs, strict=True):
                row.prefix_ok &= g.prefix_ok
                room = max(limit - row.generated, 0)
                ids, finish = (g.ids, g.finish) if len(g.ids) <= room else (g.ids[:room], "length")
                number = base[id(row)] + r
                row.append(ids, inserted=False, round=number, kind="sampled", logprobs=g.logprobs[: len(ids)])
                row.rounds = number
                if finish == f"stop:{QUERY_CLOSE}" and not last:
                    text = tokenizer.decode(ids, skip_special_tokens=False)
                    asking.append((row, _last_query(text)))
                    continue
                row.done = True
                if finish == f"stop:{ANSWER_CLOSE}":
                    row.append([eos], inserted=True, round=number, kind="eos")
                    row.finish = "answer"
                elif finish == "eos":
                    row.finish = "eos"
                elif finish == f"stop:{QUERY_CLOSE}":
                    row.finish = "query_at_last_round"
                else:
                    row.finish = "length"
            if asking:
                self._retrieve(tokenizer, asking, stats=stats)
        if force:
            self._force_answers(generator, rows)

    def _force_answers(self, generator: Any, rows: list[_Row]) -> None:
        """One batched short generation for every row that ended without an answer (module docstring)."""
        tokenizer = generator.tokenizer
        eos_ids = set(generator.eos_ids)
        todo = [row for row in rows if row.finish != "answer"]
        if not todo:
            if self.sync_rounds and rows:
                generator.generate([Context(rows[0].ids, rows[0].vision)], stop_strings=[], max_new_tokens=1)
            return
        opener = tokenizer(ANSWER_OPEN, add_special_tokens=False)["input_ids"]
        for row in todo:
            if row.finish == "eos" and row.ids[-1] in eos_ids and not row.pieces[-1].inserted:
                row.drop_last_token()
            last_sampled = next((ids for p, ids in zip(reversed(row.pieces), reversed(row.piece_ids), strict=True)
                                 if not p.inserted), [])
            text = tokenizer.decode(last_sampled, skip_special_tokens=False)
            if ANSWER_OPEN not in text.rsplit(ANSWER_CLOSE, 1)[-1]:  # no answer opened by the model: insert one
                row.append(opener, inserted=True, round=row.rounds, kind="answer")
                row.forced_answer = True
        outs = generator.generate(
            [Context(row.ids, row.vision) for row in todo], stop_strings=[ANSWER_CLOSE],
            max_new_tokens=self.answer_tokens, banned=self._query_ban(tokenizer), do_sample=self.do_sample,
            temperature=self.temperature, top_p=self.top_p, want_logprobs=self.want_logprobs)
        for row, g in zip(todo, outs, strict=True):
            row.prefix_ok &= g.prefix_ok
            ids = g.ids[: self.answer_tokens]
            row.append(ids, inserted=False, round=row.rounds, kind="sampled", logprobs=g.logprobs[: len(ids)])
            if g.finish == f"stop:{ANSWER_CLOSE}":
                row.append([generator.eos_ids[0]], inserted=True, round=row.rounds, kind="eos")
                row.finish = "answer"
            else:
                row.finish = "eos" if g.finish == "eos" else "length"

    def _retrieve(self, tokenizer: Any, asking: list[tuple[_Row, str]], *, stats: RolloutStats) -> None:
        """One batched retriever call for every row that asked this round; blocks appended with mask 0 (in the
        row's current round; round 0 for a pre-retrieval)."""
        if not asking:
            return
        queries = [q for _, q in asking]
        kwargs = {"mode": self.search_mode} if self.search_mode else {}
        hits = self.retriever.search(queries, k=self.k, **kwargs)
        stats.retrieval_calls += 1
        stats.queries += len(queries)
        if len(hits) != len(queries):
            raise RuntimeError(f"retriever returned {len(hits)} result lists for {len(queries)} queries")
        for (row, q), row_hits in zip(asking, hits, strict=True):
            texts = [passage_text(h.title, h.text) for h in row_hits[: self.k]]
            block = retrieve_block(texts)
            row.append(tokenizer(block, add_special_tokens=False)["input_ids"], inserted=True, round=row.rounds,
                       kind="retrieve")
            row.queries.append(q)
            row.passage_ids.append([h.id for h in row_hits[: self.k]])
            row.passages.append(texts)

    def _insert_ids(self, processor: Any, model: Any, ins: Insert) -> tuple[list[int], tuple | None]:
        tokenizer = token_ids(processor)
        head = "\n" + RETRIEVE_OPEN + "\nSimilar case: "
        tail = " " + neutralize(" ".join(ins.text.split())) + "\n" + RETRIEVE_CLOSE + "\n"
        image_processor = getattr(processor, "image_processor", None)
        config = getattr(model, "config", None)
        if ins.image is None or image_processor is None or getattr(config, "image_token_id", None) is None:
            return tokenizer(head + tail.lstrip(), add_special_tokens=False)["input_ids"], None
        enc = image_processor(images=[ins.image], return_tensors="pt")
        n = int(enc["image_grid_thw"][0].prod()) // (image_processor.merge_size ** 2)
        vision_ids = [config.vision_start_token_id] + [config.image_token_id] * n + [config.vision_end_token_id]
        ids = (tokenizer(head, add_special_tokens=False)["input_ids"] + vision_ids
               + tokenizer(tail, add_special_tokens=False)["input_ids"])
        return ids, (enc["pixel_values"], enc["image_grid_thw"])

    def _finish(self, generator: Any, rows: list[_Row], stats: RolloutStats, start: float) -> RolloutResult:
        trajectories = [row.trajectory(generator.tokenizer, generator.eos_ids) for row in rows]
        stats.prefix_violations = sum(not t.prefix_ok for t in trajectories)
        stats.generated_tokens = sum(t.generated_tokens for t in trajectories)
        stats.completion_tokens = sum(len(t.completion_ids) for t in trajectories)
        stats.seconds = time.perf_counter() - start
        self.last_stats = stats
        return RolloutResult(trajectories, [row.vision for row in rows], stats)


def _last_query(text: str) -> str:
    """The text between the last ``<query>`` and the final ``</query>`` of a round's sampled text."""
    body = text.rsplit(QUERY_CLOSE, 1)[0]
    return " ".join(body.rsplit(QUERY_OPEN, 1)[-1].split()) if QUERY_OPEN in body else ""


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
    """Completion index of the first token of the last ``<answer>`` tag (the model's or the system's), or None."""
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
        while (i < len(t.completion_ids) and t.env_mask[i] == 1
               and not tokenizer.decode(t.completion_ids[i : i + 1], skip_special_tokens=False).strip()):
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


def score_answers(model: Any, tokenizer: Any, result: RolloutResult, letters: str = OPTION_LETTERS,
                  batch_size: int = 16, counterfactual: bool = True) -> None:
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


__all__ = ["Insert", "Piece", "Rollout", "RolloutResult", "RolloutStats", "Trajectory", "answer_position",
           "answer_start", "encode_prompts", "letter_token_ids", "prompt_images", "score_answers"]
