"""The generic MCQ reader: ``mcq_mapping.yaml`` validated as a whole before any row, answers never shifted."""

import gzip
import json
import time

import polars as pl
import pytest
import yaml

from assets.common.records import SourceError
from assets.ingest.mcq_mapping import answer_letter, load_mapping
from assets.ingest.readers.common import RowProblem, split_from_name
from assets.ingest.readers.text_qa_row import TEXT_QA_SCHEMA
from assets.ingest.text_qa import read_text_qa
from quality.contracts import check_text_qa_items
from storage.sources import SourceDir

ITEMS = [  # stem, options a..d, letter answer, split
    (
        "Which vitamin deficiency causes scurvy?",
        "Vitamin C",
        "Vitamin D",
        "Vitamin K",
        "Vitamin A",
        "A",
        "train",
    ),
    ("Most common site of ectopic pregnancy?", "Ovary", "Ampulla", "Cervix", "Isthmus", "B", "train"),
    (
        "Drug of choice for absence seizures?",
        "Phenytoin",
        "Carbamazepine",
        "Ethosuximide",
        "Lamotrigine",
        "C",
        "test",
    ),
    ("Antidote for heparin overdose?", "Vitamin K", "Naloxone", "Flumazenil", "Protamine", "D", "test"),
]
BASE = {
    "files": ["items.csv"],
    "license": "CC-BY-4.0",
    "question": "stem",
    "options": ["a", "b", "c", "d"],
    "answer": "key",
    "split": "part",
}


def _folder(tmp_path, mapping=None, csv_text=None, name="items.csv", **changes):
    root = tmp_path / "mcq"
    root.mkdir(exist_ok=True)
    if csv_text is None:
        csv_text = "stem,a,b,c,d,key,part\n" + "".join(",".join(item) + "\n" for item in ITEMS)
    (root / name).write_text(csv_text)
    m = dict(BASE if mapping is None else mapping, **changes)
    (root / "mcq_mapping.yaml").write_text(yaml.safe_dump({k: v for k, v in m.items() if v is not None}))
    return root


def _read(root):
    df, result = read_text_qa("mcq_custom", SourceDir(str(root)))
    assert df.schema == pl.Schema(TEXT_QA_SCHEMA)
    if df.height:
        res = check_text_qa_items(df)
        assert res.success, res.summary()
    return df, result


def _refused(root, *fragments):
    with pytest.raises(SourceError) as e:
        _read(root)
    msg = str(e.value)
    assert "mcq_mapping.yaml: invalid MCQ mapping: " in msg
    for fragment in fragments:
        assert fragment in msg, msg
    return msg


def test_a_well_formed_folder_reads_every_row_with_the_right_answer(tmp_path):
    df, result = _read(_folder(tmp_path))
    assert not result.rejected and df.height == 4
    by_q = {r["question"]: r for r in df.iter_rows(named=True)}
    for stem, *opts, key, part in ITEMS:
        row = by_q[stem]
        assert (
            row["answer"] == opts["ABCD".index(key)]
            and row["split"] == part
            and row["license"] == "CC-BY-4.0"
        )


def test_an_option_column_missing_from_the_file_refuses_the_mapping(tmp_path):
    """Seen: the missing column was dropped and every later option moved up a letter (wrong answers)."""
    text = "stem,a,c,d,key,part\n" + "".join(f"{s},{a},{c},{d},{k},{p}\n" for s, a, b, c, d, k, p in ITEMS)
    _refused(
        _folder(tmp_path, csv_text=text),
        "items.csv: declared column(s) absent from the file's header: 'b' (options)",
    )


def test_an_empty_option_before_a_filled_one_quarantines_the_row_and_trailing_empties_are_fine(tmp_path):
    text = (
        "stem,a,b,c,d,e,key,part\n"
        "Four options in a five-column file?,w,x,y,z,,D,train\n"
        "Gap in the middle?,w,,y,z,,C,train\n"
    )
    df, result = _read(_folder(tmp_path, csv_text=text, options=["a", "b", "c", "d", "e"]))
    assert df.height == 1 and df.row(0, named=True)["options"] == ["w", "x", "y", "z"]
    assert df.row(0, named=True)["answer"] == "z"
    [rej] = result.rejected
    assert rej.row == "line 3" and rej.reason.startswith("empty option column 'b' before a filled one")


def test_unknown_keys_a_misspelled_answer_format_and_a_missing_licence_are_reported_together(tmp_path):
    m = dict(BASE, answer_fromat="index1", license=None, answer_format="leter")
    _refused(
        _folder(tmp_path, mapping=m),
        "unknown key 'answer_fromat' (did you mean 'answer_format'?)",
        "missing required key 'license'",
        "answer_format 'leter' is not one of letter, index0, index1, text (did you mean 'letter'?)",
    )


