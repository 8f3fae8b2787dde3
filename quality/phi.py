"""PHI audit: no identifying value read from an input may appear in any output that is published.

What counts as an identifier (:func:`collect_identifiers`): in a DICOM dataset (sequences walked), the
value of every element of VR PN, DA, DT, TM or UI (UIDs under the DICOM root ``1.2.840.10008.`` excepted:
they name standard classes, not people), of every text element (AE, AS, LO, LT, SH, ST, UC, UR, UT)
listed in PS3.15 Table E.1-1 (:mod:`quality.deid_profile`), and of every private text element (private
creators excepted: they name vendors). Callers add the rest: manifest ids and the input file's names
(:func:`file_name_identifiers`, matched as whole names).

Where it is searched (:func:`audit_outputs`): :class:`Place` objects, each an output text tied to the
input file it came from (``file_key``) or shared by all files (``None``): table cells (numeric cells and
the columns the pipeline generates itself, declared by the caller, are skipped), quarantine rows, the
metadata dict the asset will publish, PNG chunks and stored file names.

* **Per file**: each file's identifiers, dates and times included, against the places of the same file.
* **Globally**: every non-temporal identifier of every file (names, ids, UIDs, file names) against every
  place, shared ones included. Dates and times are not searched across files or in shared places (a
  metadata preview of shifted dates): one file's shifted date is another's real one too often.

Matching is case-insensitive with one Aho–Corasick automaton per identifier set (pyahocorasick, linear in
the text plus matches), then a boundary rule per identifier: dates, times, UIDs and all-digit values match
as whole numbers (no digit, and no ``.`` joining digits, on either side: ``20160503`` is not found inside
``2.25.120160503``); other values shorter than :data:`SUBSTRING_LEN` match as whole words (the name
``PLA`` is not found in the view ``PLAX``), and so do values made only of hex digits (``E61809`` is not
found inside a SHA-256 file name); longer ones match anywhere (``SMITHJOHN``). Values shorter
than :data:`MIN_LEN` identify no one and are skipped. Findings name the attribute and the place, never
the value. Plain library (no Dagster).
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import ahocorasick
import numpy as np
import polars as pl
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from .deid_profile import entry_for

TOKEN_VRS = frozenset({"DA", "DT", "TM", "UI"})
TEMPORAL_VRS = frozenset({"DA", "DT", "TM"})
TEXT_VRS = frozenset({"AE", "AS", "LO", "LT", "SH", "ST", "UC", "UR", "UT", "PN"})
MIN_LEN = 3
SUBSTRING_LEN = 6
STANDARD_UID_ROOT = "1.2.840.10008."
FILE_NAME = "file name"
_NUMERIC = re.compile(r"^[0-9.+\-: ]+$")
_HEX = re.compile(r"^[0-9A-Fa-f]+$")


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

    @property
    def numeric(self) -> bool:
        return self.vr in TOKEN_VRS or bool(_NUMERIC.match(self.value))

    @property
    def hexlike(self) -> bool:
        """Only hex digits (``E61809``): such a value inside a longer hex run (a content hash) is another
        string, so it matches as a whole word only."""
        return bool(_HEX.match(self.value))


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
def _values(elem) -> list[str]:
    v = elem.value
    seq = list(v) if isinstance(v, MultiValue | list | tuple) else [v]
    out = []
    for x in seq:
        s = str(x).strip()
        if elem.VR == "PN":
            out += [p.strip() for p in re.split(r"[\^=]", s) if p.strip()]
            s = s.replace("^", " ").strip()
        out.append(s)
    return out


def collect_identifiers(ds: Dataset, where: str = "") -> set[Identifier]:
    """Identifying values of ``ds`` (sequences walked); see the module docstring for what counts."""
    found: set[Identifier] = set()
    for elem in ds:
        if elem.tag == 0x7FE00010:
            continue
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
        private = elem.tag.is_private and elem.VR in TEXT_VRS | {"CS"}
        listed = elem.VR in TEXT_VRS and entry_for(elem.tag) is not None
        if not (elem.VR in TOKEN_VRS or elem.VR == "PN" or listed or private):
            continue
        for v in _values(elem):
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
    """Aho–Corasick search for a set of identifiers with the boundary rules of the module docstring."""

    def __init__(self, identifiers: Iterable[Identifier]):
        self.automaton = ahocorasick.Automaton()
        by_value: dict[str, list[Identifier]] = {}
        for ident in identifiers:
            if len(ident.value) >= MIN_LEN:
                by_value.setdefault(ident.value.lower(), []).append(ident)
        for value, idents in by_value.items():
            self.automaton.add_word(value, (value, tuple(idents)))
        self.size = len(by_value)
        if self.size:
            self.automaton.make_automaton()

    def find(self, text: str) -> set[str]:
        """Attributes of the identifiers found in ``text``."""
        if not self.size or not text:
            return set()
        low = text.lower()
        found: set[str] = set()
        for end, (value, idents) in self.automaton.iter(low):
            start = end - len(value) + 1
            for ident in idents:
                if ident.attribute in found or not self._bounded(ident, low, start, end):
                    continue
                found.add(ident.attribute)
        return found

    @staticmethod
    def _bounded(ident: Identifier, text: str, start: int, end: int) -> bool:
        if ident.numeric:
            return not _in_number(text, start - 1, -1) and not _in_number(text, end + 1, 1)
        if ident.attribute == FILE_NAME:  # whole names: "echo" is not found in "echo_studies"
            before = text[start - 1] if start > 0 else " "
            after = text[end + 1] if end + 1 < len(text) else " "
            return not (before.isalnum() or before == "_") and not (after.isalnum() or after == "_")
        if len(ident.value) >= SUBSTRING_LEN and not ident.hexlike:
            return True
        before = text[start - 1] if start > 0 else " "
        after = text[end + 1] if end + 1 < len(text) else " "
        return not before.isalnum() and not after.isalnum()


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
