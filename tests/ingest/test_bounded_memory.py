"""Memory bounded by a line, a field and a batch, never by the file.

Seen: a CSV line of 1.5 GiB (from a small ``.csv.gz``) used 3.3 GB before its error; a 50 MB question was
published; 44 MB of JSON lines (400k rows) peaked at 1.41 GB. The bombs here are made on the fly: a gzip
file of many members, each the same compressed MiB, decompresses to 1 GiB from about 1 MB on disk.
"""

import gzip
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest

from assets.ingest.text_qa import read_text_qa
from assets.knowledge.sources import read_kb_source
from retrieval.chunking import TokenChunker
from retrieval.embedders import TextEmbedder
from storage.sources import DEFAULT_MAX_FIELD_BYTES, LineTooLong, SourceDir, SourceError

REPO = Path(__file__).resolve().parents[2]
GIB = 1024**3
MIB = 1024**2

MAPPING = """files: [{name}]
license: CC-BY-4.0
question: stem
options: [a, b, c, d]
answer: key
"""


def _gzip_bomb(path: Path, head: bytes, filler: bytes, total: int, tail: bytes = b"") -> None:
    """``head`` + ``total`` bytes of ``filler`` + ``tail`` as a multi-member gzip file of about total/1000."""
    chunk = (filler * (MIB // len(filler) + 1))[:MIB]
    member = gzip.compress(chunk, compresslevel=9)
    with open(path, "wb") as f:
        f.write(gzip.compress(head))
        for _ in range(total // MIB):
            f.write(member)
        f.write(gzip.compress(tail))


_MEASURE = """
def _status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))
from assets.ingest.text_qa import read_text_qa
from storage.sources import SourceDir, SourceError
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current resident size, after the imports
before = _status("VmRSS")
{code}
print("PEAK_GROWTH_KIB", _status("VmHWM") - before)
"""


def _peak_mib_in_subprocess(code: str) -> tuple[float, str]:
    """Run ``code`` in a fresh interpreter; how far its peak resident memory (Linux ``VmHWM``, reset after
    the imports) rose above the resident memory it started from, in MiB, and what it printed."""
    script = _MEASURE.replace("{code}", textwrap.dedent(code))
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300, check=True
    ).stdout
    growth = int(out.rsplit("PEAK_GROWTH_KIB", 1)[1].split()[0])
    return growth / 1024, out


@pytest.mark.timeout(300)
def test_a_1_gib_csv_line_from_a_small_gz_is_refused_with_bounded_memory(tmp_path):
    root = tmp_path / "mcq"
    root.mkdir()
    (root / "mcq_mapping.yaml").write_text(MAPPING.format(name="bomb_train.csv.gz"))
    _gzip_bomb(root / "bomb_train.csv.gz", b"stem,a,b,c,d,key\nWhat?,w,x,y,z,A\n", b"x", GIB, b"\n")
    assert (root / "bomb_train.csv.gz").stat().st_size < 3 * MIB
    growth, out = _peak_mib_in_subprocess(
        f"""
        try:
            read_text_qa("mcq_custom", SourceDir({str(root)!r}))
        except SourceError as e:
            print("REFUSED", e)
        """
    )
    assert "REFUSED" in out and "bomb_train.csv.gz" in out, out
    assert "line ending at line 3 is longer than the cap of 67,108,864 bytes" in out, out
    assert growth < 300, f"peak memory grew by {growth:.0f} MiB reading a 1 GiB line"
    print(f"1 GiB CSV line: peak RSS grew {growth:.0f} MiB")


@pytest.mark.timeout(300)
def test_an_unclosed_quote_is_refused_once_the_record_passes_the_line_cap(tmp_path):
    path = tmp_path / "quoted_train.csv"
    path.write_text('stem,a\n"never closed,x\n' + "short line\n" * 2000)
    src = SourceDir(str(tmp_path), max_line_bytes=4096)
    with pytest.raises(LineTooLong, match=r"quoted_train.csv: record \(a quoted field over many lines\?\)"):
        list(src.iter_csv("quoted_train.csv"))


def _jsonl_question(i: int, question: str) -> str:
    return json.dumps(
        {"id": f"q{i}", "question": question, "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": 1}
    )


def test_a_50_mb_question_is_refused_naming_file_row_and_field(tmp_path):
    big = "y" * (50 * 1000 * 1000)
    (tmp_path / "train.json").write_text(
        "\n".join(
            [_jsonl_question(0, "Which drug?"), _jsonl_question(1, big), _jsonl_question(2, "Which dose?")]
        )
    )
    df, result = read_text_qa("medmcqa", SourceDir(str(tmp_path)))
    assert df.height == 2
    (rej,) = result.rejected
    assert rej.source_file.endswith("train.json") and rej.row == "line 2"
    assert f"over the cap of {DEFAULT_MAX_FIELD_BYTES:,} bytes: 'question' (50,000,000 bytes)" in rej.reason
    # the quarantine keeps the row's start and the field's size, never the 50 MB
    assert len(json.dumps(rej.raw)) < 1000 and "[50,000,000 characters]" in rej.raw["question"]


def test_a_50_mb_csv_field_quarantines_its_row_and_keeps_the_others(tmp_path):
    (tmp_path / "mcq_mapping.yaml").write_text(MAPPING.format(name="big_train.csv"))
    rows = [
        "stem,a,b,c,d,key",
        "Which drug?,w,x,y,z,A",
        "Q," + "y" * (50 * 1000 * 1000) + ",x,y,z,B",
        "Dose?,1,2,3,4,C",
    ]
    (tmp_path / "big_train.csv").write_text("\n".join(rows) + "\n")
    df, result = read_text_qa("mcq_custom", SourceDir(str(tmp_path)))
    assert sorted(df["question"].to_list()) == ["Dose?", "Which drug?"]
    (rej,) = result.rejected
    assert rej.row == "line 3" and "'a' (50,000,000 bytes)" in rej.reason
    assert len(json.dumps(rej.raw)) < 2000


def test_field_cap_in_json_documents_and_parquet_corpora(tmp_path):
    pubmed = tmp_path / "pubmedqa"
    pubmed.mkdir()
    record = {"QUESTION": "q", "CONTEXTS": ["c" * (2 * MIB)], "final_decision": "yes", "LONG_ANSWER": "a"}
    (pubmed / "ori_pqal.json").write_text(json.dumps({"123": record}))
    with pytest.raises(SourceError, match=r"ori_pqal.json: field\(s\) over the cap .*'123.CONTEXTS\[0\]'"):
        read_text_qa("pubmedqa", SourceDir(str(pubmed)))

    corpus = tmp_path / "textbooks"
    corpus.mkdir()
    pl.DataFrame(
        {"id": ["1", "2"], "title": ["Heart", "Lung"], "content": ["The heart pumps blood.", "z" * (2 * MIB)]}
    ).write_parquet(corpus / "part.parquet")
    df, result = read_kb_source(
        "textbooks", SourceDir(str(corpus)), TokenChunker.for_embedder(TextEmbedder())
    )
    assert df["native_id"].to_list() == ["1"]
    (rej,) = result.rejected
    assert rej.row == "1" and "'content'" in rej.reason and len(json.dumps(rej.raw)) < 1000


def test_a_json_document_over_its_cap_is_refused_without_reading_on(tmp_path):
    pubmed = tmp_path / "pubmedqa"
    pubmed.mkdir()
    (pubmed / "ori_pqal.json").write_text(json.dumps({str(i): {"QUESTION": "q" * 100} for i in range(1000)}))
    with pytest.raises(SourceError, match=r"ori_pqal.json: is larger than the cap of 10,000 bytes"):
        read_text_qa("pubmedqa", SourceDir(str(pubmed), max_document_bytes=10_000))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_rows_become_columnar_in_batches_so_memory_does_not_grow_with_the_row_count(tmp_path):
    """200k MedMCQA rows (55 MB of JSON lines): held as dicts until the end, the peak rose 513 MiB; made
    columnar every 10k rows, 244 MiB (the table, the ids seen and one batch; 2026-12-07, this machine)."""
    with open(tmp_path / "train.json", "w") as f:
        for i in range(200_000):
            f.write(
                json.dumps(
                    {
                        "id": f"q{i}",
                        "question": f"Question {i}: which drug treats condition {i % 977}?",
                        **{f"op{x}": f"drug {x}{i}" for x in "abcd"},
                        "cop": 1 + i % 4,
                        "exp": f"Because drug a{i} is the first-line treatment.",
                        "subject_name": "Pharmacology",
                    }
                )
                + "\n"
            )
    growth, out = _peak_mib_in_subprocess(
        f"""
        df, result = read_text_qa("medmcqa", SourceDir({str(tmp_path)!r}))
        print("ROWS", df.height, len(result.rejected), len(result.rows))
        """
    )
    assert "ROWS 200000 0 0" in out, out
    print(f"200k rows: peak RSS grew {growth:.0f} MiB")
    assert growth < 330, f"peak memory grew by {growth:.0f} MiB for 200k rows"


def test_a_parquet_row_group_too_large_to_decode_is_refused_before_decoding(tmp_path):
    corpus = tmp_path / "textbooks"
    corpus.mkdir()
    pl.DataFrame({"id": ["1"], "title": ["t"], "content": ["z" * (3 * MIB)]}).write_parquet(
        corpus / "part.parquet", compression="zstd"
    )
    src = SourceDir(str(corpus), max_document_bytes=2 * MIB)
    with pytest.raises(
        SourceError, match=r"part.parquet: row group 0 declares [\d,]+ bytes .* smaller row groups"
    ):
        list(src.iter_parquet("part.parquet"))
