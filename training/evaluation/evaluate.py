"""Evaluation: benchmark items through the training rollout in five modes, as ``eval_results`` rows.

:func:`evaluate` answers every item of one benchmark with one checkpoint in each requested mode
(the registry :data:`training.evaluation.modes.REGISTRY`) and returns a scored, validated ``eval_results``
frame (:data:`training.evaluation.results.EVAL_RESULTS_SCHEMA`), one row per (item, mode):

- ``direct``: no retrieval (one round, ``<query>`` banned, the direct-answer system prompt);
- ``rwr``: reasoning with retrieval over the pinned text KB (up to ``max_rounds`` rounds);
- ``rwr_cdir``: the ``rwr`` pass, then CDIR on the rows whose confidence is below λ
  (:mod:`training.evaluation.cdir`).
  When ``rwr`` is evaluated too, both modes share the same first pass, so ``rwr_cdir − rwr`` measures
  CDIR alone; its latency is the first pass's plus CDIR's;
- ``rag_control``: training-free RAG: the system retrieves once with the question and inserts the
  passages before the model writes; the model cannot query (``<query>`` banned);
- ``random_retriever``: the ``rwr`` loop whose retriever returns random passages of the same KB version
  (:class:`KBRandomRetriever`, seeded), the control that shows whether *what* is retrieved matters.

Batching: items go through in batches of ``batch_size``; per batch, each mode makes **one** rollout call
(one batched ``generate`` per round, one batched retrieval per round) and CDIR one image search and one
continuation call. ``latency_s`` of a row is the wall time of its mode's calls for the batch divided by
the batch's items (image loading, shared by the modes, is not counted).

Prompts: the protocol's system prompt (:func:`training.protocol.system_prompt`; the direct-answer variant
in mode ``direct``) or ``system_prompt`` for every mode; images as image items before the question (all
of the item's images, in order). Confidence: probability of the first answer token after ``<answer>``
(:func:`training.rollout.score_answers`). Prediction: ``mcq``, the option letter the answer names
(:func:`training.protocol.extract_choice`, None when it names none); ``open``, the answer text.
Decoding is greedy by default (``do_sample=False``); with sampling each (mode, batch) is seeded from
``seed``. No Dagster import: the asset passes models, retrievers and loaders in.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import polars as pl
import torch

from retrieval.search import Hit

from ..generation import HFGenerator
from ..protocol import build_messages, extract_choice
from ..rollout import RolloutResult, RolloutSettings, Trajectory
from .cdir import DEFAULT_K, DEFAULT_LAMBDA, CdirRollout, CdirTrace
from .items import check_items
from .judge import AnswerJudge, apply_judge
from .modes import MODES, REGISTRY
from .results import results_frame, score_predictions, validate_results


class EvaluationError(RuntimeError):
    """An evaluation that cannot produce trustworthy rows (bad arguments, a broken trajectory)."""


class KBRandomRetriever:
    """The random-retriever control over the **same KB version** as the real retriever.

    ``search`` ignores the queries and returns, per query, ``k`` rows drawn uniformly without replacement
    (``random.Random(seed)``) from the table's rows, read with ``take_offsets`` (only the drawn rows are
    read; the KB is never loaded whole). Scores are 0.0.
    """

    def __init__(self, table: Any, seed: int = 0):
        self.table = table
        self.n = table.count_rows()
        if self.n == 0:
            raise EvaluationError("random retriever: the KB table has no rows")
        self.rng = random.Random(seed)

    @classmethod
    def like(cls, retriever: Any, seed: int = 0) -> KBRandomRetriever:
        """Over the table version ``retriever`` (a ``retrieval.search.Retriever``) is pinned to."""
        pinned = getattr(retriever, "pinned", None)
        if pinned is None:
            raise EvaluationError(
                f"cannot build a random retriever over the KB of {type(retriever).__name__}: "
                "pass random_retriever= explicitly"
            )
        return cls(pinned.tbl, seed)

    def search(self, queries: list[str], k: int = 3, mode: str = "dense", **_: Any) -> list[list[Hit]]:
        """``k`` random KB rows per query; ``mode`` is accepted and ignored."""
        picks = [self.rng.sample(range(self.n), min(k, self.n)) for _ in queries]
        offsets = sorted({o for p in picks for o in p})
        if not offsets:
            return [[] for _ in queries]
        rows = (
            self.table.take_offsets(offsets).select(["id", "source", "title", "text"]).to_arrow().to_pylist()
        )
        if len(rows) != len(offsets):
            raise EvaluationError(f"random retriever: asked for {len(offsets)} KB rows, got {len(rows)}")
        by_offset = dict(zip(offsets, rows, strict=True))  # take_offsets returns rows in offset order
        return [
            [
                Hit(
                    by_offset[o]["id"],
                    0.0,
                    by_offset[o]["source"],
                    by_offset[o]["title"],
                    by_offset[o]["text"],
                )
                for o in p
            ]
            for p in picks
        ]


def item_messages(
    row: dict, images: Sequence[Any], *, retrieval: bool, system: str | None = None
) -> list[dict]:
    """The conversational prompt of one normalised item: system + user (images, then context, question and
    lettered options for an MCQ)."""
    options = row["options"] if row["protocol"] == "mcq" else None
    messages = build_messages(
        row["question"],
        options,
        has_image=bool(images),
        context=row.get("context"),
        retrieval=retrieval,
        system=system,
    )
    if images:
        text = [c for c in messages[1]["content"] if c.get("type") != "image"]
        messages[1]["content"] = [{"type": "image", "image": im} for im in images] + text
    return messages


def applicable_modes(items: pl.DataFrame, modes: Sequence[str]) -> tuple[str, ...]:
    """``modes`` less the image controls (:data:`training.evaluation.modes.IMAGE_CONTROL_MODES`) when no
    item shows an image: on a text benchmark they would repeat ``rwr``."""
    from .modes import IMAGE_CONTROL_MODES

    if "image_refs" in items.columns and (items["image_refs"].list.len() > 0).any():
        return tuple(modes)
    return tuple(m for m in modes if m not in IMAGE_CONTROL_MODES)


def blank_like(image: Any) -> Any:
    """A uniform image of ``image``'s size and mode, filled with its mean colour."""
    from PIL import Image, ImageStat

    mean = tuple(round(v) for v in ImageStat.Stat(image).mean)
    return Image.new(image.mode, image.size, mean if len(mean) > 1 else mean[0])


