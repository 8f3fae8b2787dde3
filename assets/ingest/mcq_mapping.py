"""The ``mcq_mapping.yaml`` of a generic MCQ source: its keys, their validation as a whole, and the
extraction of one item's fields from a row.

A folder of multiple-choice questions in CSV, TSV or JSON-lines files (each optionally ``.gz``) is read
into ``text_qa_items`` (partition ``mcq_custom``) through a ``mcq_mapping.yaml`` beside the files::

    files: [usmle_style_train.csv, usmle_style_test.csv]
    license: CC-BY-4.0
    question: stem
    options: [opt_a, opt_b, opt_c, opt_d]
    answer: key
    answer_format: letter
    explanation: rationale

Keys (any other key is refused):

================  ========  ==================================================================================
key               required  meaning
================  ========  ==================================================================================
``files``         yes       list of file names inside the folder: ``.csv``, ``.tsv`` or ``.jsonl``, optionally
                            ``.gz``. Names are literal (no patterns) and must stay inside the folder.
``license``       yes       licence of the items (an SPDX id such as ``CC-BY-4.0``, or text); on every row.
``question``      yes       column of the question text.
``options``       yes       either a list of 2-10 columns, one per option in letter order (A, B, ...), or one
                            column holding a JSON list or an ``{"A": ..., "B": ...}`` object. Empty cells at
                            the end of the list are allowed (a 4-option row in a 5-column file); an empty cell
                            before a filled one quarantines the row (it would shift the answer letters).
``answer``        yes       column of the answer.
``answer_format`` no        ``letter`` (default; ``A``, ``(b)``, ``c.``), ``index0`` (0 is A), ``index1`` (1
                            is A) or ``text`` (the answer is the text of one option).
``dataset``       no        value of the ``dataset`` column and prefix of item ids (default ``mcq_custom``);
                            letters, digits, ``_``, ``.``, ``-``.
``id``            no        column of the source's own item id. Default: a hash of the question with its
                            options, so distinct items sharing a question stem keep distinct ids.
``explanation``   no        column copied to ``explanation`` (likewise ``context`` and ``subject``).
``split``         no        column of each row's split: ``train``, ``validation``, ``test`` or an alias
                            (``training``, ``dev``, ``val``, ``valid``, ``validate``).
``split_values``  no        ``{value: split}`` for split names of the source's own, e.g. ``{holdout: test}``.
``default_split`` no        split of the files whose name tells none, when there is no ``split`` column.
``columns``       no        column names, in order, of header-less CSV/TSV files: every CSV/TSV file of the
                            mapping is then read without a header row.
================  ========  ==================================================================================

A row's split is its ``split`` column when one is declared; otherwise the file's name when a word of it is a
split (``usmle_style_test.csv`` is ``test``, ``dev.jsonl`` is ``validation``, as for the other readers);
otherwise ``default_split``. A file whose split cannot be told is refused: nothing defaults to ``train``.

:func:`load_mapping` checks all of this before any row is read, including the files themselves (every
declared column is in each file's header, or in some record of a JSON-lines file; every value of the split
column is known; no file is empty; one column per role; letter-named option columns in letter order; the
answers of each file's first :data:`SURVEY_ROWS` rows fit ``answer_format``, :func:`answer_survey`), and
raises one :class:`SourceError` naming ``mcq_mapping.yaml`` that lists every problem with its fix.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import reprlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import yaml

from assets.common.records import SourceError
from storage.sources import SourceDir, UnsafePath, normalize_relpath

from .readers.common import LETTERS, SPLITS, RowProblem, as_text, normalize_split, split_from_name

MAPPING_FILE = "mcq_mapping.yaml"
MAX_MAPPING_BYTES = 64 * 1024
ANSWER_FORMATS = ("letter", "index0", "index1", "text")
REQUIRED = ("files", "license", "question", "options", "answer")
OPTIONAL_COLUMNS = ("id", "explanation", "context", "subject", "split")
KEYS = (*REQUIRED, "answer_format", "dataset", *OPTIONAL_COLUMNS, "split_values", "default_split", "columns")
FILE_SUFFIXES = (".csv", ".tsv", ".jsonl")
SURVEY_ROWS = 10_000
"""Rows of each file whose answers :func:`answer_survey` checks against ``answer_format`` (the first ones)."""
_DATASET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class MCQMapping:
    """A validated ``mcq_mapping.yaml`` (see the module docstring); build it with :func:`load_mapping`."""

    files: tuple[str, ...]
    license: str
    question: str
    options: tuple[str, ...] | str
    answer: str
    answer_format: str = "letter"
    dataset: str = "mcq_custom"
    id: str | None = None
    explanation: str | None = None
    context: str | None = None
    subject: str | None = None
    split: str | None = None
    split_values: dict[str, str] = field(default_factory=dict)
    default_split: str | None = None
    columns: tuple[str, ...] | None = None
    file_splits: dict[str, str] = field(
        default_factory=dict
    )  # file -> split, for files without a split column

    def declared_columns(self) -> dict[str, str]:
        """``{column: role}`` of every column the mapping reads."""
        roles = {self.question: "question", self.answer: "answer"}
        for c in [self.options] if isinstance(self.options, str) else self.options:
            roles.setdefault(c, "options")
        for key in OPTIONAL_COLUMNS:
            if getattr(self, key):
                roles.setdefault(getattr(self, key), key)
        return roles

    def row_split(self, row: dict[str, Any], rel: str) -> str:
        """The row's split: its split column (through ``split_values``), else its file's split."""
        if self.split is None:
            return self.file_splits[rel]
        value = as_text(row.get(self.split))
        return self.split_values.get(value) or normalize_split(value)

    def row_options(self, row: dict[str, Any]) -> list[str]:
        """The row's options in letter order; :class:`RowProblem` when they cannot be read unambiguously."""
        if isinstance(self.options, str):
            return _options_from_column(row.get(self.options), self.options)
        values = [as_text(row.get(c)) for c in self.options]
        while values and not values[-1]:
            values.pop()
        gaps = [c for c, v in zip(self.options, values, strict=False) if not v]
        if gaps:
            raise RowProblem(
                f"empty option column {gaps[0]!r} before a filled one "
                f"(the answer letters would shift); options {values}"
            )
        return values

    def row_label(self, row: dict[str, Any], options: list[str]) -> str:
        """The answer letter of the row, read in ``answer_format``."""
        return answer_letter(row.get(self.answer), options, self.answer_format)

    def row_id(self, row: dict[str, Any], question: str, options: list[str]) -> str:
        """``<dataset>:<id>``: the id column, else a hash of the question with its options."""
        if self.id:
            rid = as_text(row.get(self.id))
            if not rid:
                raise RowProblem(f"empty id in column {self.id!r}")
        else:
            payload = json.dumps([question.strip(), [o.strip() for o in options]], ensure_ascii=False)
            rid = hashlib.sha1(payload.encode()).hexdigest()[:16]
        return f"{self.dataset}:{rid}"


