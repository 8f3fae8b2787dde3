"""Test helpers: a scripted ``generate`` (fixed token ids) for bookkeeping tests, a retriever call counter,
and small fixtures' data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch


class ScriptedGenerate:
    """Replaces ``model.generate``: row ``r`` of call ``c`` samples the ids of ``script(c, r, context_text)``
    (EOS appended unless the text ends with ``</query>``, ``</answer>`` or ``<|endoftext|>``). Records every
    call's batch size and keyword arguments (the fields of a passed ``generation_config`` flattened in, as
    ``max_new_tokens``, ``pad_token_id`` ...)."""

    def __init__(self, tokenizer, script: Callable[[int, int, str], str]):
        self.tokenizer = tokenizer
        self.script = script
        self.calls: list[dict] = []

    def __call__(self, input_ids, attention_mask=None, **kwargs):
        call = len(self.calls)
        config = kwargs.get("generation_config")
        if config is not None:
            kwargs = {**{k: v for k, v in config.to_dict().items() if v is not None}, **kwargs}
        self.calls.append(
            {"rows": input_ids.shape[0], **{k: v for k, v in kwargs.items() if k != "tokenizer"}}
        )
        pad = kwargs["pad_token_id"]
        new = []
        for r in range(input_ids.shape[0]):
            ctx = (
                input_ids[r][attention_mask[r].bool()].tolist()
                if attention_mask is not None
                else input_ids[r].tolist()
            )
            text = self.script(call, r, self.tokenizer.decode(ctx, skip_special_tokens=False))
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][: kwargs["max_new_tokens"]]
            if (
                not text.endswith(("</query>", "</answer>", "<|endoftext|>"))
                and len(ids) < kwargs["max_new_tokens"]
            ):
                ids.append(self.tokenizer.eos_token_id)
            new.append(ids)
        width = max(len(x) for x in new)
        out = torch.full((input_ids.shape[0], input_ids.shape[1] + width), pad, dtype=torch.long)
        out[:, : input_ids.shape[1]] = input_ids
        for r, ids in enumerate(new):
            out[r, input_ids.shape[1] : input_ids.shape[1] + len(ids)] = torch.tensor(ids, dtype=torch.long)
        return SimpleNamespace(sequences=out, scores=None)


@dataclass
class CountingRetriever:
    """Forwards to ``inner.search`` and records the size of each call in ``calls`` (how many batched calls,
    with how many queries each)."""

    inner: Any
    calls: list[int] = field(default_factory=list)

    def search(self, queries: list[str], k: int = 3, mode: str = "dense", **kwargs: Any) -> list:
        self.calls.append(len(queries))
        return self.inner.search(queries, k=k, mode=mode, **kwargs)


def trainer_that_kills_itself(step: int, once_marker: str | None = None) -> str:
    """A ``python -c`` script that runs ``training.launch`` (arguments after the script) with one more trainer
    callback: right after checkpoint-``step`` is complete, the process sends SIGKILL to itself. ``on_save``
    runs after the trainer has written the checkpoint and after the lineage callback, so the checkpoint is
    whole. With ``once_marker`` (a file path), only the first process kills itself (it creates the file
    first), so a retried run trains to the end: a real kill -9 at a fixed step, whatever the machine's speed
    or load. Under several processes rank 0 kills itself (after writing the lineage manifest) and the
    launcher stops the other ranks."""
    return f"""
import os, signal, sys
from pathlib import Path
from transformers import TrainerCallback
import training.launch as launch

MARKER = {once_marker!r}

class KillAfterSave(TrainerCallback):
    def on_save(self, args, state, control, **kw):
        first = MARKER is None or not Path(MARKER).exists()
        # rank 0 only (it writes the lineage manifest first); the launcher then stops the other ranks
        if state.global_step == {step} and state.is_world_process_zero and first:
            if MARKER is not None:
                Path(MARKER).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)

make_callbacks = launch.make_callbacks
launch.make_callbacks = lambda *a, **k: [*make_callbacks(*a, **k), KillAfterSave()]
launch.main(sys.argv[1:])
"""


def tagged_text_kb(root, passages, text_embedder) -> tuple[str, str]:
    """A real text KB under ``root`` (vectors of ``text_embedder`` + full-text index) of ``passages``
    (``(id, title, text)``), tagged ``run-test``; returns ``(uri, tag)``."""
    import hashlib

    import polars as pl

    from retrieval.embedders import passage_input
    from retrieval.store import KBLocation, sync_table, with_search_text

    frame = pl.DataFrame(
        {
            "id": [p[0] for p in passages],
            "source": ["test"] * len(passages),
            "title": [p[1] for p in passages],
            "text": [p[2] for p in passages],
        }
    )
    frame = frame.with_columns(
        pl.Series("content_hash", [hashlib.sha256(t.encode()).hexdigest() for t in frame["text"]])
    )
    report = sync_table(
        KBLocation(str(root)),
        "kb_text",
        with_search_text(frame),
        lambda rows: text_embedder.embed(
            [passage_input(t, x) for t, x in zip(rows["title"], rows["text"], strict=True)]
        ),
        text_embedder.identity(),
        run_id="test",
    )
    return str(root), report.tag
