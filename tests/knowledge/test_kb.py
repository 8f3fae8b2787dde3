"""KB passages: chunks that fit the embedder, unique native ids, every record accounted for, near
duplicates."""

import gzip
import json

import polars as pl
import pytest

from assets.knowledge.sources import (
    NearDuplicateIndex,
    deduplicate,
    medquad_native_id,
    passage,
    read_kb_source,
    shingles,
)
from retrieval.chunking import TokenChunker, passage_input
from storage.sources import SourceDir


def model_tokens(embedder, title, texts) -> list[int]:
    """Tokens the encoder would read for each passage, measured with the model's own tokenizer call."""
    inputs = [passage_input(t, x) for t, x in zip(title, texts, strict=True)]
    return [
        len(ids) for ids in embedder.tokenizer(inputs, add_special_tokens=True, truncation=False)["input_ids"]
    ]


def test_chunker_keeps_word_target_where_it_fits_and_token_limit_always(chunker):
    short = " ".join(f"Sentence {i} is brief." for i in range(120))  # 480 words, ~6 tokens a sentence
    chunks = chunker.chunk(short)
    assert " ".join(chunks).split() == short.split()
    assert all(len(c.split()) <= 200 for c in chunks) and all(len(c.split()) >= 100 for c in chunks)
    assert chunker.chunk("short text.") == ["short text."]
    # dense technical text: the token limit, not 200 words, decides
    dense = " ".join(["Pneumonoultramicroscopicsilicovolcanoconiosis-associated immunohistochemistry."] * 60)
    long_title = "What are the treatments for Chronic Myelomonocytic Leukemia and Juvenile variants"
    chunks = chunker.chunk(dense, long_title)
    assert len(chunks) > 3 and " ".join(chunks).split() == dense.split()
    assert max(chunker.input_tokens(long_title, c) for c in chunks) <= 256
    # one "word" longer than the budget (a pasted URL) is cut, not passed through
    url = "https://example.org/" + "a1b2c3" * 400
    assert max(chunker.input_tokens(None, c) for c in chunker.chunk(url)) <= 256


def test_chunker_follows_the_embedders_limit(embedder):
    small = TokenChunker(embedder.tokenizer, 64)
    text = " ".join(f"Aspirin irreversibly inhibits cyclooxygenase number {i}." for i in range(40))
    chunks = small.chunk(text)
    assert (
        max(small.input_tokens(None, c) for c in chunks)
        <= 64
        < TokenChunker.for_embedder(embedder).max_tokens
    )
    assert small.identity()["max_seq_length"] == 64


@pytest.fixture(scope="module")
def real_medquad(real_data, chunker):
    src = SourceDir(str(real_data / "medquad"))
    return read_kb_source("medquad", src, chunker)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_real_medquad_every_record_accounted_and_chunks_fit(real_medquad, real_data, embedder):
    df, result = real_medquad
    lines = [json.loads(x) for x in gzip.open(real_data / "medquad" / "medquad_qa.jsonl.gz", "rt")]
    # native ids are unique by construction: one native id per source line
    by_native = df.group_by("native_id").agg(pl.col("source_ref").n_unique().alias("refs"))
    assert by_native["refs"].max() == 1
    assert len({medquad_native_id(r) for r in lines}) == len(lines)
    passage_lines = {int(r.rsplit(":", 1)[1]) for r in df["source_ref"]}
    # reader-level rejections name the line; duplicate chunks carry their passage row (with its source_ref)
    quarantined_lines = {
        int(r.raw["source_ref"].rsplit(":", 1)[1])
        if r.item_id and r.item_id.startswith("medquad:") and "#" in r.item_id
        else int(r.row)
        for r in result.rejected
    }
    assert passage_lines | quarantined_lines == set(range(1, len(lines) + 1))
    assert all(r.reason for r in result.rejected)
    # chunks fit the 256 tokens the embedder reads, measured by the model's own tokenizer
    assert max(model_tokens(embedder, df["title"], df["text"])) <= embedder.max_seq_length == 256
    if len(lines) == 16407:  # the full release in ../shared/data
        assert df["native_id"].n_unique() > 15_500  # before: 12,859 (first record per release id)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_real_pubmedqa_abstracts_are_chunked_to_fit(real_data, embedder, chunker):
    df, result = read_kb_source("pubmedqa", SourceDir(str(real_data / "pubmedqa")), chunker)
    data = json.loads((real_data / "pubmedqa" / "ori_pqal.json").read_text())
    assert set(df["native_id"]) | {r.row for r in result.rejected} == set(data)
    assert df["title"].is_null().all()  # the question would leak the benchmark item into the KB
    assert max(model_tokens(embedder, df["title"], df["text"])) <= 256
    assert df.height > len(data)  # long abstracts became several chunks (today: one passage each)
    ids = df.filter(pl.col("native_id") == df["native_id"][0])["id"].to_list()
    assert ids[0].endswith("#0") and ids == sorted(ids)


