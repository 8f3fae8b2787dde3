"""The :class:`Rollout` loop: batched generation rounds, one batched retrieval per round, forced answers,
CDIR continuation, TRL's ``rollout_func`` (see :mod:`training.rollout`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ..generation import Context, HFGenerator, token_ids
from ..protocol import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    QUERY_CLOSE,
    QUERY_OPEN,
    RETRIEVE_CLOSE,
    RETRIEVE_OPEN,
    neutralize,
    passage_text,
    retrieve_block,
)
from .prompts import encode_prompts
from .rows import _Row
from .scoring import answer_cut, score_answers
from .settings import RolloutSettings
from .types import Insert, RolloutResult, RolloutStats


class Rollout:
    """Reasoning-with-retrieval rollout; also TRL's ``rollout_func`` (see the module docstring).

    Args:
        retriever: object with ``search(queries: list[str], k: int, mode: str) -> list[list[Hit]]``
            (``retrieval.search.Retriever`` pinned to a KB tag in production).
        settings: the budgets and retrieval knobs (:class:`RolloutSettings`; default its defaults); keyword
            arguments named like its fields (``max_rounds=1``, ``max_new_tokens_per_round=32`` ...) change
            single fields of it.
        temperature, top_p, do_sample: sampling (TRL's ``temperature``/``top_p`` override them in training).
        score: run :func:`score_answers` after generation (needed by the confidence-gain reward);
            ``score_counterfactual=False`` skips its counterfactual pass (evaluation needs only the
            confidence).
        want_logprobs: record per-token sampling log-probs (costs a softmax per step).
        sync_rounds: always make ``max_rounds`` generate calls (a 1-token dummy call when no row is
            active; likewise the forced-answer call): ranks of ZeRO-3 / vLLM-server training must make the
            same number of calls.
        force_answer: end every row with an answer (module docstring); ``answer_tokens``: the budget of
            that short generation, reserved out of ``max_completion_tokens``.
        share_total_budget: rounds share ``max_completion_tokens`` with no per-round cap: each round runs
            until it stops (query, answer, EOS) or the trajectory's total is spent, so a one-round answer
            (``allow_retrieval=False``) and a multi-round one have the same budget. Evaluation sets it
            (every mode the same budget); ``max_new_tokens_per_round`` is then only the budget of a
            :meth:`continue_with` continuation. Training leaves it False (the stage's per-round budgets).
        ban_queries: in the last round (and a forced answer, a CDIR continuation, a direct answer) forbid
            writing ``<query>`` while sampling (evaluation's decoding rule). Training sets False
            (:func:`training.trainer.stage_rollout`): TRL scores the unconstrained softmax, so a ban would
            make the sampled policy differ from the scored one; instead the last round also stops at
            ``</query>`` and the row ends unanswered (``finish="query_at_last_round"``, reward 0), so the
            reward teaches the search budget.
        generator_factory: ``(model, processor) -> backend`` (default :class:`HFGenerator`; see
            :mod:`training.vllm_backend`).
    """

    def __init__(
        self,
        retriever: Any,
        settings: RolloutSettings | None = None,
        *,
        temperature: float = 1.0,
        top_p: float = 1.0,
        do_sample: bool = True,
        score: bool = False,
        score_counterfactual: bool = True,
        want_logprobs: bool = False,
        sync_rounds: bool = False,
        force_answer: bool = False,
        answer_tokens: int = 8,
        ban_queries: bool = True,
        share_total_budget: bool = False,
        generator_factory: Any = HFGenerator,
        **setting_fields: Any,
    ):
        settings = (settings or RolloutSettings()).with_(**setting_fields)
        if answer_tokens < 1:
            raise ValueError(f"answer_tokens must be >= 1, got {answer_tokens}")
        self.retriever = retriever
        self.settings = settings
        self.temperature = temperature
        self.top_p = top_p
        self.do_sample = do_sample
        self.score = score
        self.score_counterfactual = score_counterfactual
        self.want_logprobs = want_logprobs
        self.sync_rounds = sync_rounds
        self.force_answer = force_answer
        self.answer_tokens = answer_tokens
        self.ban_queries = ban_queries
        self.share_total_budget = share_total_budget
        self.generator_factory = generator_factory
        self.last_stats: RolloutStats | None = None

    # ---- public API -------------------------------------------------------------------------------------
    def run(
        self,
        model: Any,
        processor: Any,
        prompts: Sequence[Sequence[dict]],
        *,
        allow_retrieval: bool = True,
        first_queries: Sequence[str | None] | None = None,
        max_rounds: int | None = None,
        force_answer: bool | None = None,
    ) -> RolloutResult:
        """Roll out conversational ``prompts`` (TRL layout; images as ``{"type": "image", "image": img}``).

        ``allow_retrieval=False``: direct answer (one round, ``<query>`` banned). ``first_queries``: the
        system retrieves once with these queries (None for a row: no pre-retrieval) before the model writes.
        ``force_answer``: overrides the instance's setting for this call.
        """
        contexts = encode_prompts(processor, prompts)
        return self.run_contexts(
            self.generator_factory(model, processor),
            contexts,
            allow_retrieval=allow_retrieval,
            first_queries=first_queries,
            max_rounds=max_rounds,
            model=model,
            force_answer=force_answer,
        )

    def run_contexts(
        self,
        generator: Any,
        contexts: Sequence[Context],
        *,
        allow_retrieval: bool = True,
        first_queries: Sequence[str | None] | None = None,
        max_rounds: int | None = None,
        model: Any = None,
        force_answer: bool | None = None,
    ) -> RolloutResult:
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
        rounds = (max_rounds or self.settings.max_rounds) if allow_retrieval else 1
        force = self.force_answer if force_answer is None else force_answer
        calls0 = generator.calls
        self._loop(generator, rows, rounds, stats, force=force)
        stats.generate_calls = generator.calls - calls0
        result = self._finish(generator, rows, stats, start)
        if self.score and model is not None:
            score_answers(model, tokenizer, result, counterfactual=self.score_counterfactual)
        return result

    def continue_with(
        self,
        model: Any,
        processor: Any,
        result: RolloutResult,
        inserts: Sequence[Insert | Sequence[Insert] | None],
        *,
        force_answer: bool | None = None,
    ) -> RolloutResult:
        """CDIR: for each row with inserts (one :class:`Insert` or a sequence of them, appended in order),
        cut the trajectory before its ``<answer>`` (model-written or inserted; or before a final sampled EOS
        when it has no answer), append the inserts as system tokens (mask 0; an image as vision tokens when
        the model has a vision tower) and generate once more (``<query>`` banned; the round is numbered
        ``rounds + 1`` of that row). Rows with ``None`` are returned unchanged. The new trajectories satisfy
        the same prefix property. The continuation has its own budget, ``max_new_tokens_per_round`` sampled
        tokens counted from the cut, whatever the first pass spent (a row that spent its whole budget
        without answering still gets a full round)."""
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
            # e.g. training.evaluation.cdir.Cases, is formatted by its _insert_ids)
            parts = list(ins) if isinstance(ins, (list, tuple)) else [ins]
            if not parts:
                raise ValueError(
                    f"row {n}: give an Insert, a non-empty sequence of Insert, or None (no continuation)"
                )
            found = answer_cut(tokenizer, t)
            cut, residue = found if found is not None else (len(t.completion_ids), "")
            ends_on_eos = bool(t.completion_ids) and t.completion_ids[-1] in generator.eos_ids
            if found is None and t.finish == "eos" and ends_on_eos:
                cut -= 1  # no EOS in the middle of a context
            row = _Row.from_trajectory(t, vision, cut)
            if residue:  # the cut token also held text before <answer> (e.g. the '>' of '</think>')
                row.append(
                    tokenizer(residue, add_special_tokens=False)["input_ids"],
                    inserted=True,
                    round=row.rounds,
                    kind="residue",
                )
            for part in parts:
                ids, extra = self._insert_ids(processor, model, part)
                if extra is not None:
                    row.vision = row.vision.extended(*extra)
                row.append(ids, inserted=True, round=row.rounds, kind="case")
            rows.append(row)
        force = self.force_answer if force_answer is None else force_answer
        calls0 = generator.calls
        own = self.settings.max_new_tokens_per_round
        self._loop(generator, rows, 1, stats, force=force, fresh_budget=own)
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
        with unwrap_model_for_generation(
            trainer.model_wrapped,
            trainer.accelerator,
            gather_deepspeed3_params=args.ds3_gather_for_generation,
        ) as model:
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
    def _loop(
        self,
        generator: Any,
        rows: list[_Row],
        max_rounds: int,
        stats: RolloutStats,
        force: bool = False,
        fresh_budget: int | None = None,
    ) -> None:
        """Up to ``max_rounds`` rounds; each row numbers them after its own ``rounds`` so far. A row may
        sample ``max_completion_tokens`` in all, or ``fresh_budget`` more than it already has (a
        continuation's own budget)."""
        tokenizer = generator.tokenizer
        eos = generator.eos_ids[0]
        total = self.settings.max_completion_tokens if fresh_budget is None else fresh_budget
        reserve = self.answer_tokens if force else 0
        if total - reserve < 1:
            raise ValueError(
                f"the token budget ({total}) must exceed answer_tokens ({self.answer_tokens}) "
                "with force_answer"
            )
        limits = {id(row): (0 if fresh_budget is None else row.generated) + total - reserve for row in rows}
        base = {id(row): row.rounds for row in rows}
        for r in range(1, max_rounds + 1):
            active = [row for row in rows if not row.done]
            last = r == max_rounds
            if not active:
                if self.sync_rounds and rows:
                    generator.generate(
                        [Context(rows[0].ids, rows[0].vision)], stop_strings=[], max_new_tokens=1
                    )
                    continue
                break
            stops = [ANSWER_CLOSE] if last and self.ban_queries else [QUERY_CLOSE, ANSWER_CLOSE]
            budget = max(limits[id(row)] - row.generated for row in active)
            cap = self.settings.max_new_tokens_per_round
            per_round = budget if self.share_total_budget else cap
            outs = generator.generate(
                [Context(row.ids, row.vision) for row in active],
                stop_strings=stops,
                max_new_tokens=max(1, min(per_round, budget)),
                banned_strings=[QUERY_OPEN] if last and self.ban_queries else (),
                do_sample=self.do_sample,
                temperature=self.temperature,
                top_p=self.top_p,
                want_logprobs=self.want_logprobs,
            )
            asking: list[tuple[_Row, str]] = []
            for row, g in zip(active, outs, strict=True):
                row.prefix_ok &= g.prefix_ok
                room = max(limits[id(row)] - row.generated, 0)
                ids, finish = (g.ids, g.finish) if len(g.ids) <= room else (g.ids[:room], "length")
                number = base[id(row)] + r
                row.append(
                    ids,
                    inserted=False,
                    round=number,
                    kind="sampled",
                    logprobs=g.logprobs[: len(ids)] if g.logprobs is not None else None,
                    overflow=g.overflow if len(ids) == len(g.ids) else "",
                )
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
            last_sampled = next(
                (
                    ids
                    for p, ids in zip(reversed(row.pieces), reversed(row.piece_ids), strict=True)
                    if not p.inserted
                ),
                [],
            )
            text = tokenizer.decode(last_sampled, skip_special_tokens=False)
            # no answer opened by the model: insert one
            if ANSWER_OPEN not in text.rsplit(ANSWER_CLOSE, 1)[-1]:
                row.append(opener, inserted=True, round=row.rounds, kind="answer")
                row.forced_answer = True
        outs = generator.generate(
            [Context(row.ids, row.vision) for row in todo],
            stop_strings=[ANSWER_CLOSE],
            max_new_tokens=self.answer_tokens,
            banned_strings=[QUERY_OPEN] if self.ban_queries else (),
            do_sample=self.do_sample,
            temperature=self.temperature,
            top_p=self.top_p,
            want_logprobs=self.want_logprobs,
        )
        for row, g in zip(todo, outs, strict=True):
            row.prefix_ok &= g.prefix_ok
            ids = g.ids[: self.answer_tokens]
            row.append(
                ids,
                inserted=False,
                round=row.rounds,
                kind="sampled",
                logprobs=g.logprobs[: len(ids)] if g.logprobs is not None else None,
                overflow=g.overflow if len(ids) == len(g.ids) else "",
            )
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
        mode = self.settings.search_mode
        kwargs = {"mode": mode} if mode else {}
        k = self.settings.retrieval_k
        hits = self.retriever.search(queries, k=k, **kwargs)
        stats.retrieval_calls += 1
        stats.queries += len(queries)
        if len(hits) != len(queries):
            raise RuntimeError(f"retriever returned {len(hits)} result lists for {len(queries)} queries")
        for (row, q), row_hits in zip(asking, hits, strict=True):
            texts = [passage_text(h.title, h.text) for h in row_hits[:k]]
            block = retrieve_block(texts)
            row.append(
                tokenizer(block, add_special_tokens=False)["input_ids"],
                inserted=True,
                round=row.rounds,
                kind="retrieve",
            )
            row.queries.append(q)
            row.passage_ids.append([h.id for h in row_hits[:k]])
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
        n = int(enc["image_grid_thw"][0].prod()) // (image_processor.merge_size**2)
        vision_ids = (
            [config.vision_start_token_id] + [config.image_token_id] * n + [config.vision_end_token_id]
        )
        ids = (
            tokenizer(head, add_special_tokens=False)["input_ids"]
            + vision_ids
            + tokenizer(tail, add_special_tokens=False)["input_ids"]
        )
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
