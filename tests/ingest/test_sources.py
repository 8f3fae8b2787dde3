"""SourceDir: paths confined to the root and literal, reads bounded, bad lines and rows reported per row."""

import gzip
import json
import os
import tracemalloc

import pytest

from storage.sources import (
    DEFAULT_MAX_FILE_BYTES,
    FileTooLarge,
    SourceDir,
    SourceError,
    UnsafePath,
    normalize_relpath,
)

HOSTILE_NAMES = [
    "../secret.txt",
    "../../x/secret.jpg",
    "imgs/../../secret.txt",
    "imgs/./../../secret.txt",
    "/etc/passwd",
    "~/secret.txt",
    "~root/secret.txt",
    "~",
    "..\\secret.txt",
    "imgs\\..\\..\\secret.txt",
    "C:secret.txt",
    "s3://other-bucket/secret.txt",
    "file:///etc/passwd",
    "a\x00b.txt",
    "a\nb.txt",
    "..",
]


@pytest.fixture
def tree(tmp_path):
    """``root/`` with a file and a folder, and ``secret.txt`` beside the root (outside it)."""
    root = tmp_path / "root"
    (root / "imgs").mkdir(parents=True)
    (root / "imgs" / "a.txt").write_text("inside")
    (root / "top.txt").write_text("top")
    (tmp_path / "secret.txt").write_text("SECRET")
    return root


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_names_are_refused_before_any_read(tree, name):
    src = SourceDir(str(tree))
    for call in (src.path, src.exists, src.read_bytes, src.read_text, lambda r: list(src.iter_jsonl(r))):
        with pytest.raises(UnsafePath, match="unsafe path"):
            call(name)


def test_dotdot_inside_the_root_is_normalized(tree):
    src = SourceDir(str(tree))
    (tree / "~$draft.csv").write_text("lock")  # a name starting with ~ is just a name, not a home folder
    assert src.read_text("~$draft.csv") == "lock" and src.glob("*.csv") == ["~$draft.csv"]
    assert normalize_relpath("imgs/../top.txt") == "top.txt"
    assert src.read_text("imgs/../imgs/./a.txt") == "inside"
    assert src.path("imgs//a.txt") == f"{tree}/imgs/a.txt"


def test_symlinks_leaving_the_root_are_refused(tree):
    (tree / "link.txt").symlink_to(tree.parent / "secret.txt")
    (tree / "outside").symlink_to(tree.parent, target_is_directory=True)
    (tree / "inside.txt").symlink_to(tree / "imgs" / "a.txt")
    src = SourceDir(str(tree))
    for name in ("link.txt", "outside/secret.txt"):
        with pytest.raises(UnsafePath, match="symbolic link leads outside"):
            src.read_bytes(name)
        with pytest.raises(UnsafePath):
            src.exists(name)
    with pytest.raises(UnsafePath):
        src.list_files("outside")
    assert src.read_text("inside.txt") == "inside"  # a link that stays inside is fine


def test_a_root_reached_through_a_symlink_still_works(tree, tmp_path):
    (tmp_path / "alias").symlink_to(tree, target_is_directory=True)
    src = SourceDir(str(tmp_path / "alias"))
    assert src.read_text("imgs/a.txt") == "inside" and src.glob("**/*.txt") == ["imgs/a.txt", "top.txt"]


def test_names_are_literal_in_a_folder_with_brackets(tmp_path):
    root = tmp_path / "Echo [2024] export"
    (root / "study [1]").mkdir(parents=True)
    (root / "study [1]" / "IM_0001.dcm").write_bytes(b"x")
    (root / "study [1]" / "IM_0002").write_bytes(b"y")
    (root / "a.dcm").write_bytes(b"z")
    src = SourceDir(str(root))
    assert src.exists("study [1]/IM_0001.dcm") and src.read_bytes("study [1]/IM_0002") == b"y"
    assert src.glob("**/*.dcm") == ["a.dcm", "study [1]/IM_0001.dcm"]
    assert src.glob("*.dcm") == ["a.dcm"]
    assert src.list_files() == ["a.dcm", "study [1]/IM_0001.dcm", "study [1]/IM_0002"]
    assert src.list_files("study [1]") == ["study [1]/IM_0001.dcm", "study [1]/IM_0002"]


