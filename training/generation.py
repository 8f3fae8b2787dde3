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


class HFGenerator:
    """Batched sampling with ``model.generate``: stop strings (``stop_strings`` + ``tokenizer=``), EOS,
    banned token sequences (``bad_words_ids``) and optional per-token log-probs of the sampled ids."""

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
        banned: Sequence[Sequence[int]] = (),
        do_sample: bool = True,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int | None = None,
        want_logprobs: bool = False,
    ) -> list[Generated]:
        """One ``generate`` call for all ``contexts``; returns one :class:`Generated` per context."""
        self.calls += 1
        device = next(self.model.parameters()).device
        inputs = cast_vision(batch_inputs(contexts, self.pad_id, self.image_token_id, device), self.model)
        width = inputs["input_ids"].shape[1]
        # the pad token is never a legitimate sample inside a turn; banning it makes trailing pads unambiguous
        bad = [list(b) for b in banned] + [[i] for i in self.never_sample]
        kwargs: dict[str, Any] = dict(
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            pad_token_id=self.pad_id,
            eos_token_id=self.eos_ids,
            bad_words_ids=bad or None,
            return_dict_in_generate=True,
            output_scores=want_logprobs,
        )
        if stop_strings:
            kwargs.update(stop_strings=list(stop_strings), tokenizer=self.tokenizer)
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
            ids = new[row].tolist()
            length = len(ids)
            while length and ids[length - 1] == self.pad_id:
                length -= 1
            ids = ids[:length]
            finish = self._finish(ids, stop_strings, max_new_tokens)
            lp = logps[row, :length].tolist() if logps is not None else [0.0] * length
            results.append(Generated(ids, lp, finish, prefix_ok=prefix == contexts[row].ids))
        return results

    def _finish(self, ids: list[int], stop_strings: Sequence[str], max_new_tokens: int) -> str:
        if ids and ids[-1] in self.eos_ids:
            return "eos"
        tail = self.tokenizer.decode(ids[-16:], skip_special_tokens=False)
        for s in stop_strings:
            if tail.rstrip().endswith(s) or (s in tail and len(ids) < max_new_tokens):
                return f"stop:{s}"
        return "length"


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
