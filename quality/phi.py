"""PHI audit: every identifying value read from the inputs must be absent from every output.

:func:`collect_identifiers` gathers the values of identifying attributes from a source DICOM dataset
(names, ids, dates, UIDs, institution, physicians, device serial, free text, every private-tag string
but the private creators, which name vendors),
walking sequences. :func:`audit` searches the outputs for each of them: every string cell of the output
tables, every text-bearing PNG chunk (tEXt, zTXt, iTXt, eXIf; any chunk but IDAT), file names and ids,
and, for pixels, proves that nothing outside the ultrasound region survived (burned-in text lives there).

Matching: case-insensitive; values of 6 or more characters are searched as substrings, shorter ones as
whole tokens (so the name ``PLA`` does not flag the view ``PLAX``); values under 3 characters (``1``,
``M``) identify no one and cannot be searched meaningfully, so they are skipped. Numeric table cells are
measurements, not identifiers, and are not searched. Findings name the attribute and where it leaked,
never the value itself. Plain library (no Dagster).
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

IDENTIFYING_VRS = {"PN", "DA", "DT", "TM", "UI"}
IDENTIFYING_KEYWORDS = {
    "PatientID", "OtherPatientIDs", "AccessionNumber", "InstitutionName", "InstitutionAddress",
    "InstitutionalDepartmentName", "StationName", "DeviceSerialNumber", "StudyID", "StudyDescription",
    "SeriesDescription", "PerformedProcedureStepID", "PerformedProcedureStepDescription",
    "RequestedProcedureID", "ProtocolName", "PatientAddress", "PatientTelephoneNumbers",
    "MedicalRecordLocator", "AdditionalPatientHistory", "PatientComments", "ImageComments",
    "IssuerOfPatientID", "DeviceUID", "DetectorID", "GantryID",
}
MIN_LEN = 3
SUBSTRING_LEN = 6
STANDARD_UID_ROOT = "1.2.840.10008."


@dataclass(frozen=True)
class Identifier:
    """An identifying value and the attribute it came from (the value is never reported)."""

    value: str
    attribute: str


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
    """Identifying values of ``ds`` (sequences walked): see the module docstring for what counts."""
    found: set[Identifier] = set()
    for elem in ds:
        if elem.tag == 0x7FE00010:
            continue
        name = elem.keyword or str(elem.tag)
        if elem.VR == "SQ":
            for item in elem.value:
                found |= collect_identifiers(item, f"{where}{name}>")
            continue
        if elem.tag.is_private_creator:  # a vendor's block name, not about the patient
            continue
        private = elem.tag.is_private and elem.VR in ("LO", "SH", "ST", "LT", "UT", "PN", "CS", "UC")
        if elem.VR in IDENTIFYING_VRS or elem.keyword in IDENTIFYING_KEYWORDS or private:
            if elem.VR == "UI" and str(elem.value).startswith(STANDARD_UID_ROOT):
                continue
            if elem.VR in ("OB", "OW", "UN") or elem.value is None:
                continue
            for v in _values(elem):
                if len(v) >= MIN_LEN and (not private or len(v) <= 200):
                    found.add(Identifier(v, f"{where}{name}"))
    return found


def png_text(data: bytes) -> str:
    """Every PNG chunk payload except image data (IDAT), decompressed where zTXt/iTXt say so."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data.decode("latin-1")
    out, pos = [], 8
    while pos + 8 <= len(data):
        (length,), ctype = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        payload = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if ctype == b"IDAT":
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
        out.append(payload.decode("latin-1"))
    return "\n".join(out)


def _pattern(value: str) -> re.Pattern:
    v = re.escape(value)
    if len(value) >= SUBSTRING_LEN:
        return re.compile(v, re.IGNORECASE)
    return re.compile(rf"(?<![0-9A-Za-z]){v}(?![0-9A-Za-z])", re.IGNORECASE)


def table_strings(df: pl.DataFrame, table: str) -> Iterable[tuple[str, str]]:
    """``(where, text)`` for every string cell (and list-of-string element) of ``df``; numbers skipped."""
    for col, dtype in df.schema.items():
        if dtype == pl.Utf8:
            values = df[col].drop_nulls().to_list()
        elif isinstance(dtype, pl.List) and dtype.inner == pl.Utf8:
            values = [x for lst in df[col].drop_nulls().to_list() for x in lst if x is not None]
        else:
            continue
        for v in values:
            yield f"table {table}.{col}", str(v)


def audit(
    identifiers: Iterable[Identifier],
    texts: Iterable[tuple[str, str]],
) -> PhiAuditResult:
    """Search every ``(where, text)`` output place for every identifier; report ``(attribute, where)``."""
    ids = {i for i in identifiers if len(i.value) >= MIN_LEN}
    patterns = [(i.attribute, _pattern(i.value)) for i in ids]
    result = PhiAuditResult(identifiers=len(ids))
    seen: set[tuple[str, str]] = set()
    for where, text in texts:
        result.places_searched += 1
        for attribute, pat in patterns:
            if (attribute, where) not in seen and pat.search(text):
                seen.add((attribute, where))
                result.leaks.append((attribute, where))
    return result


def outside_region_blank(frame: np.ndarray, mask: np.ndarray) -> bool:
    """True when every pixel of ``frame`` outside ``mask`` is zero (no burned-in text can survive)."""
    return not np.any(frame[~mask])
