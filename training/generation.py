"""Token-level generation backends for the rollout: Hugging Face ``generate`` (CPU and GPU).

The rollout hands a backend a list of :class:`Context` (exact token ids so far, plus the row's vision
inputs) and gets back, per row, exactly the token ids the model sampled and why it stopped. Nothing here
decodes and re-encodes model output: decoding is used only to *find* where a stop string ended.

Vision: a row's images are carried as the processor's ``pixel_values`` / ``image_grid_thw`` for that row;
a batch concatenates the rows' tensors in row order and derives ``mm_token_type_ids`` from the ids, which
is what Qwen2.5-VL needs to place its 3-D rotary positions (images may sit anywhere in the sequence, so a
system-inserted image in a continuation works the same way as a prompt image).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Vision:
    """One row's images as the model consumes them (``None`` fields for a text-only row)."""

    pixel_values: torch.Tensor | None = None
    image_grid_thw: torch.Tensor | None = None

    @property
    def n_images(self) -> int:
        return 0 if self.image_grid_thw is None else int(self.image_grid_thw.shape[0])

    def head(self, n: int) -> Vision:
        """The first ``n`` images only (their patch rows are the first ``sum(t*h*w)`` rows)."""
        if n >= self.n_images:
            return self
        if n == 0:
            return Vision()
        rows = int(self.image_grid_thw[:n].prod(dim=1).sum())
        return Vision(self.pixel_values[:rows], self.image_grid_thw[:n])

    def extended(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> Vision:
        """This row's images plus one more (appended after the existing ones, as in the token order)."""
        if self.pixel_values is None:
            return Vision(pixel_values, image_grid_thw)
        return Vision(
            torch.cat([self.pixel_values, pixel_values]), torch.cat([self.image_grid_thw, image_grid_thw])
        )


@dataclass
class Context:
    """The exact ids of one row so far and its vision inputs."""

    ids: list[int]
    vision: Vision = field(default_factory=Vision)


@dataclass
class Generated:
    """What one row sampled in one call: the ids (stop string / EOS included), their log-probs (zeros when
    not requested) and the stop reason: ``eos``, ``stop:<string>`` or ``length``."""

    ids: list[int]
    logprobs: list[float]
    finish: str
    prefix_ok: bool = True
    overflow: str = (
        ""  # text the last token carries past its stop string (``></`` ends ``</answer>`` + ``</``)
    )


def token_ids(processor_or_tokenizer: Any) -> Any:
    """The tokenizer of a processor, or the tokenizer itself."""
    return getattr(processor_or_tokenizer, "tokenizer", processor_or_tokenizer)


def batch_inputs(
    contexts: Sequence[Context], pad_id: int, image_token_id: int | None, device: torch.device | str
) -> dict[str, torch.Tensor]:
    """Left-padded ``input_ids``/``attention_mask`` and, when any row has images, the concatenated
    ``pixel_values``/``image_grid_thw`` and ``mm_token_type_ids``."""
    width = max(len(c.ids) for c in contexts)
    ids = torch.full((len(contexts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(contexts), width), dtype=torch.long)
    for i, c in enumerate(contexts):
        ids[i, width - len(c.ids) :] = torch.tensor(c.ids, dtype=torch.long)
        mask[i, width - len(c.ids) :] = 1
    out = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    with_images = [c.vision for c in contexts if c.vision.n_images]
    if with_images:
        out["pixel_values"] = torch.cat([v.pixel_values for v in with_images]).to(device)
        out["image_grid_thw"] = torch.cat([v.image_grid_thw for v in with_images]).to(device)
        out["mm_token_type_ids"] = (out["input_ids"] == image_token_id).int() * out["attention_mask"].int()
    return out


def cast_vision(inputs: dict[str, torch.Tensor], model: Any) -> dict[str, torch.Tensor]:
    """``pixel_values`` in the model's floating dtype (bf16 models get bf16 pixels)."""
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(next(model.parameters()).dtype)
    return inputs


class StopScanner:
    """Where a row's sampled ids end: at the first EOS id, or at the first token that completes one of the
    stop strings in the *decoded text* (whatever tokens spell it: with Qwen's byte-level BPE ``</query>``
    is ``</`` ``query`` ``>`` and may end inside a token such as ``>\n``, whose extra characters stay in
    the sample). The same rule stops generation (:meth:`criterion`) and reads the result back
    (:meth:`scan`), so the cut never depends on pad tokens (Qwen's pad ``<|endoftext|>`` is also an EOS)."""

    def __init__(self, tokenizer: Any, eos_ids: Sequence[int], stop_strings: Sequence[str]):
        self.tokenizer = tokenizer
        self.eos_ids = set(eos_ids)
        self.stops = list(stop_strings)
        # a stop string that ends in the newest token lies within the last len(stop) tokens (a token is at
        # least one character); an occurrence that ended earlier was found at an earlier token
        self.window = max((len(s) for s in self.stops), default=0)

    def stop_at(self, ids: Sequence[int]) -> str | None:
        """The finish reason if the last id of ``ids`` ends the sample, else None."""
        if not ids:
            return None
        if ids[-1] in self.eos_ids:
            return "eos"
        if self.stops:
            tail = self.tokenizer.decode(list(ids[-self.window :]), skip_special_tokens=False)
            for s in self.stops:
                if s in tail:
                    return f"stop:{s}"
        return None

    def scan(self, ids: Sequence[int]) -> tuple[int, str]:
        """``(length, finish)``: the sampled prefix of ``ids`` and why it ended (``length`` when no EOS
        or stop string ends it)."""
        for n in range(1, len(ids) + 1):
            finish = self.stop_at(ids[:n])
            if finish is not None:
                return n, finish
        return len(ids), "length"

    def overflow(self, ids: Sequence[int], finish: str) -> str:
        """The characters the last token of ``ids`` carries past the stop string that ended it (Qwen and
        SmolLM2 spell ``</answer></`` as ``</`` ``answer`` ``></``): kept in the ids, which are exactly what
        was sampled, but not part of the text the grammar reads. Empty unless ``finish`` is a stop."""
        if not finish.startswith("stop:"):
            return ""
        stop = finish[len("stop:") :]
        text = self.tokenizer.decode(list(ids[-self.window :]), skip_special_tokens=False)
        at = text.rfind(stop)
        return text[at + len(stop) :] if at >= 0 else ""

    def criterion(self, width: int):
        """A ``StoppingCriteria`` for ``generate``: stops each row at its stop string (EOS is handled by
        ``generate`` itself). ``width`` is the padded prompt length (the new tokens start there)."""
        from transformers import StoppingCriteria

        scanner = self

        class _TextStop(StoppingCriteria):
            stops = scanner.stops

            def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
                done = [
                    scanner.stop_at(row[width:].tolist()[-scanner.window :]) is not None for row in input_ids
                ]
                return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

        return _TextStop()


class BanStrings:
    """Logits processor that forbids any token that would complete one of ``strings`` in the decoded text
    (the last-round ``<query>`` ban): a string may be several tokens (``<`` ``query`` ``>``, ``><`` ``query``
    ``>`` after ``</think>``), so the ban looks at the text already written, not at token ids. For each
    proper prefix ``p`` of a string ``s`` that the text ends with, the tokens whose text starts with the
    rest of ``s`` are banned, and tokens holding all of ``s`` always are. Tables are built once per
    tokenizer (one batched decode of the vocabulary)."""

    _tables: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> {string: table}

    def __init__(self, tokenizer: Any, strings: Sequence[str]):
        self.tokenizer = tokenizer
        self.strings = [s for s in strings if s]
        self.tables = {s: self._table(tokenizer, s) for s in self.strings}

    @classmethod
    def _table(cls, tokenizer: Any, s: str) -> list[torch.Tensor]:
        per_tokenizer = cls._tables.setdefault(tokenizer, {})
        if s not in per_tokenizer:
            vocab = len(tokenizer)
            texts = tokenizer.batch_decode([[i] for i in range(vocab)], skip_special_tokens=False)
            whole = {i for i, t in enumerate(texts) if s in t}
            table = []
            for j in range(len(s)):  # j = length of the prefix already written
                rest = s[j:]
                ids = whole | {i for i, t in enumerate(texts) if j and t.startswith(rest)}
                table.append(torch.tensor(sorted(ids), dtype=torch.long))
            per_tokenizer[s] = table
        return per_tokenizer[s]

    def banned_ids(self, ids: Sequence[int]) -> torch.Tensor:
        """Token ids that must not follow ``ids``."""
        parts = []
        for s, table in self.tables.items():
            tail = self.tokenizer.decode(list(ids[-len(s) :]), skip_special_tokens=False)
            parts.append(table[0])
            parts.extend(table[j] for j in range(1, len(s)) if tail.endswith(s[:j]))
        return torch.unique(torch.cat(parts)) if parts else torch.zeros(0, dtype=torch.long)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        for row in range(input_ids.shape[0]):
            banned = self.banned_ids(input_ids[row].tolist())
            scores[row, banned.to(scores.device)] = -float("inf")
        return scores


class HFGenerator:
    """Batched sampling with ``model.generate``: stop strings and banned strings matched on the decoded
    text (:class:`StopScanner`, :class:`BanStrings`), EOS, vision placeholders never sampled
    (``bad_words_ids``) and optional per-token log-probs of the sampled ids."""

    def __init__(self, model: Any, processor: Any):
        self.model = model
        self.tokenizer = token_ids(processor)
        self.pad_id = self.tokenizer.pad_token_id
        self.eos_ids = self._eos_ids()
        config = getattr(model, "config", None)
        self.image_token_id = getattr(config, "image_token_id", None)
        # vision placeholders are written by the processor, never sampled: a sampled <|image_pad|> would
        # break the image-token count of every later forward pass
        self.never_sample = [
            i
            for i in (
                getattr(config, k, None)
                for k in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
            )
            if i is not None
        ]
        if self.tokenizer.pad_token_id not in self.eos_ids:
            self.never_sample.append(self.tokenizer.pad_token_id)
        self.calls = 0

    def _eos_ids(self) -> list[int]:
        eos = getattr(self.model.generation_config, "eos_token_id", None) or self.tokenizer.eos_token_id
        return [eos] if isinstance(eos, int) else list(eos)

    @torch.no_grad()
    def generate(
        self,
        contexts: Sequence[Context],
        *,
        stop_strings: Sequence[str],
        max_new_tokens: int,
        banned_strings: Sequence[str] = (),
        do_sample: bool = True,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int | None = None,
        want_logprobs: bool = False,
    ) -> list[Generated]:
        """One ``generate`` call for all ``contexts``; returns one :class:`Generated` per context."""
        from transformers import LogitsProcessorList, StoppingCriteriaList

        self.calls += 1
        device = next(self.model.parameters()).device
        inputs = cast_vision(batch_inputs(contexts, self.pad_id, self.image_token_id, device), self.model)
        width = inputs["input_ids"].shape[1]
        scanner = StopScanner(self.tokenizer, self.eos_ids, stop_strings)
        kwargs: dict[str, Any] = dict(
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            pad_token_id=self.pad_id,
            eos_token_id=self.eos_ids,
            bad_words_ids=[[i] for i in self.never_sample] or None,
            stopping_criteria=StoppingCriteriaList([scanner.criterion(width)]),
            return_dict_in_generate=True,
            output_scores=want_logprobs,
        )
        if banned_strings:
            kwargs["logits_processor"] = LogitsProcessorList([BanStrings(self.tokenizer, banned_strings)])
        if do_sample:
            kwargs.update(temperature=temperature, top_p=top_p, top_k=top_k or 0)
        out = self.model.generate(**inputs, **kwargs)
        seqs = out.sequences.cpu()
        new = seqs[:, width:]
        logps = None
        if want_logprobs:
            steps = torch.stack([torch.log_softmax(s.float(), dim=-1) for s in out.scores], dim=1).cpu()
            logps = torch.gather(steps, 2, new[:, : steps.shape[1]].unsqueeze(-1)).squeeze(-1)
        results = []
        for row in range(len(contexts)):
            prefix = seqs[row, :width][inputs["attention_mask"][row].bool().cpu()].tolist()
            # the sample ends where the stop rule says, never by stripping pads: a pad id may be an EOS
            length, finish = scanner.scan(new[row].tolist())
            ids = new[row, :length].tolist()
            lp = logps[row, :length].tolist() if logps is not None else [0.0] * length
            results.append(
                Generated(
                    ids,
                    lp,
                    finish,
                    prefix_ok=prefix == contexts[row].ids,
                    overflow=scanner.overflow(ids, finish),
                )
            )
        return results


@torch.no_grad()
def next_token_logprobs(
    model: Any, contexts: Sequence[Context], pad_id: int, batch_size: int = 16
) -> torch.Tensor:
    """``(len(contexts), vocab)`` log-probabilities of the token that would follow each context: one
    batched forward pass per ``batch_size`` rows (left padding, so the last position is the next token)."""
    image_token_id = getattr(model.config, "image_token_id", None)
    device = next(model.parameters()).device
    outs = []
    for start in range(0, len(contexts), batch_size):
        chunk = contexts[start : start + batch_size]
        inputs = cast_vision(batch_inputs(chunk, pad_id, image_token_id, device), model)
        logits = model(**inputs, logits_to_keep=1).logits[:, -1, :].float()
        outs.append(torch.log_softmax(logits, dim=-1).cpu())
    return torch.cat(outs) if outs else torch.zeros(0)