def shuffle_donors(items: pl.DataFrame, seed: int) -> dict[str, list[str]]:
    """For the shuffled-image control: ``item_id -> image refs`` of another item to show instead, drawn
    with ``seed`` (per item, so the choice does not depend on batching or order) among the items of the
    same ``modality`` that share none of its images; among all such items when its modality has none.
    Items without images are left out. Raises :class:`EvaluationError` when an item has no possible donor
    (fewer than two distinct images in the benchmark)."""
    rows = [r for r in items.select("item_id", "image_refs", "modality").to_dicts() if r["image_refs"]]
    out: dict[str, list[str]] = {}
    for r in rows:
        mine = set(r["image_refs"])
        others = [o for o in rows if not mine & set(o["image_refs"])]
        same = [o for o in others if o["modality"] == r["modality"]]
        pool = sorted(same or others, key=lambda o: o["item_id"])
        if not pool:
            raise EvaluationError(
                f"shuffled_image: item {r['item_id']} has no other item with different images to borrow "
                "from (the benchmark shows fewer than two distinct images); leave the mode out"
            )
        donor = random.Random(f"{seed}/shuffled_image/{r['item_id']}").choice(pool)
        out[r["item_id"]] = list(donor["image_refs"])
    return out


def _prediction(answer: str | None, row: dict) -> str | None:
    if row["protocol"] == "mcq":
        return extract_choice(answer, row["options"])
    return (answer.strip() or None) if answer is not None else None


