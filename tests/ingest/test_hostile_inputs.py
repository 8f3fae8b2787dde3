"""Readers on hostile inputs: paths that escape, images that explode, JSON lines that are not records.

Every case is a row in quarantine with a reason (never a crash, never a file read from outside the source).
"""

import gzip
import hashlib
import json
import shutil
import struct
import subprocess
import sys
import zlib

import polars as pl
import pytest
from PIL import Image

from assets.common.images import DEFAULT_MAX_IMAGE_PIXELS, ImageIngestor, ImageProblem, check_image
from assets.ingest.text_qa import read_text_qa
from assets.ingest.vqa import read_vqa
from assets.knowledge.sources import read_kb_source
from retrieval.chunking import TokenChunker
from retrieval.embedders import TextEmbedder
from storage.sources import SourceDir, SourceError

from .layouts import image_bytes, write_medxpertqa, write_mmmu, write_omnimedvqa, write_path_vqa_parquet


def _png(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of ``width`` x ``height`` black pixels (small on disk, huge decoded)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = (b"\0" + b"\0" * ((width + 7) // 8)) * height
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def _slake(sample_data, tmp_path, edit):
    """A copy of the SLAKE sample whose first three English training rows are changed by ``edit``."""
    root = tmp_path / "data" / "slake"
    shutil.copytree(sample_data / "slake", root, ignore=shutil.ignore_patterns("KG_mvqa-kg"))
    rows = json.loads((root / "train.json").read_text())
    en = [r for r in rows if r["q_lang"] == "en"]
    edit(root, en)
    (root / "train.json").write_text(json.dumps(rows))
    return root, en


def _reasons(result, qids):
    by_row = {r.row: r.reason for r in result.rejected}
    return [by_row.get(str(q)) for q in qids]


def test_image_paths_that_leave_the_source_are_quarantined_and_never_read(tmp_path, sample_data, storage):
    """Seen: a SLAKE img_name of ../../x/secret.jpg published a file from outside the dataset."""
    secret = image_bytes(999)
    (tmp_path / "data" / "x").mkdir(parents=True)
    (tmp_path / "data" / "x" / "secret.jpg").write_bytes(secret)

    def edit(root, en):
        en[0]["img_name"] = "../../x/secret.jpg"
        en[1]["img_name"] = str(tmp_path / "data" / "x" / "secret.jpg")  # absolute
        (root / "imgs" / "leak").symlink_to(tmp_path / "data" / "x", target_is_directory=True)
        en[2]["img_name"] = "leak/secret.jpg"
        en[3]["img_name"] = ""  # the imgs/ folder itself
        en[4]["img_name"] = "~/secret.jpg"

    root, en = _slake(sample_data, tmp_path, edit)
    rows = json.loads((root / "train.json").read_text())
    images = ImageIngestor(storage)
    df, result = read_vqa("slake", SourceDir(str(root)), images)
    positions = [next(i for i, r in enumerate(rows) if r["qid"] == e["qid"]) for e in en[:5]]
    reasons = _reasons(result, positions)
    assert (
        reasons[0] == "unsafe image path: 'imgs/../../x/secret.jpg' (leaves the source folder (..)); not read"
    )
    # SLAKE names are joined under imgs/: an absolute name or ~ becomes a literal name inside, not found there
    assert (
        reasons[1].startswith(f"missing image file: {root}/imgs/")
        and reasons[4] == f"missing image file: {root}/imgs/~/secret.jpg"
    )
    assert reasons[2].startswith("unsafe image path: 'imgs/leak/secret.jpg' (a symbolic link leads outside")
    assert reasons[3].startswith("unreadable image file: 'imgs/'")
    assert hashlib.sha256(secret).hexdigest() not in {i.split(".")[0] for i in images.stored_ids}
    assert not set(df["item_id"]) & {f"slake:{e['qid']}" for e in en[:5]}
    assert df.height > 0


def test_absolute_and_climbing_image_names_are_quarantined(tmp_path, storage):
    root = write_omnimedvqa(tmp_path / "omni")
    (tmp_path / "secret.png").write_bytes(image_bytes(5, "PNG"))
    qa = root / "QA_information" / "Open-access" / "Chest CT Scan.json"
    recs = json.loads(qa.read_text())
    recs[0]["image_path"] = str(tmp_path / "secret.png")
    recs[1]["image_path"] = "./../secret.png"
    qa.write_text(json.dumps(recs))
    df, result = read_vqa("omnimedvqa", SourceDir(str(root)), ImageIngestor(storage))
    assert [r.reason for r in result.rejected if r.row in ("0", "1")] == [
        f"unsafe image path: {str(tmp_path / 'secret.png')!r} (absolute path); not read",
        "unsafe image path: '../secret.png' (leaves the source folder (..)); not read",
    ]

    root = tmp_path / "vqa_rad"
    (root / "VQA_RAD Image Folder").mkdir(parents=True)
    (root / "VQA_RAD Image Folder" / "ok.jpg").write_bytes(image_bytes(1))
    (tmp_path / "secret.jpg").write_bytes(image_bytes(2))
    recs = [
        {
            "qid": 1,
            "image_name": "ok.jpg",
            "question": "Is this normal?",
            "answer": "yes",
            "answer_type": "CLOSED",
            "phrase_type": "freeform",
        },
        {
            "qid": 2,
            "image_name": "../../secret.jpg",
            "question": "Is this normal?",
            "answer": "no",
            "answer_type": "CLOSED",
            "phrase_type": "freeform",
        },
    ]
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(recs))
    df, result = read_vqa("vqa_rad", SourceDir(str(root)), ImageIngestor(storage))
    assert df["item_id"].to_list() == ["vqa_rad:1"]
    assert result.rejected[0].reason.startswith("unsafe image path: 'VQA_RAD Image Folder/../../secret.jpg'")


def test_a_huge_image_is_refused_from_its_header(tmp_path, sample_data, storage):
    """Seen: a small PNG of 20000 x 20000 pixels passed (Pillow's global limit was raised to 400 M)."""
    bomb = _png(20000, 20000)
    assert len(bomb) < 400_000

    def edit(root, en):
        (root / "imgs" / "bomb").mkdir()
        (root / "imgs" / "bomb" / "source.png").write_bytes(bomb)
        en[0]["img_name"] = "bomb/source.png"

    root, en = _slake(sample_data, tmp_path, edit)
    df, result = read_vqa("slake", SourceDir(str(root)), ImageIngestor(storage))
    [reason] = [r.reason for r in result.rejected if "bomb" in r.reason]
    assert reason.startswith(
        f"image too large: {root}/imgs/bomb/source.png is 400,000,000 pixels, "
        f"over the limit of {DEFAULT_MAX_IMAGE_PIXELS:,} pixels"
    )
    assert f"slake:{en[0]['qid']}" not in set(df["item_id"])


def test_pixel_and_file_size_limits_are_per_call():
    png = _png(3000, 2000)
    assert check_image(png, "x.png") == "png"
    with pytest.raises(
        ImageProblem,
        match=r"image too large: x.png is 3000x2000 = 6,000,000 pixels, over the limit "
        r"of 5,999,999 pixels",
    ):
        check_image(png, "x.png", max_pixels=5_999_999)
    with pytest.raises(
        ImageProblem, match=rf"image file too large: x.png is {len(png):,} bytes, over the limit of 100 bytes"
    ):
        check_image(png, "x.png", max_bytes=100)
    with pytest.raises(
        ImageProblem,
        match=r"image too large: x.png is 400,000,000 pixels, over the limit of "
        r"1,000,000,000 pixels \(refused by Pillow's decompression-bomb guard\)",
    ):
        check_image(_png(20000, 20000), "x.png", max_pixels=10**9)  # Pillow's own hard limit still applies
    with (
        pytest.warns(Image.DecompressionBombWarning),
        pytest.raises(
            ImageProblem, match=r"image too large: x.png is 10000x10000 = 100,000,000 pixels, over"
        ),
    ):
        check_image(_png(10000, 10000), "x.png")  # between Pillow's warning and its hard limit: ours decides


def test_image_file_size_cap_in_the_ingestor(tmp_path, storage):
    (tmp_path / "big.jpg").write_bytes(image_bytes(3, size=(400, 400)))
    images = ImageIngestor(storage, max_bytes=1000)
    with pytest.raises(
        ImageProblem, match=r"image file too large: .*big.jpg is over the limit of 1,000 bytes"
    ):
        images.from_source(SourceDir(str(tmp_path)), "big.jpg")
    assert not images.stored_ids


def test_pillow_global_limit_is_left_at_its_default():
    code = (
        "import PIL.Image as I; before = I.MAX_IMAGE_PIXELS; import assets.common.images, assets.ingest.vqa; "
        "print(before, I.MAX_IMAGE_PIXELS)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0] == out[1] == str(Image.MAX_IMAGE_PIXELS)


BAD_LINES = ["[1, 2]", '"a string"', "7", "null", "{not json", "[" * 50_000 + "]" * 50_000]


def _with_bad_lines(path, good: list[str]) -> None:
    path.write_text("\n".join([good[0], *BAD_LINES, *good[1:]]) + "\n")


def test_every_jsonl_reader_quarantines_malformed_lines(tmp_path, sample_data, storage):
    """Seen: a non-object JSONL line crashed the KB reader."""
    medqa = tmp_path / "medqa"
    medqa.mkdir()
    _with_bad_lines(
        medqa / "x_test.jsonl",
        (sample_data / "medqa_us" / "phrases_no_exclude_test.jsonl").read_text().splitlines()[:2],
    )
    medmcqa = tmp_path / "medmcqa"
    medmcqa.mkdir()
    mcq_lines = (sample_data / "medmcqa" / "dev.json").read_text().splitlines()[:2]
    _with_bad_lines(medmcqa / "dev.json", mcq_lines)
    mx = write_medxpertqa(tmp_path / "medxpertqa")
    _with_bad_lines(mx / "MM" / "test.jsonl", (mx / "MM" / "test.jsonl").read_text().splitlines())
    medrag = tmp_path / "textbooks"
    medrag.mkdir()
    (medrag / "chunks.jsonl.gz").write_bytes(
        gzip.compress(
            (
                "\n".join(['{"id": "a", "title": "T", "content": "Some real content here."}', *BAD_LINES])
                + "\n"
            ).encode()
        )
    )
    quad = tmp_path / "medquad"
    quad.mkdir()
    _with_bad_lines(
        quad / "medquad_qa.jsonl",
        [json.dumps({"id": "1", "question": "What is X?", "answer": "X is a disease of the lung."})],
    )

    n_bad = len(BAD_LINES)
    chunker = TokenChunker.for_embedder(TextEmbedder())
    results = {
        "medqa": read_text_qa("medqa", SourceDir(str(medqa))),
        "medmcqa": read_text_qa("medmcqa", SourceDir(str(medmcqa))),
        "medxpertqa_mm": read_vqa("medxpertqa_mm", SourceDir(str(mx)), ImageIngestor(storage)),
        "medmcqa_exp": read_kb_source("medmcqa_exp", SourceDir(str(medmcqa)), chunker),
        "textbooks": read_kb_source("textbooks", SourceDir(str(medrag)), chunker),
        "medquad": read_kb_source("medquad", SourceDir(str(quad)), chunker),
    }
    for name, (frame, result) in results.items():
        reasons = [
            r.reason for r in result.rejected if r.reason.startswith(("not a JSON object", "malformed JSON"))
        ]
        assert len(reasons) == n_bad, (name, [r.reason for r in result.rejected])
        assert frame.height, name


def test_parquet_declaring_more_data_than_the_cap_is_refused_before_decoding(tmp_path, storage):
    root = write_path_vqa_parquet(tmp_path / "pvqa")
    pl.DataFrame(
        {"image": [{"bytes": image_bytes(1), "path": None}], "question": ["x" * (1 << 20)], "answer": ["yes"]}
    ).write_parquet(root / "data" / "train-00000-of-00001.parquet", compression="zstd")
    assert (root / "data" / "train-00000-of-00001.parquet").stat().st_size < 50_000
    with pytest.raises(
        SourceError,
        match=r"train-00000-of-00001.parquet: declares [\d,]+ bytes of uncompressed "
        r"data, over the cap of 500,000 bytes",
    ):
        read_vqa("path_vqa", SourceDir(str(root), max_file_bytes=500_000), ImageIngestor(storage))


def test_mmmu_options_that_nest_too_deeply_are_a_row_problem(tmp_path, storage):
    root = write_mmmu(tmp_path / "mmmu")
    [path] = list(root.glob("*/validation-*.parquet"))
    df = pl.read_parquet(path)
    df = df.with_columns(
        pl.when(pl.int_range(pl.len()) == 0)
        .then(pl.lit("[" * 100_000 + "]" * 100_000))
        .otherwise(pl.col("options"))
        .alias("options")
    )
    df.write_parquet(path)
    out, result = read_vqa("mmmu_hm", SourceDir(str(root)), ImageIngestor(storage))
    assert [r.reason[:40] for r in result.rejected] == ["options is not a list literal: '[[[[[[[["]
    assert len(result.rejected[0].reason) < 300 and out.height == df.height - 1