def test_a_split_column_with_values_outside_the_known_splits_refuses_the_mapping(tmp_path):
    """Seen: a constant split 'holdout' quarantined 100 % of rows while the run passed."""
    text = "stem,a,b,c,d,key,part\n" + "".join(",".join([*item[:6], "holdout"]) + "\n" for item in ITEMS)
    root = _folder(tmp_path, csv_text=text)
    _refused(
        root,
        "items.csv: split column 'part' holds values that are not splits: 'holdout' (4 rows)",
        "split_values",
    )
    _folder(tmp_path, csv_text=text, split_values={"holdout": "test"})
    df, _ = _read(root)
    assert set(df["split"]) == {"test"} and df.height == 4


def test_split_comes_from_the_file_name_else_default_split_else_the_mapping_is_refused(tmp_path):
    text = "stem,a,b,c,d,key\n" + "".join(",".join(item[:6]) + "\n" for item in ITEMS)
    root = _folder(
        tmp_path, csv_text=text, name="board_review_test.csv", files=["board_review_test.csv"], split=None
    )
    df, _ = _read(root)
    assert set(df["split"]) == {"test"}  # seen: a file named *test* defaulted to train
    _folder(tmp_path, csv_text=text, files=["items.csv"], split=None)
    _refused(root, "cannot tell the split of items.csv", "default_split")
    _folder(tmp_path, csv_text=text, files=["items.csv"], split=None, default_split="dev")
    df, _ = _read(root)
    assert set(df["split"]) == {"validation"}
    _folder(tmp_path, csv_text=text, files=["items.csv"], split=None, default_split="holdout")
    _refused(root, "default_split 'holdout' is not one of train, validation, test")


def test_headerless_csv_with_columns(tmp_path):
    body = "".join(",".join(item) + "\n" for item in ITEMS)
    root = _folder(tmp_path, csv_text=body, columns=["stem", "a", "b", "c", "d", "key", "part"])
    df, result = _read(root)
    assert df.height == 4 and not result.rejected  # the first row is an item, not a header
    _folder(
        tmp_path,
        csv_text="stem,a,b,c,d,key,part\n" + body,
        columns=["stem", "a", "b", "c", "d", "key", "part"],
    )
    _refused(root, "items.csv starts with a header row although columns: is declared")
    _folder(tmp_path, csv_text=body)
    _refused(
        root, "declared column(s) absent from the file's header"
    )  # no columns: the first item is the header


def test_distinct_items_sharing_a_stem_keep_distinct_default_ids(tmp_path):
    stem = "Which of the following is true of this drug?"
    text = (
        "stem,a,b,c,d,key,part\n"
        f"{stem},Causes ototoxicity,Is safe in pregnancy,Is an antifungal,Lowers INR,A,train\n"
        f"{stem},Is a beta blocker,Causes gingival hyperplasia,Is an antibiotic,Raises INR,B,train\n"
    )
    df, result = _read(_folder(tmp_path, csv_text=text))
    assert df.height == 2 and not result.rejected and df["item_id"].n_unique() == 2
    again, _ = _read(tmp_path / "mcq")
    assert again["item_id"].to_list() == df["item_id"].to_list()  # stable across runs


def test_the_same_item_twice_is_a_quarantined_duplicate(tmp_path):
    text = "stem,a,b,c,d,key,part\n" + ",".join(ITEMS[0]) + "\n" + ",".join(ITEMS[0]) + "\n"
    df, result = _read(_folder(tmp_path, csv_text=text))
    assert df.height == 1 and [r.reason.split(":")[0] for r in result.rejected] == ["duplicate item id"]