def test_medquad_repeated_ids_and_non_objects_are_quarantined(tmp_path, chunker):
    base = {"subset": "1_CancerGov_QA", "id": "0000013_2-1", "url": "https://www.cancer.gov/x", "focus": "F"}
    recs = [
        {**base, "question": "What is A ?", "answer": "A is a disease of the blood."},
        {**base, "question": "What is B ?", "answer": "B is a disease of the marrow."},  # same release id
        {**base, "question": "What is A ?", "answer": "A is a disease of the blood."},  # same record again
        {
            **base,
            "question": "What is A ?",
            "answer": "A is something else entirely.",
        },  # same key, new content
        ["not", "an", "object"],
        {**base, "question": "What is C ?", "answer": ""},
    ]
    (tmp_path / "mq").mkdir()
    with gzip.open(tmp_path / "mq" / "medquad_qa.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps(r) for r in recs) + "\n{broken\n")
    df, result = read_kb_source("medquad", SourceDir(str(tmp_path / "mq")), chunker)
    assert df.height == 2 and df["native_id"].n_unique() == 2
    assert all(n.startswith("0000013_2-1-") for n in df["native_id"])
    reasons = {r.row: r.reason for r in result.rejected}
    assert reasons["3"].startswith("exact duplicate") and reasons["4"].startswith(
        "native id repeated with different"
    )
    assert reasons["5"] == "not a JSON object: an array" and reasons["6"].startswith("missing id or empty")
    assert reasons["7"].startswith("malformed JSON")


@pytest.mark.parametrize(
    "source, folder, rel", [("medmcqa_exp", "medmcqa", "dev.json"), ("textbooks", "textbooks", "part.jsonl")]
)
def test_every_jsonl_reader_quarantines_non_object_lines(tmp_path, chunker, source, folder, rel):
    good = {
        "id": "r1",
        "exp": "Aspirin irreversibly inhibits platelet cyclooxygenase for the platelet's life.",
        "content": "Aspirin irreversibly inhibits platelet cyclooxygenase.",
        "title": "Aspirin",
    }
    (tmp_path / folder).mkdir()
    (tmp_path / folder / rel).write_text(
        "\n".join([json.dumps(good), "42", '"text"', "null", "[1, 2]"]) + "\n"
    )
    df, result = read_kb_source(source, SourceDir(str(tmp_path / folder)), chunker)
    assert df.height == 1
    assert sorted(r.reason for r in result.rejected) == [
        "not a JSON object: a number",
        "not a JSON object: a string",
        "not a JSON object: an array",
        "not a JSON object: null",
    ]


def test_ids_stable_across_runs_and_dedupe(sample_data, chunker):
    src = SourceDir(str(sample_data / "medquad"))
    a, ra = read_kb_source("medquad", src, chunker, limit=200)
    b, _ = read_kb_source("medquad", src, chunker, limit=200)
    assert a.equals(b) and a["id"].n_unique() == a.height
    base = "the liver is the largest solid organ in the body and it filters blood from the gut " * 3
    rows = [
        passage("x", "1", 0, None, base, "f:1", "l"),
        passage("x", "2", 0, None, base.upper() + "!", "f:2", "l"),
        passage("x", "3", 0, None, base + " indeed", "f:3", "l"),
        passage(
            "x",
            "4",
            0,
            None,
            "a completely different passage about kidney stones and their treatment "
            "with lithotripsy in adults",
            "f:4",
            "l",
        ),
    ]
    kept, dups = deduplicate(rows)
    assert [r["id"] for r in kept] == ["x:1#0", "x:4#0"]
    assert [d.reason.split(":")[0] for d in dups] == ["exact duplicate", "near duplicate"]


def test_near_duplicates_at_the_stated_threshold():
    """Jaccard 0.8 pairs are kept apart, 0.95 pairs are merged (the old 16x4 bands merged pairs near 0.5)."""
    words = [f"w{i}" for i in range(400)]
    a = " ".join(words)

    def variant(changed_every: int) -> str:
        return " ".join(f"x{i}" if i % changed_every == 0 else w for i, w in enumerate(words))

    j = {
        n: len(set(shingles(a.split())) & set(shingles(variant(n).split())))
        / len(set(shingles(a.split())) | set(shingles(variant(n).split())))
        for n in (100, 40)
    }
    assert j[100] > 0.9 > 0.8 > j[40] > 0.6, j
    rows = [
        passage("x", str(i), 0, None, t, f"f:{i}", "l") for i, t in enumerate([a, variant(100), variant(40)])
    ]
    kept, dups = deduplicate(rows)
    assert [r["id"] for r in kept] == ["x:0#0", "x:2#0"] and dups[0].reason.startswith("near duplicate")
    index = NearDuplicateIndex(0.9)
    assert (index.lsh.b, index.lsh.r) == (
        9,
        14,
    )  # datasketch's bands x rows for threshold 0.9, recall-weighted


def test_medrag_jsonl_and_parquet(tmp_path, chunker):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.jsonl").write_text(
        json.dumps({"id": "d1", "title": "T", "content": "Aspirin inhibits COX."}) + "\n{bad\n"
    )
    pl.DataFrame({"id": ["d2"], "title": ["U"], "content": ["Insulin lowers glucose."]}).write_parquet(
        tmp_path / "c" / "b.parquet"
    )
    df, result = read_kb_source("textbooks", SourceDir(str(tmp_path / "c")), chunker)
    assert sorted(df["id"]) == ["textbooks:d1#0", "textbooks:d2#0"]
    assert len(result.rejected) == 1 and "malformed JSON" in result.rejected[0].reason