def test_glob_returns_files_only_and_keeps_glob_semantics(tree):
    (tree / "data" / "sub").mkdir(parents=True)
    for rel in ("data/train-0.parquet", "data/sub/x.parquet", "data/README.md", "x.jsonl"):
        (tree / rel).write_text("")
    src = SourceDir(str(tree))
    assert src.glob("data/*.parquet") == ["data/train-0.parquet"]
    assert src.glob("**/*.parquet") == ["data/sub/x.parquet", "data/train-0.parquet"]
    assert src.glob("*") == ["top.txt", "x.jsonl"]
    assert src.glob("nothing/*.json") == []
    with pytest.raises(UnsafePath):
        src.glob("../*.txt")


def test_relative_and_file_url_roots_are_literal_and_absolute(tree, monkeypatch):
    monkeypatch.chdir(tree.parent)
    assert SourceDir("root").root == str(tree)
    assert SourceDir(f"file://{tree}").read_text("top.txt") == "top"
    assert SourceDir("~/data").root == os.path.join(str(tree.parent), "~/data")  # no home expansion
    with pytest.raises(ValueError, match="unsupported source root"):
        SourceDir("http://example.org/data")


# ---- bounded reads -----------------------------------------------------------------------------------
def _gzip_bomb(path, decompressed_mib: int, members: int = 1) -> None:
    """A gzip file of ``decompressed_mib`` MiB of zeros per member (about 1 KB compressed per MiB)."""
    member = gzip.compress(b"\0" * (decompressed_mib << 20), compresslevel=9)
    path.write_bytes(member * members)


def test_gzip_bomb_is_refused_at_the_cap(tmp_path):
    _gzip_bomb(tmp_path / "corpus.jsonl.gz", 64)
    assert (tmp_path / "corpus.jsonl.gz").stat().st_size < 100_000
    src = SourceDir(str(tmp_path), max_file_bytes=1 << 20)
    for call in (
        lambda: list(src.iter_jsonl("corpus.jsonl.gz")),
        lambda: src.read_text("corpus.jsonl.gz"),
        lambda: src.load_json("corpus.jsonl.gz"),
    ):
        with pytest.raises(FileTooLarge) as e:
            call()
        assert "corpus.jsonl.gz" in str(
            e.value
        ) and "decompresses to more than the cap of 1,048,576 bytes" in str(e.value)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_gzip_bomb_of_gigabytes_is_refused_with_the_default_cap(tmp_path):
    """5 GiB of zeros in about 5 MB: the default cap (4 GiB) stops it while streaming, without holding it."""
    _gzip_bomb(tmp_path / "medrag.jsonl.gz", 64, members=80)
    assert DEFAULT_MAX_FILE_BYTES < 80 * (64 << 20)
    with pytest.raises(
        FileTooLarge, match=r"medrag.jsonl.gz: decompresses to more than the cap of 4,294,967,296"
    ):
        for _ in SourceDir(str(tmp_path)).iter_jsonl("medrag.jsonl.gz"):
            pass