def _options_from_column(value: Any, column: str) -> list[str]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError) as e:
            raise RowProblem(f"options column {column!r} is not a JSON list or object") from e
    if isinstance(value, dict):
        keys = [str(k).strip().upper() for k in value]
        if sorted(keys) != list(LETTERS[: len(keys)]):
            raise RowProblem(f"option letters are not A.. in order: {sorted(value)}")
        by_letter = dict(zip(keys, value.values(), strict=True))
        return [as_text(by_letter[k]) for k in LETTERS[: len(keys)]]
    if isinstance(value, list):
        return [as_text(v) for v in value]
    raise RowProblem(f"options column {column!r} holds {type(value).__name__}, not a list or object")


def answer_letter(answer: Any, options: list[str], fmt: str) -> str:
    """The letter of ``answer`` among ``options``, ``answer`` being in format ``fmt`` (see the module)."""
    a = as_text(answer)
    if fmt == "text":
        hits = [i for i, o in enumerate(options) if o == a]
        if len(hits) != 1:
            raise RowProblem(
                f"answer not among the options: {a!r}"
                if not hits
                else f"answer matches {len(hits)} options: {a!r}"
            )
        return LETTERS[hits[0]]
    if fmt == "letter":
        label = a.strip("().: ").upper()
    else:
        try:
            number = float(a)
        except ValueError as e:
            raise RowProblem(f"answer letter outside the options: {a!r} is not an {fmt} number") from e
        index = int(number) - (fmt == "index1")
        if not number.is_integer() or not 0 <= index < len(options):
            raise RowProblem(f"answer letter outside the options: {a!r} as {fmt} with {len(options)} options")
        label = LETTERS[index]
    if len(label) != 1 or label not in LETTERS[: len(options)]:
        raise RowProblem(f"answer letter outside the options: {a!r} with {len(options)} options")
    return label


