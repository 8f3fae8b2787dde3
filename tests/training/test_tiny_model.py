"""The tiny Qwen2.5-VL: HF layout, the real Qwen2.5-VL tokenizer (or, on request, a trained one with the
protocol tags as single tokens), loaded by the production loader (local folder and a URL synced through
fsspec); the vLLM adapter is import-guarded."""

import json

import pytest

from training.protocol import PROTOCOL_TOKENS
from training.tiny_model import DEFAULT_BASE_MODEL, load_policy, resolve_model_path


def test_layout_tokens_and_loader(tiny_model_dir, tmp_path):
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "processor_config.json",
        "chat_template.jinja",
    ):
        assert (tiny_model_dir / name).exists(), name
    manifest = json.loads((tiny_model_dir / "medrwr_model.json").read_text())
    assert manifest["random_weights"] is True and manifest["parameters"] > 0
    model, processor = load_policy(str(tiny_model_dir))
    tok = processor.tokenizer
    assert model.config.model_type == "qwen2_5_vl" and tok.padding_side == "left"
    assert manifest["tokenizer"].startswith("Qwen2.5-VL") and len(tok) == 151665
    for tag in PROTOCOL_TOKENS:  # the real tokenizer: every tag is several tokens, and round-trips
        ids = tok(tag, add_special_tokens=False)["input_ids"]
        assert len(ids) > 1 and tok.decode(ids) == tag
    assert model.generation_config.eos_token_id == [tok.eos_token_id, tok.pad_token_id]  # as Qwen2.5-VL's
    assert (
        tok.eos_token == "<|im_end|>"
        and tok.convert_tokens_to_ids("<|image_pad|>") == model.config.image_token_id
    )
    # a remote prefix (any fsspec URL; s3:// in production) is synced once into the cache and loaded the same
    # way
    local = resolve_model_path(f"file://{tiny_model_dir}", cache_dir=tmp_path / "cache")
    assert (tmp_path / "cache").exists() and local != str(tiny_model_dir)
    model2, _ = load_policy(f"file://{tiny_model_dir}", cache_dir=tmp_path / "cache")
    assert model2.config.to_dict()["text_config"]["hidden_size"] == model.config.text_config.hidden_size
    assert resolve_model_path(DEFAULT_BASE_MODEL) == "Qwen/Qwen2.5-VL-7B-Instruct"  # hub ids pass through
    with pytest.raises(ValueError, match="cache_dir"):
        resolve_model_path("s3://bucket/model")


def test_trained_tokenizer_variant_keeps_tags_single_tokens(tmp_path):
    from assets.common.profiles import SAMPLE_DATA_DIR
    from training.tiny_model import build_tiny_model, local_corpus

    manifest = build_tiny_model(
        tmp_path, local_corpus(SAMPLE_DATA_DIR, max_texts=300), tokenizer="trained", vocab_size=512
    )
    _, processor = load_policy(str(tmp_path))
    tok = processor.tokenizer
    assert manifest["tokenizer"] == "trained on the corpus"
    for tag in PROTOCOL_TOKENS:
        ids = tok(tag, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tok.decode(ids) == tag
    with pytest.raises(ValueError, match="extra_tokens needs tokenizer='trained'"):
        build_tiny_model(tmp_path / "x", extra_tokens=["zorvat"])


def test_vllm_adapter_is_import_guarded(tiny_model_dir):
    import importlib.util

    from training.vllm_backend import VLLMGenerator

    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ImportError, match="vllm"):
            VLLMGenerator(llm=None, processor=None)