def _mode_seed(seed: int, mode: str, batch_start: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{mode}/{batch_start}".encode()).digest()[:4], "big")


def _check_args(
    items: pl.DataFrame,
    modes: Sequence[str],
    *,
    retriever: Any,
    kb_tag: str | None,
    image_retriever: Any,
    image_loader: Any,
    image_index_tag: str | None,
    batch_size: int,
    cdir_lambda: float,
    cdir_k: int,
) -> None:
    unknown = [m for m in modes if m not in MODES]
    if not modes or unknown or len(set(modes)) != len(modes):
        raise EvaluationError(f"modes {list(modes)}: give each of {MODES} at most once, at least one")
    if batch_size < 1:
        raise EvaluationError(f"batch_size must be >= 1, got {batch_size}")
    if not 0.0 <= cdir_lambda <= 1.0 or cdir_k < 1:
        raise EvaluationError(f"cdir_lambda must be in [0, 1] and cdir_k >= 1 (got {cdir_lambda}, {cdir_k})")
    retrieval = [m for m in modes if REGISTRY[m].searches_kb]
    if retrieval and (retriever is None or not kb_tag):
        raise EvaluationError(f"modes {retrieval} search the text KB: pass retriever= and its pinned kb_tag=")
    with_images = items.filter(pl.col("image_refs").list.len() > 0)
    if not with_images.is_empty() and image_loader is None:
        raise EvaluationError(
            f"{with_images.height} item(s) have images (e.g. {with_images['item_id'][0]}): "
            "pass image_loader=(content id -> PIL image)"
        )
    for mode in (m for m in modes if REGISTRY[m].image_index):
        if not with_images.is_empty() and (image_retriever is None or not image_index_tag):
            raise EvaluationError(
                f"mode {mode} on items with images needs image_retriever= (an "
                "ImageRetriever over the whole image index) and its pinned image_index_tag="
            )


def evaluate(
    items: pl.DataFrame,
    *,
    model: Any,
    processor: Any,
    retriever: Any,
    checkpoint: str,
    checkpoint_version: str,
    benchmark: str,
    benchmark_version: str,
    kb_tag: str | None,
    modes: Sequence[str] = MODES,
    image_retriever: Any = None,
    image_loader: Callable[[str], Any] | None = None,
    image_index_tag: str | None = None,
    random_retriever: Any = None,
    batch_size: int = 8,
    cdir_lambda: float = DEFAULT_LAMBDA,
    cdir_k: int = DEFAULT_K,
    exclude_image_refs: Sequence[str] = (),
    seed: int = 0,
    rollout_settings: RolloutSettings | None = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    system_prompt: str | None = None,
    generator_factory: Any = HFGenerator,
    progress: Callable[[int, int], None] | None = None,
    judge: AnswerJudge | None = None,
) -> pl.DataFrame:
    """Evaluate normalised ``items`` (:func:`training.evaluation.items.benchmark_items`) in ``modes``; return
    the scored ``eval_results`` rows, checked with :func:`training.evaluation.results.validate_results`.

    ``model``/``processor``: the checkpoint (``training.tiny_model.load_policy``), labelled ``checkpoint`` and
    pinned by ``checkpoint_version`` (its manifest hash). ``retriever``: ``search(queries, k, mode)`` over the
    text KB pinned to ``kb_tag``. ``image_retriever``: ``search_images(images, k, exclude_refs)`` over the
    CDIR image index pinned to ``image_index_tag``; ``image_loader(content_id) -> PIL image`` reads item and
    case images. ``random_retriever``: the control's retriever (default :meth:`KBRandomRetriever.like` the
    real one, seeded with ``seed``). ``exclude_image_refs``: more image ids CDIR must never append (e.g. every
    image of the benchmark). ``rollout_settings``: the budgets (:class:`training.rollout.RolloutSettings`;
    default its defaults): every mode may sample ``max_completion_tokens`` per trajectory, shared by its
    rounds (no per-round cap), and a CDIR regeneration ``max_new_tokens_per_round`` more; sampling
    settings are those of :class:`training.rollout.Rollout`. ``progress(done, total)`` is called after each
    batch. ``judge``: an optional open-answer judge (:func:`training.evaluation.judge.load_judge`) that fills
    ``judge_model`` and ``judge_correct`` on the open rows; None (the default) leaves them null.

    Raises :class:`EvaluationError` for inconsistent arguments or a trajectory that breaks the prefix
    property, and ``EvalResultsError`` if the rows break the ``eval_results`` contract.
    """
    items = check_items(items)
    modes = applicable_modes(items, modes)
    _check_args(
        items,
        modes,
        retriever=retriever,
        kb_tag=kb_tag,
        image_retriever=image_retriever,
        image_loader=image_loader,
        image_index_tag=image_index_tag,
        batch_size=batch_size,
        cdir_lambda=cdir_lambda,
        cdir_k=cdir_k,
    )
    settings = dict(
        settings=rollout_settings or RolloutSettings(),
        do_sample=do_sample,
        temperature=temperature,
        top_p=top_p,
        score=True,
        # every mode the same budget: max_completion_tokens sampled tokens per trajectory, shared by its
        # rounds with no per-round cap (a one-round mode may use all of it in its round); a CDIR
        # continuation has its own max_new_tokens_per_round (Rollout.continue_with)
        share_total_budget=True,
        generator_factory=generator_factory,
    )
    rollout = CdirRollout(retriever, **settings)
    control = None
    if any(REGISTRY[m].random_kb for m in modes):
        control = CdirRollout(random_retriever or KBRandomRetriever.like(retriever, seed), **settings)
    identity = {
        "benchmark": benchmark,
        "benchmark_version": benchmark_version,
        "checkpoint": checkpoint,
        "checkpoint_version": checkpoint_version,
    }
    rows = items.to_dicts()
    if "shuffled_image" in modes:
        donors = shuffle_donors(items, seed)
        for r in rows:
            r["shuffled_image_refs"] = donors.get(r["item_id"], [])
    records: list[dict] = []
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            run = BatchRun(
                batch,
                start,
                model,
                processor,
                rollout,
                control,
                image_retriever=image_retriever,
                image_loader=image_loader,
                image_index_tag=image_index_tag,
                cdir_lambda=cdir_lambda,
                cdir_k=cdir_k,
                exclude_image_refs=exclude_image_refs,
                seed=seed,
                system=system_prompt,
            )
            records += _evaluate_batch(run, modes, identity, kb_tag=kb_tag)
            if progress is not None:
                progress(min(start + batch_size, len(rows)), len(rows))
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
    return validate_results(apply_judge(score_predictions(results_frame(records)), judge))


class BatchRun:
    """One batch answered in every requested mode: what a mode's ``run`` (:mod:`training.evaluation.modes`)
    reads (the batch, its images and prompts, the rollouts, the CDIR settings) and the passes already made
    (``run(name)``, each mode at most once per batch; forced choices per pass, memoized)."""

    def __init__(
        self,
        batch: list[dict],
        start: int,
        model: Any,
        processor: Any,
        rollout: CdirRollout,
        control: CdirRollout | None,
        *,
        image_retriever: Any,
        image_loader: Any,
        image_index_tag: str | None,
        cdir_lambda: float,
        cdir_k: int,
        exclude_image_refs: Sequence[str],
        seed: int,
        system: str | None,
    ):
        self.batch, self.start, self.model, self.processor = batch, start, model, processor
        self.rollout, self.control, self.seed, self.system = rollout, control, seed, system
        self.image_retriever, self.image_loader = image_retriever, image_loader
        self.image_index_tag = image_index_tag
        self.cdir_lambda, self.cdir_k, self.exclude_image_refs = cdir_lambda, cdir_k, exclude_image_refs
        self.images = [[image_loader(ref) for ref in row["image_refs"]] for row in batch]
        self.shuffled_refs = [list(row.get("shuffled_image_refs") or []) for row in batch]
        self.traces: list[CdirTrace] | None = None
        self.prediction = _prediction
        self._prompts: dict[bool, list] = {}
        self._runs: dict[str, tuple[RolloutResult, float]] = {}
        self._forced: dict[int, dict[int, tuple[str, float]]] = {}

    def prompts(self, *, retrieval: bool, images: list[list[Any]] | None = None) -> list:
        """The batch's prompts; ``images``: other images per row in place of the items' (the image
        controls), everything else the same."""
        if images is not None:
            return [
                item_messages(r, im, retrieval=retrieval, system=self.system)
                for r, im in zip(self.batch, images, strict=True)
            ]
        if retrieval not in self._prompts:
            self._prompts[retrieval] = self.prompts(retrieval=retrieval, images=self.images)
        return self._prompts[retrieval]

    def blank_images(self) -> list[list[Any]]:
        """Each row's images as uniform images of the same size and mode, filled with the image's mean
        colour (the blank-image control)."""
        return [[blank_like(im) for im in ims] for ims in self.images]

    def shuffled_images(self) -> list[list[Any]]:
        """Each row shown the images of another item (:func:`shuffle_donors`; the shuffled-image control);
        a row without images stays without."""
        return [[self.image_loader(ref) for ref in refs] for refs in self.shuffled_refs]

    def seed_for(self, mode: str) -> int:
        return _mode_seed(self.seed, mode, self.start)

    def timed(self, mode: str, fn: Callable[[], RolloutResult]) -> tuple[RolloutResult, float]:
        torch.manual_seed(self.seed_for(mode))
        t0 = time.perf_counter()
        result = fn()
        return result, time.perf_counter() - t0

    def run(self, mode: str) -> tuple[RolloutResult, float]:
        if mode not in self._runs:
            self._runs[mode] = REGISTRY[mode].run(self)
        return self._runs[mode]

    def forced(self, result: RolloutResult) -> dict[int, tuple[str, float]]:
        if id(result) not in self._forced:
            self._forced[id(result)] = forced_choices(self.model, self.processor, result, self.batch)
        return self._forced[id(result)]


def _evaluate_batch(b: BatchRun, modes: tuple[str, ...], identity: dict, *, kb_tag: str | None) -> list[dict]:
    for mode in REGISTRY:  # registry order, whatever the order of ``modes``
        if mode in modes:
            b.run(mode)
    records = []
    for mode in modes:
        result, seconds = b.run(mode)
        forced = b.forced(result)
        broken = [b.batch[i]["item_id"] for i, t in enumerate(result.trajectories) if not t.prefix_ok]
        if broken:
            raise EvaluationError(
                f"mode {mode}: trajectories of items {broken} break the prefix property (the ids "
                "fed to the model differ from the ids generated); this is a rollout bug"
            )
        annotate = REGISTRY[mode].annotate
        for i, (row, t) in enumerate(zip(b.batch, result.trajectories, strict=True)):
            rec = _record(
                row,
                t,
                mode,
                identity,
                latency=seconds / len(b.batch),
                kb_tag=kb_tag if REGISTRY[mode].searches_kb else None,
            )
            if i in forced:
                rec.update(forced_prediction=forced[i][0], confidence=forced[i][1], answer_forced=True)
            if annotate is not None:
                annotate(b, rec, i, t)
            records.append(rec)
    return records


def forced_choices(
    model: Any, processor: Any, result: RolloutResult, batch: list[dict]
) -> dict[int, tuple[str, float]]:
    """Forced choice for MCQ rows whose trajectory holds no answer naming an option (a model that never wrote
    ``<answer>`` in its budget, or wrote something else): one batched forward pass over the trajectory
    (its final EOS dropped) followed by the tokens of ``<answer>``; the prediction is the most likely option
    letter and the confidence that letter's probability (every single-token spelling of it summed). Returns
    ``{row index: (letter, probability)}``; rows that answered themselves are left out."""
    import math

    from ..generation import Context, next_token_logprobs, token_ids
    from ..protocol import ANSWER_OPEN
    from ..rollout import letter_token_ids

    tok = token_ids(processor)
    todo = [
        i
        for i, (row, t) in enumerate(zip(batch, result.trajectories, strict=True))
        if row["protocol"] == "mcq" and _prediction(t.answer(), row) is None
    ]
    if not todo:
        return {}
    tag = tok(ANSWER_OPEN, add_special_tokens=False)["input_ids"]
    eos = set(tok.all_special_ids)
    contexts = []
    for i in todo:
        t = result.trajectories[i]
        ids = list(t.completion_ids)
        while ids and ids[-1] in eos:
            ids.pop()
        contexts.append(Context(t.prompt_ids + ids + tag, result.vision[i]))
    with torch.no_grad():
        logprobs = next_token_logprobs(model, contexts, tok.pad_token_id)
    out = {}
    for j, i in enumerate(todo):
        letters = letter_token_ids(tok, LETTERS_FOR[: batch[i]["n_options"]])
        scores = {L: float(torch.logsumexp(logprobs[j][ids], 0)) for L, ids in letters.items() if ids}
        if scores:
            best = max(scores, key=scores.get)
            out[i] = (best, math.exp(scores[best]))
    return out


LETTERS_FOR = "ABCDEFGHIJ"


def _record(
    row: dict, t: Trajectory, mode: str, identity: dict, *, latency: float, kb_tag: str | None
) -> dict:
    return {
        **identity,
        "item_id": row["item_id"],
        "mode": mode,
        "protocol": row["protocol"],
        "answer_type": row["answer_type"],
        "question_type": row["question_type"],
        "modality": row["modality"],
        "organ": row["organ"],
        "question": row["question"],
        "n_options": row["n_options"],
        "prediction": _prediction(t.answer(), row),
        "gold": row["gold"],
        "confidence": t.answer_token_prob,
        "queries": list(t.queries),
        "retrieved_ids": [pid for ids in t.passage_ids for pid in ids],
        "n_rounds": t.rounds,
        "generated_tokens": t.generated_tokens,
        "latency_s": latency,
        "kb_tag": kb_tag,
    }
