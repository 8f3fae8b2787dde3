"""The evaluation-mode registry: every mode an item is answered in, in one place.

A mode is an :class:`EvalMode`: its name (the ``mode`` column of ``eval_results``), whether it searches the
text KB (its rows record ``kb_tag``), whether it needs the CDIR image index, its plot colour, the modes the
report compares it against by default (``this − baseline``), and ``run``: how one batch is answered, given
a :class:`training.evaluation.evaluate.BatchRun` (the batch's prompts, the rollouts, seeds and timing).
A mode may reuse another mode's pass (``rwr_cdir`` continues ``rwr``'s) through ``batch.run(name)``, and may
add columns to its rows (``annotate``).

Adding a mode touches this module only: write its ``run`` function and add an :class:`EvalMode` to
:data:`REGISTRY`. The order of :data:`REGISTRY` is the order modes run in a batch, are listed (``MODES``),
sorted in tables and drawn in plots. No heavy import here (no torch): the registry is read at import time
by the results contract, the metrics and the Dagster config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..rollout import RolloutResult, Trajectory
    from .cdir import CdirTrace

Timed = tuple["RolloutResult", float]  # a mode's rollout result for a batch and its wall time in seconds


@dataclass(frozen=True)
class EvalMode:
    """One evaluation mode (see the module docstring)."""

    name: str
    description: str
    run: Callable[[Any], Timed]
    searches_kb: bool = False
    image_index: bool = False
    random_kb: bool = False
    colour: str = "#7f7f7f"
    baselines: tuple[str, ...] = ()
    annotate: Callable[[Any, dict, int, Trajectory], None] | None = None
    image_control: bool = False  # changes only the image the model sees; run on benchmarks with images only


# ---- how each mode answers a batch ---------------------------------------------------------------
def _direct(b) -> Timed:
    prompts = b.prompts(retrieval=False)
    return b.timed("direct", lambda: b.rollout.run(b.model, b.processor, prompts, allow_retrieval=False))


def _rwr(b) -> Timed:
    prompts = b.prompts(retrieval=True)
    return b.timed("rwr", lambda: b.rollout.run(b.model, b.processor, prompts))


def _rwr_cdir(b) -> Timed:
    import torch

    from .cdir import apply_cdir

    first, first_s = b.run("rwr")
    torch.manual_seed(b.seed_for("rwr_cdir"))
    cdir = apply_cdir(
        b.rollout,
        b.model,
        b.processor,
        first,
        query_images=[im[0] if im else None for im in b.images],
        item_image_refs=[r["image_refs"] for r in b.batch],
        image_retriever=b.image_retriever,
        image_loader=b.image_loader,
        cdir_lambda=b.cdir_lambda,
        k=b.cdir_k,
        exclude_refs=b.exclude_image_refs,
    )
    b.traces = cdir.traces
    return cdir.result, first_s + cdir.seconds


def _rag_control(b) -> Timed:
    prompts = b.prompts(retrieval=True)
    questions = [r["question"] for r in b.batch]
    return b.timed(
        "rag_control",
        lambda: b.rollout.run(b.model, b.processor, prompts, first_queries=questions, allow_retrieval=False),
    )


def _random_retriever(b) -> Timed:
    prompts = b.prompts(retrieval=True)
    return b.timed("random_retriever", lambda: b.control.run(b.model, b.processor, prompts))


def _blank_image(b) -> Timed:
    prompts = b.prompts(retrieval=True, images=b.blank_images())
    return b.timed("blank_image", lambda: b.rollout.run(b.model, b.processor, prompts))


def _shuffled_image(b) -> Timed:
    prompts = b.prompts(retrieval=True, images=b.shuffled_images())
    return b.timed("shuffled_image", lambda: b.rollout.run(b.model, b.processor, prompts))


def _shown_images(b, rec: dict, i: int, final: Trajectory) -> None:
    """The shuffled-image control records which images the model was shown instead of the item's."""
    rec["shown_image_refs"] = list(b.shuffled_refs[i])