def test_jsonl_declared_columns_absent_from_every_record_refuse_the_mapping(tmp_path):
    root = tmp_path / "mcq"
    root.mkdir()
    recs = [
        {"q": s, "choices": {"A": a, "B": b, "C": c, "D": d}, "ans": k, "split": p}
        for s, a, b, c, d, k, p in ITEMS
    ]
    (root / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    m = {
        "files": ["items.jsonl"],
        "license": "MIT",
        "question": "q",
        "options": "choices",
        "answer": "ans",
        "split": "split",
        "explanation": "rationale",
    }
    _folder(tmp_path, mapping=m, csv_text="", name="unused.csv")
    _refused(
        root, "items.jsonl: declared column(s) absent from the file's records: 'rationale' (explanation)"
    )
    _folder(tmp_path, mapping=m, csv_text="", name="unused.csv", explanation=None)
    df, result = _read(root)
    assert df.height == 4 and not result.rejected


def test_jsonl_gz_tsv_and_answer_formats(tmp_path):
    root = tmp_path / "mcq"
    root.mkdir()
    recs = [{"q": s, "choices": [a, b, c, d], "ans": "ABCD".index(k) + 1} for s, a, b, c, d, k, _ in ITEMS]
    recs.append({"q": "Object options with a gap?", "choices": {"A": "x", "C": "z"}, "ans": 1})
    (root / "train.jsonl.gz").write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in recs).encode()))
    (root / "dev.tsv").write_text("q\to1\to2\tans\nTab separated?\tyes\tno\t2.0\n")
    m = {
        "files": ["train.jsonl.gz", "dev.tsv"],
        "license": "MIT",
        "question": "q",
        "options": "choices",
        "answer": "ans",
        "answer_format": "index1",
    }
    _folder(tmp_path, mapping=m, csv_text="", name="unused.csv")
    _refused(root, "dev.tsv: declared column(s) absent from the file's header: 'choices' (options)")
    (root / "dev.tsv").write_text('q\tchoices\tans\nTab separated?\t["yes", "no"]\t2.0\n')
    df, result = _read(root)
    assert df.height == 5 and {r["split"] for r in df.iter_rows(named=True)} == {"train", "validation"}
    assert df.filter(pl.col("question") == "Tab separated?")["answer"].to_list() == ["no"]
    assert [r.reason for r in result.rejected] == ["option letters are not A.. in order: ['A', 'C']"]


def test_unsafe_missing_or_unknown_files(tmp_path):
    root = _folder(tmp_path, files=["../outside.csv", "items.csv", "items.csv", "notes.txt", "absent.csv"])
    (tmp_path / "outside.csv").write_text((root / "items.csv").read_text())
    _refused(
        root,
        "file '../outside.csv': unsafe path: leaves the source folder",
        "file 'items.csv' is listed twice",
        "file 'notes.txt': unknown type",
        "file 'absent.csv' listed in files is not in the folder",
    )


def test_mapping_type_errors_and_an_alias_bomb_are_reported_quickly(tmp_path):
    _refused(
        _folder(tmp_path, options="", question=["stem"], dataset="../x", split_values={"x": "holdout"}),
        "missing required key 'options'",
        "question must be a non-empty string (got ['stem'])",
        "dataset '../x' must be",
        "split_values maps 'x' to 'holdout'",
    )
    layers = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    layers += [f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)]
    (tmp_path / "mcq" / "mcq_mapping.yaml").write_text("\n".join(layers) + "\nfiles: *i\n")
    start = time.monotonic()
    msg = _refused(tmp_path / "mcq", "unknown key 'a'", "files must be a list of file names")
    assert time.monotonic() - start < 5 and len(msg) < 5000


def test_mapping_that_is_not_a_mapping_or_not_yaml(tmp_path):
    root = _folder(tmp_path)
    (root / "mcq_mapping.yaml").write_text("- just\n- a list\n")
    with pytest.raises(SourceError, match="mcq_mapping.yaml: expected a mapping of keys, found list"):
        _read(root)
    (root / "mcq_mapping.yaml").write_text("files: [a.csv\n")
    with pytest.raises(SourceError, match="mcq_mapping.yaml: invalid YAML"):
        _read(root)


@pytest.mark.parametrize(
    ("answer", "fmt", "letter"),
    [
        ("(b)", "letter", "B"),
        ("c.", "letter", "C"),
        (" A ", "letter", "A"),
        ("0", "index0", "A"),
        (3, "index0", "D"),
        ("4", "index1", "D"),
        ("2.0", "index1", "B"),
        ("Delta", "text", "D"),
    ],
)
def test_answer_letter(answer, fmt, letter):
    assert answer_letter(answer, ["Alpha", "Beta", "Gamma", "Delta"], fmt) == letter


@pytest.mark.parametrize(
    ("answer", "fmt"),
    [
        ("E", "letter"),
        ("AB", "letter"),
        ("4", "index0"),
        ("0", "index1"),
        ("1.5", "index1"),
        ("x", "index0"),
        ("Epsilon", "text"),
    ],
)
def test_answer_letter_outside_the_options(answer, fmt):
    with pytest.raises(RowProblem):
        answer_letter(answer, ["Alpha", "Beta", "Gamma", "Delta"], fmt)


def test_answer_text_matching_two_options_is_ambiguous():
    with pytest.raises(RowProblem, match="answer matches 2 options"):
        answer_letter("Same", ["Same", "Other", "Same"], "text")


@pytest.mark.parametrize(
    ("name", "split"),
    [
        ("phrases_no_exclude_test.jsonl", "test"),
        ("dev.json", "validation"),
        ("US/train.jsonl", "train"),
        ("board-review_VAL.csv", "validation"),
        ("testing.csv", "test"),
        ("latest.csv", None),
        ("contest.csv", None),
        ("constrained.csv", None),
        ("device_questions.csv", None),
        ("train_test.csv", None),
    ],
)
def test_split_from_name_matches_whole_words(name, split):
    assert split_from_name(name) == split


