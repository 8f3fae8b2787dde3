"""A thin vLLM generation backend for :class:`training.rollout.Rollout` (optional extra ``vllm``).

vLLM cannot be installed on this project's development and CI machines (CPU only), so this adapter is
import-guarded and its sampling is **not exercised by the test suite** (its refusals are); it exists so a
GPU deployment can swap the backend without touching the rollout:
``Rollout(retriever, generator_factory=VLLMGenerator.factory(llm))``.
It keeps the rollout's token-in / token-out contract: prompts go in as ``prompt_token_ids`` (text only:
images are refused, see Limits), and the sampled ``token_ids`` come back unchanged, stop strings
included (``SamplingParams(stop=..., include_stop_str_in_output=True)``).

Limits:

- **Images are refused.** The rollout carries a row's images as the Hugging Face processor's
  ``pixel_values`` / ``image_grid_thw`` (:class:`training.generation.Vision`), which vLLM cannot take; a row
  with images raises ``ValueError`` rather than reaching vLLM as text only. Stage 2 and the image benchmarks
  run on :class:`training.generation.HFGenerator`.
- Banned strings use ``SamplingParams(bad_words=...)``, which bans the string's own tokenization (with and
  without a leading space) only, not every spelling of it as :class:`training.generation.BanStrings` does
  on the Hugging Face path. Training bans nothing (the rollout's ``ban_queries=False``).
- Log-probs are vLLM's for the sampled token (``None`` when not requested).
- Not wired into the trainer: ``training.trainer.stage_rollout`` uses the default ``HFGenerator``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .generation import Context, Generated, token_ids


class VLLMGenerator:
    """Backend over a ``vllm.LLM`` with the same ``generate`` signature as ``HFGenerator``."""

    def __init__(self, llm: Any, processor: Any):
        try:
            import vllm  # noqa: F401
        except ImportError as e:  # pragma: no cover - vLLM is not installable on CPU machines
            raise ImportError("VLLMGenerator needs vLLM: pip install '.[vllm]' on a GPU machine") from e
        self.llm = llm
        self.tokenizer = token_ids(processor)
        self.eos_ids = [self.tokenizer.eos_token_id]
        self.calls = 0

    @classmethod
    def factory(cls, llm: Any):
        """A ``generator_factory`` for :class:`training.rollout.Rollout` that ignores the HF model."""
        return lambda _model, processor: cls(llm, processor)

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
        with_images = [n for n, c in enumerate(contexts) if c.vision.n_images]
        if with_images:
            raise ValueError(
                f"VLLMGenerator: rows {with_images[:8]} carry images, which this backend cannot pass to vLLM "
                "(it takes PIL images, the rollout holds processor tensors); run image rows with "
                "training.generation.HFGenerator (the Rollout's default generator_factory)"
            )
        from vllm import SamplingParams

        self.calls += 1
        params = SamplingParams(
            max_tokens=max_new_tokens,
            temperature=temperature if do_sample else 0.0,
            top_p=top_p,
            top_k=top_k or -1,
            stop=list(stop_strings),
            include_stop_str_in_output=True,
            bad_words=list(banned_strings) or None,
            logprobs=0 if want_logprobs else None,
        )
        requests = []
        for c in contexts:
            requests.append({"prompt_token_ids": list(c.ids)})
        outs = self.llm.generate(requests, params, use_tqdm=False)
        results = []
        for c, o in zip(contexts, outs, strict=True):
            comp = o.outputs[0]
            ids = list(comp.token_ids)
            if comp.finish_reason == "stop" and comp.stop_reason in stop_strings:
                finish = f"stop:{comp.stop_reason}"
            elif comp.finish_reason == "stop":
                finish = "eos"
            else:
                finish = "length"
            lps = None
            if want_logprobs:
                if not comp.logprobs or len(comp.logprobs) != len(ids):
                    raise RuntimeError("vLLM returned no log-prob for a sampled token (logprobs=0 was asked)")
                lps = [d[i].logprob for d, i in zip(comp.logprobs, ids, strict=True)]
            results.append(Generated(ids, lps, finish, prefix_ok=list(o.prompt_token_ids) == list(c.ids)))
        return results