def test_corrupt_gzip_is_a_source_error(tmp_path):
    good = gzip.compress(b'{"id": 1}\n' * 1000)
    (tmp_path / "cut.jsonl.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(SourceError, match="cut.jsonl.gz: corrupt gzip stream"):
        list(SourceDir(str(tmp_path)).iter_jsonl("cut.jsonl.gz"))


def test_read_bytes_cap_is_checked_before_reading(tmp_path):
    (tmp_path / "big.bin").write_bytes(b"x" * 5000)
    src = SourceDir(str(tmp_path))
    with pytest.raises(FileTooLarge, match="big.bin: is larger than the cap of 4,999 bytes"):
        src.read_bytes("big.bin", max_bytes=4999)
    assert len(src.read_bytes("big.bin", max_bytes=5000)) == 5000


def test_iter_jsonl_streams_a_gz_file(tmp_path):
    """40 lines of 1 MiB, compressed: the peak of Python allocations stays far below the file's size."""
    line = json.dumps({"id": 0, "text": "a" * (1 << 20)}) + "\n"
    (tmp_path / "big.jsonl.gz").write_bytes(gzip.compress(line.encode() * 40, compresslevel=1))
    src = SourceDir(str(tmp_path))
    tracemalloc.start()
    try:
        count = sum(1 for _, rec, err in src.iter_jsonl("big.jsonl.gz") if rec and not err)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 40
    assert peak < 10 * (1 << 20), f"peak {peak / 2**20:.1f} MiB for a 40 MiB file"


def test_malformed_jsonl_lines_are_row_problems(tmp_path):
    lines = [
        b'{"id": 1}',
        b"[1, 2]",
        b'"just a string"',
        b"42",
        b"null",
        b"true",
        b"{not json",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"n": ' + b"9" * 5000 + b"}",
        b'{"bad": "\xff\xfe"}',
        b"",
        b"   ",
        b'{"long": "' + b"x" * 300_000 + b'"}',
        b'{"id": 2}',
    ]
    (tmp_path / "x.jsonl").write_bytes(b"\xef\xbb\xbf" + b"\n".join(lines) + b"\n")
    out = list(SourceDir(str(tmp_path), max_line_bytes=250_000).iter_jsonl("x.jsonl"))
    good = [(n, rec) for n, rec, err in out if not err]
    bad = {n: err for n, _, err in out if err}
    assert good == [(1, {"id": 1}), (14, {"id": 2})]
    assert bad[2] == "not a JSON object: an array" and bad[3] == "not a JSON object: a string"
    assert bad[4] == "not a JSON object: a number" and bad[5] == "not a JSON object: null"
    assert bad[6] == "not a JSON object: a boolean" and bad[7].startswith("malformed JSON line")
    assert bad[8] == "malformed JSON line: nested too deeply to parse"
    assert bad[9].startswith("malformed JSON line") and bad[10].startswith("not UTF-8 text")
    assert bad[13] == "line longer than 250,000 bytes" and set(bad) == {2, 3, 4, 5, 6, 7, 8, 9, 10, 13}


def test_load_json_too_deep_is_a_source_error(tmp_path):
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(SourceError, match="deep.json: JSON nested too deeply"):
        SourceDir(str(tmp_path)).load_json("deep.json")


def test_iter_csv_ragged_rows_headerless_and_repeated_header(tmp_path):
    (tmp_path / "a.csv").write_text('id,q\n1,"multi\nline"\n2,x,extra\n\n3,y\n')
    src = SourceDir(str(tmp_path))
    assert list(src.iter_csv("a.csv")) == [
        (2, {"id": "1", "q": "multi\nline"}, None),
        (4, ["2", "x", "extra"], "expected 2 fields, found 3"),
        (6, {"id": "3", "q": "y"}, None),
    ]
    with pytest.raises(SourceError, match="a.csv: line 4: expected 2 fields"):
        src.read_csv("a.csv")
    assert [r for _, r, _ in src.iter_csv("a.csv", columns=["c1", "c2"])][0] == {"c1": "id", "c2": "q"}
    (tmp_path / "b.csv").write_text("q,q\n1,2\n")
    with pytest.raises(SourceError, match=r"column names repeated in the header: \['q'\]"):
        list(src.iter_csv("b.csv"))


@pytest.mark.s3
def test_s3_source_is_confined_and_literal(s3_env):
    import s3fs

    from storage.root import S3Settings

    s3 = S3Settings.from_env()
    fs = s3fs.S3FileSystem(**s3.s3fs_kwargs())
    bucket = s3_env.removeprefix("s3://").split("/")[0]
    fs.pipe(
        {
            f"{bucket}/raw/Echo [2024] export/a.dcm": b"a",
            f"{bucket}/raw/Echo [2024] export/s/b.dcm": b"b",
            f"{bucket}/raw/secret.txt": b"SECRET",
            f"{bucket}/raw/Echo [2024] export/c.jsonl.gz": gzip.compress(b"\0" * (2 << 20)),
        }
    )
    src = SourceDir(f"s3://{bucket}/raw/Echo [2024] export", s3=s3, max_file_bytes=1 << 20)
    assert src.read_bytes("s/b.dcm") == b"b" and src.exists("a.dcm")
    assert src.glob("**/*.dcm") == ["a.dcm", "s/b.dcm"]
    for name in ("../secret.txt", "s/../../secret.txt", f"s3://{bucket}/raw/secret.txt", "/raw/secret.txt"):
        with pytest.raises(UnsafePath):
            src.read_bytes(name)
    with pytest.raises(FileTooLarge, match="c.jsonl.gz: decompresses to more than the cap"):
        list(src.iter_jsonl("c.jsonl.gz"))
