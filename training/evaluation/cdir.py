"""CDIR: confidence-driven image re-retrieval at test time (docs/method.md §5).

After a reasoning-with-retrieval pass, each row's confidence η is the probability of the first answer token
after ``<answer>`` (:func:`training.rollout.score_answers`, ``answer_token_prob``). A row is **triggered**
when η < λ (default 0.8, the paper's) and it has an image. A row whose first pass gave no locatable
answer (η unknown) is triggered too: it has no confident answer to keep. For the triggered rows of a batch:

1. one batched ``image_retriever.search_images(query_images, k, exclude_refs)`` call over the **whole**
   image index (``retrieval.search.ImageRetriever``: its flat or ANN index over the pinned table, never a
   sample of it). The query image is the item's first image. ``exclude_refs`` holds every image of the
   triggered items of the batch (so each query excludes its own images by content id) plus any refs the
   caller adds: a benchmark image is never appended as a case. With an image index that holds no benchmark
   image (the knowledge-base rule) this equals per-item exclusion; a returned case that is one of the
   item's own images is an error, never kept;
2. the ``k`` cases (description and image, loaded with ``image_loader(image_ref)``) are appended after the
   previous reasoning, each in its own system-inserted ``<retrieve>`` block, by **one** batched
   :meth:`training.rollout.Rollout.continue_with` call, which cuts each trajectory before its ``<answer>``
   and generates once more (``<query>`` banned) and re-scores the confidence.

Text-only rows are never triggered: CDIR retrieves by image, so it does not apply to them (their CDIR
record says "not triggered" and the first pass is the answer).

Several cases per row: ``Rollout.continue_with`` takes one :class:`~training.rollout.Insert` (one image)
per row; :class:`CdirRollout` also accepts :class:`Cases` (several inserts, appended in order, each
formatted exactly as one ``Insert``). With ``k = 1`` the plain ``Insert`` path is used unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..rollout import Insert, Rollout, RolloutResult

DEFAULT_LAMBDA = 0.8
"""λ of the paper (its released code used 0.9)."""
DEFAULT_K = 1


@dataclass
class Cases:
    """Several similar cases appended together to one row (one ``<retrieve>`` block per case, in order)."""

    inserts: list[Insert]


class CdirRollout(Rollout):
    """:class:`~training.rollout.Rollout` whose :meth:`continue_with` also accepts :class:`Cases` for a row.

    Each case is tokenised by the base class's own insert formatting and the pieces are concatenated (ids,
    then the images' ``pixel_values``/``image_grid_thw`` in the same order), so k cases are exactly k
    consecutive single-case inserts. Everything else is the base rollout."""

    def _insert_ids(self, processor: Any, model: Any, ins: Any) -> tuple[list[int], tuple | None]:
        if not isinstance(ins, Cases):
            return super()._insert_ids(processor, model, ins)
        if not ins.inserts:
            raise ValueError("Cases holds no insert: pass None for a row without CDIR")
        ids: list[int] = []
        pixels, grids = [], []
        for one in ins.inserts:
            part, vision = super()._insert_ids(processor, model, one)
            ids += part
            if vision is not None:
                pixels.append(vision[0])
                grids.append(vision[1])
        return ids, ((torch.cat(pixels), torch.cat(grids)) if pixels else None)


@dataclass
class CdirTrace:
    """What CDIR did to one row: whether it ran, which cases it appended, the first pass's confidence."""

    triggered: bool
    confidence_before: float | None
    case_ids: list[str] = field(default_factory=list)
    case_image_refs: list[str] = field(default_factory=list)


@dataclass
class CdirResult:
    """The rows after CDIR (untriggered rows unchanged), one trace per row, and the seconds CDIR took."""

    result: RolloutResult
    traces: list[CdirTrace]
    seconds: float
    search_calls: int
    continue_calls: int


def cdir_needed(confidence: float | None, cdir_lambda: float) -> bool:
    """η < λ; an unknown η (no locatable answer in the first pass) counts as below λ."""
    return confidence is None or confidence < cdir_lambda


def apply_cdir(
    rollout: Rollout,
    model: Any,
    processor: Any,
    first: RolloutResult,
    *,
    query_images: Sequence[Any | None],
    item_image_refs: Sequence[Sequence[str]],
    image_retriever: Any,
    image_loader: Callable[[str], Any],
    cdir_lambda: float = DEFAULT_LAMBDA,
    k: int = DEFAULT_K,
    exclude_refs: Sequence[str] = (),
) -> CdirResult:
    """Run CDIR on a batch's first-pass ``first`` (see the module docstring).

    ``query_images[i]``: row i's query image (a PIL image) or None for a text-only row;
    ``item_image_refs[i]``: the content ids of row i's own images (excluded from its cases).
    At most one ``search_images`` call and one ``continue_with`` call for the whole batch.
    Raises ``RuntimeError`` when the index returns no case for a triggered row or returns one of the
    row's own images, and ``ValueError`` for ``k > 1`` with a rollout that cannot append several cases.
    """
    n = len(first.trajectories)
    if len(query_images) != n or len(item_image_refs) != n:
        raise ValueError(
            f"{len(query_images)} query images and {len(item_image_refs)} ref lists for {n} rows"
        )
    if k < 1:
        raise ValueError(f"cdir k must be >= 1, got {k}")
    if k > 1 and not isinstance(rollout, CdirRollout):
        raise ValueError(
            "k > 1 cases per row needs a CdirRollout (Rollout.continue_with takes one Insert per row)"
        )
    start = time.perf_counter()
    confidences = [t.answer_token_prob for t in first.trajectories]
    trig = [i for i in range(n) if query_images[i] is not None and cdir_needed(confidences[i], cdir_lambda)]
    traces = [CdirTrace(triggered=False, confidence_before=c) for c in confidences]
    if not trig:
        return CdirResult(first, traces, time.perf_counter() - start, 0, 0)
    exclude = sorted({r for i in trig for r in item_image_refs[i]} | set(exclude_refs))
    hits = image_retriever.search_images([query_images[i] for i in trig], k=k, exclude_refs=exclude)
    if len(hits) != len(trig):
        raise RuntimeError(f"image retriever returned {len(hits)} result lists for {len(trig)} query images")
    inserts: list[Any] = [None] * n
    for i, row_hits in zip(trig, hits, strict=True):
        row_hits = list(row_hits)[:k]
        if not row_hits:
            raise RuntimeError(
                f"row {i}: the image index returned no case (is the image index empty, or every "
                "case excluded?)"
            )
        own = set(item_image_refs[i])
        leaked = [h.id for h in row_hits if h.image_ref in own]
        if leaked:
            raise RuntimeError(f"row {i}: the image index returned the query's own image as case {leaked}")
        cases = [Insert(text=h.description, image=image_loader(h.image_ref), case_id=h.id) for h in row_hits]
        inserts[i] = cases[0] if len(cases) == 1 else Cases(cases)
        traces[i] = CdirTrace(
            triggered=True,
            confidence_before=confidences[i],
            case_ids=[h.id for h in row_hits],
            case_image_refs=[h.image_ref for h in row_hits],
        )
    continued = rollout.continue_with(model, processor, first, inserts)
    return CdirResult(continued, traces, time.perf_counter() - start, 1, 1)


__all__ = [
    "DEFAULT_K",
    "DEFAULT_LAMBDA",
    "Cases",
    "CdirResult",
    "CdirRollout",
    "CdirTrace",
    "apply_cdir",
    "cdir_needed",
]