# ---- loading and validation ------------------------------------------------------------------------
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 80, 80


def _short(value: Any) -> str:
    """A bounded repr: a YAML value built from aliases can be exponentially large when printed whole."""
    return _REPR.repr(value)


def _closest(word: str, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _column_list(
    value: Any, key: str, problems: list[str], lo: int = 1, hi: int = 1000
) -> tuple[str, ...] | None:
    if not isinstance(value, list) or not all(isinstance(c, str) and c for c in value):
        problems.append(f"{key} must be a list of column names (got {_short(value)})")
        return None
    if not lo <= len(value) <= hi:
        problems.append(f"{key} must name {lo} to {hi} columns (got {len(value)})")
    repeated = sorted({c for c in value if value.count(c) > 1})
    if repeated:
        problems.append(f"{key} names a column more than once: {repeated}")
    return tuple(value)


def _parse(src: SourceDir) -> dict[str, Any]:
    path = src.require(MAPPING_FILE, "MCQ column mapping")
    try:
        text = src.read_bytes(MAPPING_FILE, max_bytes=MAX_MAPPING_BYTES).decode("utf-8-sig")
        raw = yaml.safe_load(text)
    except UnicodeDecodeError as e:
        raise SourceError(path, f"not UTF-8 text ({e})", "save mcq_mapping.yaml as UTF-8") from e
    except yaml.YAMLError as e:
        raise SourceError(path, f"invalid YAML ({e})", "fix the syntax of mcq_mapping.yaml") from e
    if not isinstance(raw, dict):
        raise SourceError(
            path,
            f"expected a mapping of keys, found {type(raw).__name__}",
            f"declare {', '.join(REQUIRED)} as in the docstring of assets/ingest/mcq_mapping.py",
        )
    return raw


def _check_keys(raw: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """Field values of :class:`MCQMapping` from ``raw``; every problem is appended to ``problems``."""
    for key in raw:
        if key not in KEYS:
            problems.append(f"unknown key {_short(key)}{_closest(str(key)[:100], KEYS)}")
    for key in REQUIRED:
        if raw.get(key) in (None, "", []):
            problems.append(
                f"missing required key {key!r}"
                + (" (the items' licence, e.g. CC-BY-4.0)" if key == "license" else "")
            )
    kw: dict[str, Any] = {}
    for key in ("license", "question", "answer", *OPTIONAL_COLUMNS):
        value = raw.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            problems.append(f"{key} must be a non-empty string (got {_short(value)})")
        elif value is not None:
            kw[key] = value
    fmt = raw.get("answer_format", "letter")
    if fmt not in ANSWER_FORMATS:
        problems.append(
            f"answer_format {_short(fmt)} is not one of {', '.join(ANSWER_FORMATS)}"
            f"{_closest(str(fmt)[:100], ANSWER_FORMATS)}"
        )
    kw["answer_format"] = fmt
    dataset = raw.get("dataset", "mcq_custom")
    if not isinstance(dataset, str) or not _DATASET.match(dataset):
        problems.append(f"dataset {_short(dataset)} must be 1-64 letters, digits, '_', '.' or '-'")
    kw["dataset"] = dataset
    options = raw.get("options")
    if isinstance(options, str) and options:
        kw["options"] = options
    elif options is not None:
        kw["options"] = _column_list(options, "options", problems, 2, len(LETTERS))
    if raw.get("columns") is not None:
        kw["columns"] = _column_list(raw["columns"], "columns", problems)
    split_values = raw.get("split_values") or {}
    if split_values and raw.get("split") is None:
        problems.append("split_values needs a split column (declare split:)")
    if not isinstance(split_values, dict):
        problems.append(f"split_values must map values of the split column to {', '.join(SPLITS)}")
        split_values = {}
    kw["split_values"] = {}
    for value, split in split_values.items():
        if split not in SPLITS:
            problems.append(
                f"split_values maps {_short(value)} to {_short(split)}, not one of {', '.join(SPLITS)}"
            )
        kw["split_values"][as_text(value)] = split
    default = raw.get("default_split")
    if default is not None:
        try:
            kw["default_split"] = normalize_split(default)
        except RowProblem:
            problems.append(
                f"default_split {_short(default)} is not one of {', '.join(SPLITS)} or an alias "
                f"(training, dev, val, valid, validate)"
            )
    kw["files"] = _check_files(raw.get("files"), problems)
    _check_roles(kw, problems)
    return kw


_LETTER_COLUMN = re.compile(r"^(?:opt(?:ion)?[ _-]?)?([A-J])$", re.IGNORECASE)


def _check_roles(kw: dict[str, Any], problems: list[str]) -> None:
    """One column per role (an option column that is also the answer or the question column turns every
    answer into that option's letter), and option columns named by letter listed in letter order (``[B, A,
    C, D]`` would swap two options under every answer)."""
    options = kw.get("options")
    option_columns = [options] if isinstance(options, str) else list(options or [])
    roles: dict[str, list[str]] = {}
    for role in ("question", "answer", *OPTIONAL_COLUMNS):
        if kw.get(role):
            roles.setdefault(kw[role], []).append(role)
    for i, column in enumerate(option_columns):
        roles.setdefault(column, []).append(
            f"option {LETTERS[i]}" if not isinstance(options, str) else "options"
        )
    for column, used in roles.items():
        if len(used) > 1:
            problems.append(
                f"column {_short(column)} is used as {' and '.join(used)}: give each role its own column"
            )
    if isinstance(options, str) or not option_columns:
        return
    letters = [_LETTER_COLUMN.match(str(c)) for c in option_columns]
    if all(letters):
        named = [m.group(1).upper() for m in letters]
        if named != list(LETTERS[: len(named)]):
            ordered = sorted(option_columns, key=lambda c: _LETTER_COLUMN.match(str(c)).group(1).upper())
            problems.append(
                f"options {option_columns} are named by letter but listed as {named}: list them in letter "
                f"order {ordered} (the list order is the answer letter)"
            )


def _answer_kind(value: str) -> str:
    """What an answer cell looks like: ``letter``, ``zero``, ``number`` or ``text``."""
    v = value.strip().strip("().: ")
    if len(v) == 1 and v.upper() in LETTERS:
        return "letter"
    if re.fullmatch(r"\d+(?:\.0+)?", v):
        return "zero" if float(v) == 0 else "number"
    return "text"


def answer_survey(mapping: MCQMapping, rows: list[dict[str, Any]]) -> str | None:
    """Why the answers of ``rows`` (a file's readable rows) do not look like ``answer_format`` (None when
    they do): a ``0`` under ``index1``, the highest index under ``index0`` (1-based numbers), letters under
    an index format, numbers under ``letter``, or, under ``text``, more than 5 % of answers matching no
    option. One bad cell is quarantined anyway; this is about the whole file meaning something else."""
    fmt = mapping.answer_format
    kinds: Counter[str] = Counter()
    at_max = unmatched = n = 0
    examples: dict[str, str] = {}
    for r in rows:
        answer = as_text(r.get(mapping.answer))
        if not answer:
            continue
        try:
            options = mapping.row_options(r)
        except RowProblem:
            continue
        n += 1
        kind = _answer_kind(answer)
        kinds[kind] += 1
        examples.setdefault(kind, answer)
        if kind in ("number", "zero") and fmt == "index0" and float(answer) == len(options):
            at_max += 1
        if fmt == "text" and answer not in options:
            unmatched += 1
            examples.setdefault("unmatched", answer)
    if n == 0:
        return None
    if fmt == "index1" and kinds["zero"]:
        return (
            f"{kinds['zero']} of {n} answers are 0, which index1 (1 is A) cannot mean: the file is probably "
            "0-based (answer_format: index0)"
        )
    if fmt == "index0" and at_max and not kinds["zero"]:
        return (
            f"{at_max} of {n} answers equal the number of options and none is 0, which index0 (0 is A) "
            "cannot mean: the file is probably 1-based (answer_format: index1)"
        )
    if fmt in ("index0", "index1") and kinds["letter"]:
        return (
            f"{kinds['letter']} of {n} answers are letters (e.g. {examples['letter']!r}) under {fmt}: "
            "answer_format: letter?"
        )
    if fmt == "letter" and kinds["number"] + kinds["zero"]:
        number = examples.get("number") or examples.get("zero")
        return (
            f"{kinds['number'] + kinds['zero']} of {n} answers are numbers (e.g. {number!r}) under letter: "
            "answer_format: index0 or index1?"
        )
    if fmt == "text" and unmatched > 0.05 * n:
        return (
            f"{unmatched} of {n} answers match no option's text (e.g. {examples['unmatched']!r}): "
            "answer_format: letter, index0 or index1?"
        )
    return None


def _check_files(files: Any, problems: list[str]) -> tuple[str, ...]:
    if files is None:
        return ()
    if not isinstance(files, list) or not all(isinstance(f, str) and f for f in files):
        problems.append(f"files must be a list of file names (got {_short(files)})")
        return ()
    out = []
    for rel in files:
        try:
            norm = normalize_relpath(rel)
        except UnsafePath as e:
            problems.append(f"file {rel!r}: {e.problem}")
            continue
        if not norm.removesuffix(".gz").endswith(FILE_SUFFIXES):
            problems.append(f"file {rel!r}: unknown type (use {', '.join(FILE_SUFFIXES)}, optionally .gz)")
        elif norm in out:
            problems.append(f"file {rel!r} is listed twice")
        else:
            out.append(norm)
    return tuple(out)


def is_delimited(rel: str) -> bool:
    """True for CSV/TSV files (read with a header or ``columns``), False for JSON lines."""
    return rel.removesuffix(".gz").endswith((".csv", ".tsv"))


def iter_rows(src: SourceDir, rel: str, columns: tuple[str, ...] | None):
    """``(line_no, record, error)`` of one mapped file (CSV/TSV by column, JSON lines by key)."""
    if is_delimited(rel):
        delimiter = "\t" if rel.removesuffix(".gz").endswith(".tsv") else ","
        return src.iter_csv(rel, "MCQ file", delimiter, list(columns) if columns else None)
    return src.iter_jsonl(rel, "MCQ file")


def _survey(src: SourceDir, mapping: MCQMapping, rel: str, problems: list[str]) -> None:
    """Check one file against the mapping without keeping its rows (a streaming pass)."""
    declared = mapping.declared_columns()
    present: Counter[str] = Counter()
    split_values: Counter[str] = Counter()
    rows = bad = 0
    sample: list[dict[str, Any]] = []
    for _, r, err in iter_rows(src, rel, mapping.columns):
        if err:
            bad += 1
            continue
        if len(sample) < SURVEY_ROWS:
            sample.append(r)
        if rows == 0 and mapping.columns and list(r.values()) == list(mapping.columns):
            problems.append(
                f"{rel} starts with a header row although columns: is declared (remove columns: "
                f"for files with a header)"
            )
        if rows == 0 and is_delimited(rel):
            present.update(r.keys())
        elif not is_delimited(rel):
            present.update(k for k in declared if k in r)
        rows += 1
        if mapping.split:
            split_values[as_text(r.get(mapping.split))] += 1
    if rows == 0:
        problems.append(f"{rel} has no usable rows" + (f" ({bad} malformed)" if bad else ""))
        return
    missing = [c for c in declared if not present[c]]
    if not missing:
        implausible = answer_survey(mapping, sample)
        if implausible:
            problems.append(
                f"{rel}: answers do not fit answer_format {mapping.answer_format!r}: {implausible}"
            )
    if missing:
        where = "header" if is_delimited(rel) else "records"
        problems.append(
            f"{rel}: declared column(s) absent from the file's {where}: "
            + ", ".join(f"{c!r} ({declared[c]})" for c in missing)
            + (_delimiter_hint(rel, list(present), missing) if is_delimited(rel) else "")
        )
    unknown = {}
    for value, n in split_values.items():
        if value not in mapping.split_values:
            try:
                normalize_split(value)
            except RowProblem:
                unknown[value] = n
    if unknown:
        shown = ", ".join(f"{v!r} ({n} rows)" for v, n in sorted(unknown.items(), key=lambda x: -x[1])[:5])
        problems.append(
            f"{rel}: split column {mapping.split!r} holds values that are not splits: {shown}; "
            f"map them with split_values (e.g. {{holdout: test}}) or correct the column"
        )


def _delimiter_hint(rel: str, header: list[str], missing: list[str]) -> str:
    """When the header read as one or few columns holds the missing names split by another delimiter."""
    expected = "\t" if rel.removesuffix(".gz").endswith(".tsv") else ","
    for delimiter, name in ((";", "';'"), ("\t", "tab"), ("|", "'|'"), (",", "','")):
        if delimiter == expected:
            continue
        names = {part.strip() for h in header for part in h.split(delimiter)}
        if all(m in names for m in missing):
            return (
                f" (this file looks {name}-delimited: its header splits on {name} into the declared columns; "
                f"save it {'tab' if expected == chr(9) else 'comma'}-separated)"
            )
    return ""


def load_mapping(src: SourceDir) -> MCQMapping:
    """The source's ``mcq_mapping.yaml``, validated as a whole against the mapping rules and the files
    themselves before any row is read; one :class:`SourceError` naming ``mcq_mapping.yaml`` lists every
    problem with its fix."""
    path = src.path(MAPPING_FILE)
    problems: list[str] = []
    raw = _parse(src)
    kw = _check_keys(raw, problems)
    files = kw["files"]
    # judged on every listed name, refused ones too: a refused '../x.csv' is still a CSV the user meant
    listed = (
        [f for f in raw.get("files") or [] if isinstance(f, str)]
        if isinstance(raw.get("files"), list)
        else []
    )
    if kw.get("columns") and not any(is_delimited(f) for f in listed):
        problems.append("columns: applies to CSV/TSV files only, and the mapping lists none")
    file_splits: dict[str, str] = {}
    if "split" not in kw:
        for rel in files:
            split = split_from_name(rel) or kw.get("default_split")
            if split is None:
                problems.append(
                    f"cannot tell the split of {rel}: declare a split column, name the file "
                    f"*train*/*dev*/*test*, or set default_split"
                )
            else:
                file_splits[rel] = split
    for rel in files:
        try:
            if not src.exists(rel):
                problems.append(f"file {rel!r} listed in files is not in the folder")
        except SourceError as e:
            problems.append(f"file {rel!r}: {e.problem}")
    if not problems:
        mapping = MCQMapping(**kw, file_splits=file_splits)
        for rel in files:
            try:
                _survey(src, mapping, rel, problems)
            except SourceError as e:
                problems.append(f"{rel}: {e.problem}")
    if problems:
        raise SourceError(
            path,
            "invalid MCQ mapping: " + "; ".join(problems),
            "fix mcq_mapping.yaml (keys documented in assets/ingest/mcq_mapping.py) or the files",
        )
    return mapping
