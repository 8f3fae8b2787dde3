"""How a training stage is launched and how its outputs are kept: plain functions (no Dagster).

- :func:`stage_command` builds the ``python -m training.launch`` (or ``accelerate launch``) command line from
  plain values: where the stage items, images, knowledge base and base model are, and the run knobs.
- :func:`stratify_command` builds the ``python -m training.stratify`` command (stage-2 difficulty
  stratification, launched the same way, where the model trains).
- :func:`upload_folder` copies a model folder (safetensors, tokenizer, lineage manifest) under the storage
  root, so checkpoints live where every other output lives (local or S3).
- :func:`model_row` is the one-row table a model asset publishes (:class:`storage.pointers.ModelPointer`):
  what downstream stages and evaluation load.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import polars as pl

from storage.pointers import MODEL_SCHEMA, ModelPointer
from storage.root import Storage

__all__ = ["MODEL_SCHEMA", "model_row", "stage_command", "stratify_command", "upload_folder"]


def model_row(
    role: str, model_ref: str, path: str, weights_sha256: str | None, manifest: dict[str, Any]
) -> pl.DataFrame:
    """The published pointer to a model: one row of :data:`MODEL_SCHEMA`."""
    return ModelPointer.of(role, model_ref, path, weights_sha256, manifest).to_row()


def upload_folder(local: str | Path, store: Storage, *parts: str) -> str:
    """Copy every file of ``local`` under ``parts`` of the storage root (atomic per file); returns its URI."""
    root = Path(local)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    if not files:
        raise FileNotFoundError(f"{root}: no files to upload; the training stage produced no model")
    for path in files:
        store.write_bytes(path.read_bytes(), *parts, path.relative_to(root).as_posix())
    return store.uri(*parts)


def stage_command(
    *,
    stage: int,
    items_uri: str,
    images_uri: str | None,
    storage_options: dict[str, Any] | None,
    kb_uri: str,
    kb_storage_options: dict[str, Any] | None,
    kb_table: str,
    kb_tag: str,
    text_embedder: str,
    image_embedder: str,
    base_model: str,
    model_cache: str,
    output_dir: str,
    overrides: dict[str, Any],
    lineage: dict[str, Any],
    git_commit: str | None,
    medquad: str | None = None,
    slake_kg: str | None = None,
    pubmedqa: str | None = None,
    accelerate_config: str | None = None,
    allow_random_image_embedder: bool = False,
    python: str = sys.executable,
) -> list[str]:
    """The command that runs one GRPO stage (see :mod:`training.launch` for every argument)."""
    cmd = _head("training.launch", accelerate_config, python) + [
        "--stage",
        str(stage),
        *_input_args(items_uri, storage_options, kb_uri, kb_storage_options, kb_table, kb_tag, text_embedder),
        "--image-embedder",
        image_embedder,
        "--base-model",
        base_model,
        "--model-cache",
        model_cache,
        "--output-dir",
        output_dir,
        "--config",
        json.dumps(overrides, sort_keys=True),
        "--lineage",
        json.dumps(lineage, sort_keys=True, default=str),
    ]
    if images_uri:
        cmd += ["--images-uri", images_uri]
    if git_commit:
        cmd += ["--git-commit", git_commit]
    if medquad:
        cmd += ["--medquad", medquad]
    if slake_kg:
        cmd += ["--slake-kg", slake_kg]
    if pubmedqa:
        cmd += ["--pubmedqa", pubmedqa]
    if allow_random_image_embedder:
        cmd += ["--allow-random-image-embedder"]
    return cmd


def stratify_command(
    *,
    items_uri: str,
    images_uri: str | None,
    storage_options: dict[str, Any] | None,
    kb_uri: str,
    kb_storage_options: dict[str, Any] | None,
    kb_table: str,
    kb_tag: str,
    text_embedder: str,
    policy: str,
    model_cache: str,
    overrides: dict[str, Any],
    samples: int,
    batch_size: int,
    output: str,
    accelerate_config: str | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The command that samples the stage-1 policy on the stage-2 candidates, launched like a stage (see
    :mod:`training.stratify` for every argument)."""
    cmd = _head("training.stratify", accelerate_config, python) + [
        *_input_args(items_uri, storage_options, kb_uri, kb_storage_options, kb_table, kb_tag, text_embedder),
        "--base-model",
        policy,
        "--model-cache",
        model_cache,
        "--config",
        json.dumps(overrides, sort_keys=True),
        "--samples",
        str(samples),
        "--batch-size",
        str(batch_size),
        "--output",
        output,
    ]
    if images_uri:
        cmd += ["--images-uri", images_uri]
    return cmd


def _head(module: str, accelerate_config: str | None, python: str) -> list[str]:
    """``python -m <module>``, or ``accelerate launch --config_file <config> -m <module>``."""
    if accelerate_config:
        return [python, "-m", "accelerate.commands.launch", "--config_file", accelerate_config, "-m", module]
    return [python, "-m", module]


def _input_args(
    items_uri: str,
    storage_options: dict[str, Any] | None,
    kb_uri: str,
    kb_storage_options: dict[str, Any] | None,
    kb_table: str,
    kb_tag: str,
    text_embedder: str,
) -> list[str]:
    """The item-table and KB arguments both entry points take (``training.launch.add_input_arguments``)."""
    return [
        "--items",
        items_uri,
        "--items-storage-options",
        json.dumps(storage_options or {}),
        "--kb-uri",
        kb_uri,
        "--kb-storage-options",
        json.dumps(kb_storage_options or {}),
        "--kb-table",
        kb_table,
        "--kb-tag",
        kb_tag,
        "--text-embedder",
        text_embedder,
    ]
