"""The policy model: a tiny Qwen2.5-VL built locally (smoke profile) and the loader shared with production.

:func:`build_tiny_model` writes, once, a folder in the Hugging Face layout (``config.json``,
``model.safetensors``, ``tokenizer.json``, ``processor_config.json``, ``chat_template.jinja``...): a
Qwen2.5-VL-architecture model with random weights and, by default, the real Qwen2.5-VL tokenizer
(``training/qwen25vl``), where ``<answer>B`` is ``<`` ``answer`` ``>B`` as in production. A tokenizer trained
on local text with single-token protocol tags remains available (``tokenizer="trained"``) for experiments
that need it; no production path assumes a tag is one token. Scores of this model are chance-level by
construction.

:func:`load_policy` loads a model and its processor from a hub id, a local folder or an ``s3://`` prefix
(synced into a local cache first) through ``AutoProcessor`` / ``AutoModelForImageTextToText``: the same
code loads the tiny model and Qwen2.5-VL-7B-Instruct (:data:`DEFAULT_BASE_MODEL`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .protocol import PROTOCOL_TOKENS

DEFAULT_BASE_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
QWEN_TOKENIZER_DIR = Path(__file__).parent / "qwen25vl"

QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# Qwen2-VL's chat template (system default, string or typed content, image/video placeholders).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096, extra_tokens: Iterable[str] = ()):
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``texts``, with the Qwen special tokens,
    the protocol tags and ``extra_tokens`` as single added tokens. Left padding, ``<|endoftext|>`` pad,
    ``<|im_end|>`` EOS (as in Qwen2.5-VL-Instruct)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(QWEN_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_tokens(
        [AddedToken(t, normalized=False, special=False) for t in (*PROTOCOL_TOKENS, *extra_tokens)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        padding_side="left",
        model_max_length=32768,
        extra_special_tokens={
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_start_token": "<|vision_start|>",
            "vision_end_token": "<|vision_end|>",
        },
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def small_vision_config(hidden_size: int, depth: int, out_hidden_size: int) -> dict:
    """A small random Qwen2.5-VL vision tower whose output matches a text model of ``out_hidden_size``."""
    return {
        "depth": depth,
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_heads": 2,
        "out_hidden_size": out_hidden_size,
        "fullatt_block_indexes": [depth - 1],
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 56,
    }


def tiny_config(
    tokenizer,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    vision_hidden_size: int = 32,
    vision_depth: int = 1,
):
    """A ``Qwen2_5_VLConfig`` of the given (small) sizes whose token ids match ``tokenizer``."""
    from transformers import Qwen2_5_VLConfig

    head_dim = hidden_size // heads
    half = head_dim // 2
    mrope = [half - 2 * (half // 3), half // 3, half // 3]  # sums to head_dim / 2, as Qwen requires
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": True,
        "rope_parameters": {"rope_type": "default", "mrope_section": mrope, "rope_theta": 10000.0},
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    vision_config = small_vision_config(vision_hidden_size, vision_depth, hidden_size)
    return Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def make_processor(tokenizer, min_pixels: int = 56 * 56, max_pixels: int = 112 * 112):
    """A ``Qwen2_5_VLProcessor`` around ``tokenizer``; small pixel bounds keep images to a few tokens."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=CHAT_TEMPLATE,
    )