def _sampled_after_last_case(t: Trajectory) -> int:
    """Tokens the policy sampled after the last CDIR case block of ``t`` (its regeneration)."""
    last = max((i for i, p in enumerate(t.pieces) if p.kind == "case"), default=None)
    if last is None:
        return 0
    return sum(p.end - p.start for p in t.pieces[last + 1 :] if not p.inserted)


def _cdir_columns(b, rec: dict, i: int, final: Trajectory) -> None:
    """CDIR fields of an rwr_cdir record. A triggered row took one more round than its first pass and sampled
    its first pass's tokens plus the regeneration's (the first answer, cut off, still cost compute)."""
    trace: CdirTrace = b.traces[i]
    first_result = b.run("rwr")[0]
    first = first_result.trajectories[i]
    row = b.batch[i]
    rec.update(
        cdir_lambda=b.cdir_lambda,
        cdir_triggered=trace.triggered,
        cdir_case_ids=list(trace.case_ids),
        prediction_before_cdir=b.prediction(first.answer(), row),
        confidence_before_cdir=trace.confidence_before,
        image_index_tag=b.image_index_tag,
    )
    if trace.triggered:
        rec.update(
            n_rounds=first.rounds + 1,
            generated_tokens=first.generated_tokens + _sampled_after_last_case(final),
        )
    if not trace.triggered:
        rec.update(prediction_before_cdir=rec["prediction"], confidence_before_cdir=rec["confidence"])
    # a triggered first pass without a parsed answer stays unanswered (strict, as the final answer)


# ---- the registry ----------------------------------------------------------------------------------
REGISTRY: dict[str, EvalMode] = {
    m.name: m
    for m in (
        EvalMode(
            "direct",
            "answer without retrieval (one round, <query> banned, the direct-answer prompt)",
            _direct,
            colour="#7f7f7f",
        ),
        EvalMode(
            "rwr",
            "reasoning-with-retrieval over the pinned text KB",
            _rwr,
            searches_kb=True,
            colour="#1f77b4",
            baselines=("direct", "random_retriever", "rag_control", "blank_image", "shuffled_image"),
        ),
        EvalMode(
            "rwr_cdir",
            "RwR plus confidence-driven image re-retrieval (CDIR) below λ",
            _rwr_cdir,
            searches_kb=True,
            image_index=True,
            colour="#2ca02c",
            baselines=("rwr",),
            annotate=_cdir_columns,
        ),
        EvalMode(
            "rag_control",
            "training-free RAG: retrieve with the question, then answer",
            _rag_control,
            searches_kb=True,
            colour="#ff7f0e",
        ),
        EvalMode(
            "random_retriever",
            "RwR whose retriever returns random passages of the same KB",
            _random_retriever,
            searches_kb=True,
            random_kb=True,
            colour="#d62728",
        ),
        EvalMode(
            "blank_image",
            "RwR with each image replaced by a uniform image of the same size (its mean colour)",
            _blank_image,
            searches_kb=True,
            colour="#9467bd",
            image_control=True,
        ),
        EvalMode(
            "shuffled_image",
            "RwR shown another item's image, of the same modality where there is one (seeded)",
            _shuffled_image,
            searches_kb=True,
            colour="#8c564b",
            annotate=_shown_images,
            image_control=True,
        ),
    )
}

MODES = tuple(REGISTRY)
RETRIEVAL_MODES = tuple(m.name for m in REGISTRY.values() if m.searches_kb)
IMAGE_CONTROL_MODES = tuple(m.name for m in REGISTRY.values() if m.image_control)
"""Modes that change only the image the model sees (does it look at the image?); a benchmark without images
skips them."""
DEFAULT_COMPARISONS = tuple((m.name, b) for m in REGISTRY.values() for b in m.baselines)
"""(A, B) pairs the report compares within a checkpoint, as A − B."""
