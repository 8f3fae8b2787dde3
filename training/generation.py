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
    """What one row sampled in one call: the ids (stop string / EOS included), their sampling log-probs
    (``None`` when not requested: never zeros a trainer could read as log-probs) and the stop reason:
    ``eos``, ``stop:<string>`` or ``length``."""

    ids: list[int]
    logprobs: list[float] | None
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


class SampledLogprobs:
    """Logits processor that keeps only the log-prob of each *sampled* token, not a batch x vocabulary
    tensor per step (``output_scores`` at 7B, 64 rows and 1,024 steps would hold about 40 GB): at each step
    it gathers, from the previous step's distribution, the token ``generate`` just appended, and keeps one
    batch x vocabulary tensor alive. Placed after every other custom processor, it sees the logits with the
    bans applied; ``generate`` applies the temperature after custom processors, so it divides by the same
    temperature. Sampling with top-p / top-k truncation is refused by :meth:`HFGenerator.generate` when
    log-probs are wanted (they would not be the truncated distribution's)."""

    def __init__(self, temperature: float):
        self.temperature = temperature
        self.previous: torch.Tensor | None = None
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.previous is not None:
            self.steps.append(self.previous.gather(1, input_ids[:, -1:]).squeeze(1).cpu())
        self.previous = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores

    def result(self, new_ids: torch.Tensor) -> torch.Tensor:
        """``(rows, steps)`` log-probs of ``new_ids`` (the generated part of the sequences)."""
        if self.previous is not None and len(self.steps) < new_ids.shape[1]:
            last = new_ids[:, len(self.steps) : len(self.steps) + 1].to(self.previous.device)
            self.steps.append(self.previous.gather(1, last).squeeze(1).cpu())
        self.previous = None
        if not self.steps:
            return torch.zeros((new_ids.shape[0], 0))
        return torch.stack(self.steps, dim=1)


def sampling_config(
    *,
    max_new_tokens: int,
    do_sample: bool,
    temperature: float,
    top_p: float,
    top_k: int | None,
    pad_token_id: int,
    eos_token_id: list[int],
    bad_words_ids: list[list[int]] | None,
):
    """The one complete ``GenerationConfig`` of a sampling call, built from the caller's own settings: every
    field that could reshape the distribution (``repetition_penalty``, ``min_p``, ``no_repeat_ngram_size``,
    ``typical_p``, ``epsilon_cutoff`` ...) is at its neutral default, whatever the checkpoint's
    ``generation_config.json`` ships (Qwen2/2.5-VL Instruct ship ``repetition_penalty`` 1.05, ``top_k``,
    ``top_p``): TRL scores ``log_softmax(logits / temperature)``, so anything else applied while sampling
    would bias the gradient silently."""
    from transformers import GenerationConfig

    sampling = dict(temperature=temperature, top_p=top_p, top_k=top_k or 0) if do_sample else {}
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        bad_words_ids=bad_words_ids,
        return_dict_in_generate=True,
        **sampling,
    )


class _OnlyThisConfig:
    """While ``generate`` runs, the model's own ``generation_config`` is ``config``: transformers fills every
    unset field of a passed config from the model's (``_prepare_generation_config``), so passing a config is
    not enough to keep a checkpoint's sampling fields out."""

    def __init__(self, model: Any, config: Any):
        self.model, self.config, self.saved = model, config, None

    def __enter__(self):
        self.saved = self.model.generation_config
        self.model.generation_config = self.config
        return self.config

    def __exit__(self, *exc: Any) -> None:
        self.model.generation_config = self.saved


class HFGenerator:
    """Batched sampling with ``model.generate``: one complete generation config built from the caller's
    settings (:func:`sampling_config`; the checkpoint's ``generation_config`` sampling fields never apply),
    stop strings and banned strings matched on the decoded text (:class:`StopScanner`,
    :class:`BanStrings`), EOS, vision placeholders never sampled (``bad_words_ids``) and optional per-token
    log-probs of the sampled ids (:class:`SampledLogprobs`).

    The vision-placeholder ban is the one constraint the trainer's softmax does not see: a sampled
    ``<|image_pad|>`` would break every later forward pass. Its effect on a sampled token's log-prob is
    ``-log(1 - p(placeholders))``, below 1e-4 nats for the models tested (``tests/training/
    test_sampling_contract.py``)."""

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
        """One ``generate`` call for all ``contexts``; returns one :class:`Generated` per context.
        ``want_logprobs``: the log-prob of each sampled token under the distribution it was sampled from
        (temperature and bans included); refused with top-p < 1 or top-k, whose truncation it would not
        include."""
        from transformers import LogitsProcessorList, StoppingCriteriaList

        if want_logprobs and do_sample and (top_p < 1.0 or (top_k or 0) > 0):
            raise ValueError(
                f"want_logprobs with top_p={top_p}, top_k={top_k}: the recorded log-probs would be the "
                "untruncated softmax, not the distribution sampled from; sample with top_p=1.0, top_k=0"
            )
        self.calls += 1
        device = next(self.model.parameters()).device
        inputs = cast_vision(batch_inputs(contexts, self.pad_id, self.image_token_id, device), self.model)
        width = inputs["input_ids"].shape[1]
        scanner = StopScanner(self.tokenizer, self.eos_ids, stop_strings)
        config = sampling_config(
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            pad_token_id=self.pad_id,
            eos_token_id=self.eos_ids,
            bad_words_ids=[[i] for i in self.never_sample] or None,
        )
        processors = LogitsProcessorList()
        if banned_strings:
            processors.append(BanStrings(self.tokenizer, banned_strings))
        recorder = SampledLogprobs(temperature if do_sample else 1.0) if want_logprobs else None
        if recorder is not None:
            processors.append(recorder)  # last custom processor: sees the bans
        with _OnlyThisConfig(self.model, config):
            out = self.model.generate(
                **inputs,
                generation_config=config,
                logits_processor=processors,
                stopping_criteria=StoppingCriteriaList([scanner.criterion(width)]),
            )
        seqs = out.sequences.cpu()
        new = seqs[:, width:]
        logps = recorder.result(new) if recorder is not None else None
        results = []
        for row in range(len(contexts)):
            prefix = seqs[row, :width][inputs["attention_mask"][row].bool().cpu()].tolist()
            # the sample ends where the stop rule says, never by stripping pads: a pad id may be an EOS
            length, finish = scanner.scan(new[row].tolist())
            ids = new[row, :length].tolist()
            lp = logps[row, :length].tolist() if logps is not None else None
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
