"""A retraining chain's pin: one KB tag and one checkpoint, carried in run tags from the run that started it.

A chain is ``retrain_job`` -> one ``evaluate_job`` run per benchmark -> ``promote_job`` (``eval_report``, then
``promoted_checkpoint``), linked by :data:`RETRAIN_RUN` (see :mod:`assets.evaluation.sensors`). Two run tags
pin it:

- :data:`KB_TAG` (``medrwr/kb_tag``): the text-KB tag the whole chain reads. The retraining sensor sets it to
  the tag of the index that triggered it; a run started without it (by hand, in the UI) is pinned to the tag
  it reads first (:func:`pin_kb_pointer` adds the run tag), so a run's ``medrwr/kb_tag`` always names the tag
  it trained or evaluated with. In a pinned run every load of ``kb_text_index`` is re-pointed at that tag (a
  KB refresh landing mid-chain publishes a new pointer, but the pinned LanceDB tag keeps naming its
  version), or refuses (:class:`ChainPinError`) when the tag no longer exists in the table.
  :data:`IMAGE_INDEX_TAG` (``medrwr/image_index_tag``) pins the CDIR image index (``kb_image_index``,
  refreshed by the same KB job) the same way.
- :data:`CHECKPOINT` (``medrwr/checkpoint``): the manifest hash of the stage-2 checkpoint the chain
  evaluates and may promote. ``stage2_checkpoint`` adds it to its run when it publishes; the evaluation and
  promotion runs carry it; loading ``stage2_checkpoint`` in a run pinned to another one refuses (a newer
  retraining published over it mid-chain: that chain's own evaluation will follow).

The follow-up runs copy both tags (:func:`carried`). The IO manager applies the pins
(:mod:`assets.common.io_managers`); ``promoted_checkpoint`` checks that the report and every evaluation
it promotes on used them.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable

import polars as pl

from retrieval.pointers import KbPointer
from storage.pointers import ModelPointer

KB_TAG = "medrwr/kb_tag"
IMAGE_INDEX_TAG = "medrwr/image_index_tag"
CHECKPOINT = "medrwr/checkpoint"
RETRAIN_RUN = "medrwr/retrain_run"
PINS = (KB_TAG, IMAGE_INDEX_TAG, CHECKPOINT)
INDEX_PINS = {"kb_text_index": KB_TAG, "kb_image_index": IMAGE_INDEX_TAG}
"""The run tag that pins each LanceDB index pointer a chain reads."""


class ChainPinError(RuntimeError):
    """A run pinned to one KB tag or checkpoint cannot read what it is pinned to."""


def manifest_hash(pointer_row: pl.DataFrame) -> str:
    """The checkpoint version of a one-row model pointer table: the first 16 hex digits of the sha256 of its
    lineage manifest (what ``eval_results`` rows record as ``checkpoint_version``)."""
    return hashlib.sha256(ModelPointer.from_row(pointer_row).manifest_json.encode()).hexdigest()[:16]


def carried(tags: dict[str, str]) -> dict[str, str]:
    """The pins (non-empty :data:`PINS` tags) of a run, to copy onto the runs that follow it."""
    return {k: tags[k] for k in PINS if tags.get(k)}


def tag_version(location, pointer: KbPointer, tag: str) -> int | None:
    """The version ``tag`` names in the table ``pointer`` opens (its embedder's physical table), or None
    when the table has no such tag."""
    conn = location.connect()
    name = pointer.physical_table or pointer.table
    if name not in conn.table_names():
        return None
    info = conn.open_table(name).tags.list().get(tag)
    return None if info is None else int(info["version"])


def pin_kb_pointer(
    frame: pl.DataFrame,
    tags: dict[str, str],
    add_tags: Callable[[dict[str, str]], None],
    location,
    run_id: str,
    asset: str = "kb_text_index",
) -> tuple[pl.DataFrame, str]:
    """The ``asset`` pointer (``kb_text_index`` or ``kb_image_index``, pinned by the run tag
    :data:`INDEX_PINS` names) a run may use, and a log line saying what was done.

    Unpinned run: the published pointer, and the run is tagged with its tag. Pinned run, same tag: as
    published. Pinned run, another tag published since: the pointer re-pointed at the pinned tag and its
    version (same database, table and embedder), or :class:`ChainPinError` when that table has no such tag
    (pruned, or a rebuild for another embedder)."""
    key = INDEX_PINS[asset]
    pointer = KbPointer.from_row(frame)
    pinned = tags.get(key) or ""
    if not pinned:
        add_tags({key: pointer.tag})
        return frame, f"run {run_id} pinned to {asset} tag {pointer.tag!r} (the published one)"
    if pinned == pointer.tag:
        return frame, f"run {run_id} reads its pinned {asset} tag {pinned!r}"
    version = tag_version(location, pointer, pinned)
    if version is None:
        raise ChainPinError(
            f"run {run_id} is pinned to {asset} tag {pinned!r} (run tag {key}, carried from the run that "
            f"started its chain), but table {pointer.physical_table or pointer.table!r} of {location.uri} "
            f"has no such tag any more (the published {asset} is now {pointer.tag!r}). The chain "
            "refuses rather than mix KB versions: start a new retraining on the current index (or "
            "re-execute without the tag to use it)."
        )
    repointed = dataclasses.replace(pointer, tag=pinned, version=version)
    return repointed.to_row(), (
        f"run {run_id} is pinned to {asset} tag {pinned!r} (version {version}); {asset} was refreshed to "
        f"{pointer.tag!r} mid-chain, which this chain does not use"
    )


def check_checkpoint(frame: pl.DataFrame, tags: dict[str, str], run_id: str) -> None:
    """Refuse (:class:`ChainPinError`) a published ``stage2_checkpoint`` other than the one the run is pinned
    to (no pin: nothing to check)."""
    pinned = tags.get(CHECKPOINT)
    if not pinned:
        return
    got = manifest_hash(frame)
    if got != pinned:
        raise ChainPinError(
            f"run {run_id} evaluates the stage-2 checkpoint of manifest {pinned} (run tag {CHECKPOINT}, "
            f"carried from its retraining run {tags.get(RETRAIN_RUN, '?')}), but the published "
            f"stage2_checkpoint is now manifest {got}: a later retraining published over it mid-chain. This "
            "chain refuses; the later retraining's own evaluation and promotion follow it."
        )


def chain_disagrees(
    results: pl.DataFrame, report: pl.DataFrame, checkpoint: str, tags: dict[str, str]
) -> str | None:
    """Why ``promoted_checkpoint`` may not promote ``checkpoint`` (manifest hash) on these evaluation rows and
    this report in a run with ``tags`` (None when it may): in a pinned run the pins must name this checkpoint,
    and every benchmark the report covers must have stage-2 rows of this checkpoint searched with the pinned
    KB tag, which the report must cite too."""
    import json

    pinned_ckpt, pinned_tag = tags.get(CHECKPOINT), tags.get(KB_TAG)
    if pinned_ckpt and pinned_ckpt != checkpoint:
        return f"this chain is pinned to checkpoint {pinned_ckpt}, the published one is {checkpoint}"
    if not pinned_tag or report.is_empty():
        return None
    lineage = json.loads(report["lineage"][0] or "{}")
    if lineage.get("kb_tag") != pinned_tag:
        return (
            f"the published report was built with KB tag {lineage.get('kb_tag')!r}, this chain is pinned to "
            f"{pinned_tag!r}"
        )
    benchmarks = sorted(lineage.get("benchmark_versions") or set(results["benchmark"].to_list()))
    stage2 = results.filter(pl.col("checkpoint") == "stage2")
    for b in benchmarks:
        rows = stage2.filter(pl.col("benchmark") == b)
        if rows.is_empty() or set(rows["checkpoint_version"].to_list()) != {checkpoint}:
            return f"eval_results[{b}] did not evaluate stage-2 checkpoint {checkpoint} (only)"
        used = set(rows["kb_tag"].drop_nulls().to_list())
        if used - {pinned_tag}:
            return (
                f"eval_results[{b}] searched KB tag(s) {sorted(used)}, this chain is pinned to {pinned_tag!r}"
            )
        pinned_images = tags.get(IMAGE_INDEX_TAG)
        column = (
            rows["image_index_tag"] if "image_index_tag" in rows.columns else pl.Series([], dtype=pl.Utf8)
        )
        images = set(column.drop_nulls().to_list())
        if pinned_images and images - {pinned_images}:
            return (
                f"eval_results[{b}] searched image index tag(s) {sorted(images)}, this chain is pinned to "
                f"{pinned_images!r}"
            )
    return None
