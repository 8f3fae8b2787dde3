"""Conversational prompts to token ids and vision inputs, exactly as TRL tokenises them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..generation import Context, Vision, token_ids


def prompt_images(messages: Sequence[dict]) -> list[Any]:
    """The images of a conversational prompt, in order (``{"type": "image", "image": img}`` items)."""
    images = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            for item in content:
                if isinstance(item, dict) and item.get("type") == "image" and item.get("image") is not None:
                    images.append(item["image"])
    return images


def encode_prompts(processor: Any, prompts: Sequence[Sequence[dict]]) -> list[Context]:
    """Prompt ids (and vision inputs) from the processor's chat template with the generation prompt,
    exactly as TRL tokenises a prompt for its forward pass (so ``pixel_values`` line up)."""
    tokenizer = token_ids(processor)
    contexts = []
    for messages in prompts:
        images = prompt_images(messages)
        text = processor.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        if images:
            enc = processor(text=[text], images=images, return_tensors="pt")
            vision = Vision(enc["pixel_values"], enc["image_grid_thw"])
            ids = enc["input_ids"][0].tolist()
        else:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            vision = Vision()
        contexts.append(Context(ids, vision))
    return contexts