def qwen_tokenizer():
    """The real Qwen2.5-VL tokenizer (``training/qwen25vl``, built by ``tools/build_qwen_tokenizer.py``):
    byte-level BPE where the protocol tags are several tokens, ``<|im_end|>`` EOS, ``<|endoftext|>`` pad."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(QWEN_TOKENIZER_DIR)
    tok.padding_side = "left"
    return tok


def build_tiny_model(
    out_dir: str | Path,
    corpus: Iterable[str] | None = None,
    *,
    tokenizer: str = "qwen",
    vocab_size: int = 4096,
    extra_tokens: Iterable[str] = (),
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    seed: int = 0,
) -> dict[str, Any]:
    """Build a random-weight tiny Qwen2.5-VL and save it (safetensors) with its processor into ``out_dir``
    in the Hugging Face layout. Returns a manifest (also written as ``medrwr_model.json``): tokenizer,
    sizes, parameter count, seed and a sha256 of the weights file.

    ``tokenizer="qwen"`` (default, what the smoke profile and the tests use): the real Qwen2.5-VL tokenizer
    (:func:`qwen_tokenizer`), so everything downstream tokenizes as production does; like Qwen2.5-VL's
    generation config, both ``<|im_end|>`` and ``<|endoftext|>`` (also the pad) end a sample.
    ``tokenizer="trained"``: a byte-level BPE trained on ``corpus`` where the protocol tags and
    ``extra_tokens`` are single tokens (for experiments that need that, e.g. ``benchmarks/learning_check``).
    """
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts: list[str] = []
    if tokenizer == "qwen":
        if extra_tokens:
            raise ValueError("build_tiny_model: extra_tokens needs tokenizer='trained'")
        tok = qwen_tokenizer()
    elif tokenizer == "trained":
        texts = [t for t in corpus or () if t and t.strip()]
        if not texts:
            raise ValueError(
                "build_tiny_model: the corpus is empty; pass the local text the tokenizer is trained on"
            )
        tok = train_tokenizer(texts, vocab_size=vocab_size, extra_tokens=extra_tokens)
    else:
        raise ValueError(f"build_tiny_model: tokenizer must be 'qwen' or 'trained', got {tokenizer!r}")
    config = tiny_config(tok, hidden_size=hidden_size, layers=layers, heads=heads)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    eos = config.text_config.eos_token_id
    pad = config.text_config.pad_token_id
    model.generation_config.eos_token_id = [eos, pad] if tokenizer == "qwen" else eos
    model.generation_config.pad_token_id = pad
    model.save_pretrained(out, safe_serialization=True)
    make_processor(tok).save_pretrained(out)
    weights = out / "model.safetensors"
    manifest = {
        "kind": "tiny-qwen2.5-vl",
        "random_weights": True,
        "tokenizer": "Qwen2.5-VL (training/qwen25vl)" if tokenizer == "qwen" else "trained on the corpus",
        "seed": seed,
        "vocab_size": len(tok),
        "hidden_size": hidden_size,
        "layers": layers,
        "heads": heads,
        "corpus_texts": len(texts),
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
    }
    (out / "medrwr_model.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def resolve_model_path(
    ref: str, cache_dir: str | Path | None = None, storage_options: dict[str, Any] | None = None
) -> str:
    """A path or hub id ``from_pretrained`` can read: ``s3://`` (or any fsspec URL) is copied once into
    ``cache_dir/<sha of the URL>``; a local folder or a hub id is returned unchanged."""
    if "://" not in ref:
        return ref
    import fsspec

    if cache_dir is None:
        raise ValueError(f"model {ref!r} is remote: pass cache_dir, the local folder it is synced into")
    local = Path(cache_dir) / hashlib.sha256(ref.encode()).hexdigest()[:16]
    done = local / ".complete"
    if not done.exists():
        fs, root = fsspec.core.url_to_fs(ref, **(storage_options or {}))
        files = [f for f in fs.find(root) if not f.endswith("/")]
        if not any(f.endswith("config.json") for f in files):
            raise FileNotFoundError(
                f"model {ref!r}: no config.json under it; expected a Hugging Face model folder"
            )
        for f in files:
            target = local / Path(f).relative_to(root.rstrip("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get(f, str(target))
        done.write_text(ref)
    return str(local)


def load_policy(
    ref: str,
    *,
    cache_dir: str | Path | None = None,
    storage_options: dict[str, Any] | None = None,
    dtype: str = "auto",
    device: str | None = None,
):
    """``(model, processor)`` from a hub id, a local folder or an ``s3://`` prefix (see
    :func:`resolve_model_path`). The processor's tokenizer pads on the left (generation)."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = resolve_model_path(ref, cache_dir, storage_options)
    processor = AutoProcessor.from_pretrained(path)
    processor.tokenizer.padding_side = "left"
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch_dtype)
    if device:
        model = model.to(device)
    return model, processor


def local_corpus(data_dir: str | Path, max_texts: int = 4000) -> list[str]:
    """Text for the tokenizer from the bundled sample data: MedQuAD questions and answers, SLAKE questions
    and KG lines, MedMCQA questions and explanations (first ``max_texts`` of them, in a fixed order)."""
    import gzip

    root = Path(data_dir)
    texts: list[str] = []
    medquad = root / "medquad" / "medquad_qa.jsonl.gz"
    if medquad.exists():
        with gzip.open(medquad, "rt") as fh:
            for line in fh:
                r = json.loads(line)
                texts.append(f"{r.get('question') or ''} {(r.get('answer') or '')[:2000]}")
                if len(texts) >= max_texts // 2:
                    break
    for name in ("en_disease.csv", "en_organ.csv", "en_organ_rel.csv"):
        path = root / "slake" / "KG_mvqa-kg" / name
        if path.exists():
            texts.extend(line.replace("#", " ") for line in path.read_text().splitlines()[1:])
    medmcqa = root / "medmcqa" / "dev.json"
    if medmcqa.exists():
        for line in medmcqa.read_text().splitlines():
            r = json.loads(line)
            texts.append(
                " ".join(str(r.get(k) or "") for k in ("question", "opa", "opb", "opc", "opd", "exp"))
            )
            if len(texts) >= max_texts:
                break
    slake = root / "slake" / "train.json"
    if slake.exists():
        texts.extend(
            r["question"] + " " + str(r["answer"])
            for r in json.loads(slake.read_text())
            if r.get("q_lang") == "en"
        )
    return texts[:max_texts]