def test_load_mapping_returns_the_validated_mapping(tmp_path):
    m = load_mapping(SourceDir(str(_folder(tmp_path, answer_format="letter", id=None))))
    assert m.files == ("items.csv",) and m.options == ("a", "b", "c", "d") and m.dataset == "mcq_custom"


# ---- mappings that would corrupt silently (green runs, wrong answers) are refused with the evidence ------
def test_one_column_in_two_roles_is_refused(tmp_path):
    """Seen: option D declared as the answer column: every answer became the letter D's text."""
    _refused(
        _folder(tmp_path, options=["a", "b", "c", "key"]),
        "column 'key' is used as answer and option D: give each role its own column",
    )
    _refused(
        _folder(tmp_path, options=["stem", "b", "c", "d"]), "column 'stem' is used as question and option A"
    )


def test_letter_named_option_columns_out_of_letter_order_are_refused(tmp_path):
    """Seen: options [B, A, C, D] accepted, 455 of 1,011 answers wrong."""
    text = "stem,A,B,C,D,key,part\n" + "".join(",".join(item) + "\n" for item in ITEMS)
    msg = _refused(
        _folder(tmp_path, csv_text=text, options=["B", "A", "C", "D"]), "listed as ['B', 'A', 'C', 'D']"
    )
    assert "['A', 'B', 'C', 'D']" in msg
    df, _ = _read(_folder(tmp_path, csv_text=text, options=["A", "B", "C", "D"]))
    assert df.height == 4


def _with_answers(answers: list[str]) -> str:
    return "stem,a,b,c,d,key,part\n" + "".join(
        ",".join([*item[:5], a, item[6]]) + "\n" for item, a in zip(ITEMS, answers, strict=True)
    )


@pytest.mark.parametrize(
    ("answers", "fmt", "evidence"),
    [
        (["0", "1", "2", "3"], "index1", "1 of 4 answers are 0, which index1 (1 is A) cannot mean"),
        (["1", "2", "3", "4"], "index0", "1 of 4 answers equal the number of options and none is 0"),
        (["A", "B", "C", "D"], "index0", "4 of 4 answers are letters (e.g. 'A') under index0"),
        (["1", "2", "3", "4"], "letter", "4 of 4 answers are numbers (e.g. '1') under letter"),
        (["A", "B", "C", "D"], "text", "4 of 4 answers match no option's text (e.g. 'A')"),
    ],
)
def test_answers_that_do_not_fit_the_declared_format_refuse_the_mapping(tmp_path, answers, fmt, evidence):
    """Seen: 0-based answers declared index1 passed under the quarantine limit: all 222 kept answers wrong."""
    msg = _refused(_folder(tmp_path, csv_text=_with_answers(answers), answer_format=fmt), evidence)
    assert f"items.csv: answers do not fit answer_format {fmt!r}" in msg


def test_answers_that_fit_their_format_are_read(tmp_path):
    for answers, fmt in ((["0", "1", "2", "3"], "index0"), (["1", "2", "3", "4"], "index1")):
        df, result = _read(_folder(tmp_path, csv_text=_with_answers(answers), answer_format=fmt))
        assert df.height == 4 and not result.rejected
        assert df.sort("question")["answer_label"].to_list() == ["D", "C", "B", "A"]


def test_a_semicolon_delimited_csv_is_named_as_such(tmp_path):
    """Seen: a ';'-delimited CSV failed with "declared column(s) absent ... 'stem'" and nothing more."""
    text = "stem;a;b;c;d;key;part\n" + "".join(";".join(item) + "\n" for item in ITEMS)
    _refused(_folder(tmp_path, csv_text=text), "this file looks ';'-delimited")


def test_a_refused_csv_name_adds_no_spurious_columns_error(tmp_path):
    """Seen: files: [../x.csv] with columns: also said "columns: applies to CSV/TSV files only"."""
    msg = _refused(
        _folder(tmp_path, files=["../x.csv"], columns=["stem", "a", "b", "c", "d", "key", "part"]),
        "file '../x.csv': unsafe path",
    )
    assert "columns: applies to CSV/TSV files only" not in msg


def test_a_huge_field_is_quarantined_naming_it(tmp_path):
    """Seen: a 50 MB question was published."""
    huge = "x" * 60_000
    text = "stem,a,b,c,d,key,part\n" + "".join(",".join(item) + "\n" for item in ITEMS)
    text += f"{huge},w,x,y,z,A,train\n"
    df, result = _read(_folder(tmp_path, csv_text=text))
    assert df.height == 4 and len(result.rejected) == 1
    assert "question is 60,000 characters, above the limit of 20,000" in result.rejected[0].reason
