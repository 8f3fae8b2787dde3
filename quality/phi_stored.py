"""PHI audit of everything stored outside the restricted root: the storage root and Dagster's instance.

Run it with ``python -m orchestration.phi_audit`` (which defaults the places to the storage root and
``DAGSTER_HOME`` of the settings).

The per-partition gate (:mod:`quality.phi`) audits what an asset is about to publish; this audit reads
back what was actually written, byte by byte, wherever it went: the published storage root and
``DAGSTER_HOME`` (run and event-log SQLite databases with their run snapshots, tags and asset-check rows,
compute logs, the instance's files).

What is read (:func:`stored_places`): every regular file's name (relative path); SQLite databases table
by table, every text cell and every blob (zlib-decompressed where it is compressed: Dagster stores run and
job snapshots so); PNG text chunks (:func:`quality.phi.png_text`, the pixels are OCR's business); the
header of ``.npy`` arrays (pixels skipped); Parquet string cells and the file's bytes (footer metadata);
gzip/zlib streams decompressed; every other file's bytes as UTF-8 and as Latin-1 text (of a binary file,
its printable runs of 20 or more characters, as ``strings`` reads them).

What is searched for (:func:`folder_identifiers`): the identifiers of the source folders read again,
each DICOM header (:func:`quality.phi.collect_identifiers`, all character-set readings), the files'
names and the manifests' patient and study ids, with their variants, as whole tokens
(:class:`quality.phi.Matcher`); dates and times only for birth dates (a study's date is too often a run's
date). Findings name the attribute and the place; a path part that itself holds an identifier is shown as
``<withheld>``. Plain library (no Dagster, no environment).
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import sqlite3
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import polars as pl
import pydicom
from pydicom.errors import InvalidDicomError

from .phi import (
    Identifier,
    Matcher,
    PhiAuditResult,
    Place,
    audit_places,
    collect_identifiers,
    file_name_identifiers,
    png_text,
)

MANIFEST_ID_COLUMNS = ("patient_id", "study_id", "subject_id", "mrn")
WITHHELD = "<withheld>"


def folder_identifiers(root: str | Path) -> dict[str, set[Identifier]]:
    """``{relative path: identifiers}`` for every regular file under ``root`` (symlinks not followed):
    its names, its DICOM header when it is DICOM, and the id columns of CSV manifests."""
    root = Path(root)
    out: dict[str, set[Identifier]] = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        rel = path.relative_to(root).as_posix()
        ids = set(file_name_identifiers(rel))
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            ids |= collect_identifiers(ds)
        except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError, KeyError, TypeError):
            pass
        if path.suffix.lower() == ".csv":
            ids |= _manifest_ids(path)
        out[rel] = ids
    return out


def _manifest_ids(path: Path) -> set[Identifier]:
    out = set()
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        for row in csv.DictReader(f):
            for col, value in row.items():
                if col and col.strip().lower() in MANIFEST_ID_COLUMNS and value and len(value.strip()) >= 3:
                    out.add(Identifier(value.strip(), f"manifest.{col.strip()}"))
    return out


BINARY_RUN = 20
# printable ASCII and 2-byte UTF-8 (accented Latin letters)
_PRINTABLE_RUN = re.compile(rb"(?:[\t\n\r\x20-\x7e]|[\xc2-\xdf][\x80-\xbf]){%d,}" % BINARY_RUN)


def _texts(data: bytes) -> list[str]:
    """``data`` as UTF-8 text, and as Latin-1 when it is not plain ASCII; decompressed first when it is a
    gzip or zlib stream. Binary data (a NUL byte) gives only its printable runs of :data:`BINARY_RUN` or
    more characters (as ``strings`` does): text embedded in a binary file is found, while its random bytes
    make no words (at 12 characters, a 2.5 MB GIF of Great Expectations' Data Docs held a 3-letter name)."""
    for magic, unpack in ((b"\x1f\x8b", gzip.decompress), (b"x", zlib.decompress)):
        if data.startswith(magic):
            try:
                data = unpack(data)
                break
            except (OSError, zlib.error, EOFError):
                continue
    if b"\x00" in data:
        data = b"\n".join(_PRINTABLE_RUN.findall(data))
    texts = [data.decode("utf-8", errors="replace")]
    if not data.isascii():
        texts.append(data.decode("latin-1"))
    return texts


def _sqlite_places(path: Path, where: str) -> Iterator[Place]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            cur = con.execute(f'SELECT * FROM "{table}"')  # noqa: S608 (names from sqlite_master)
            cols = [d[0] for d in cur.description]
            for row in cur:
                for col, value in zip(cols, row, strict=True):
                    if isinstance(value, str) and value:
                        yield Place(f"{where}:{table}.{col}", value)
                    elif isinstance(value, bytes) and value:
                        for text in _texts(value):
                            yield Place(f"{where}:{table}.{col}", text)
    finally:
        con.close()


def _file_places(path: Path, where: str) -> Iterator[Place]:
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"SQLite format 3\x00"):
        try:
            yield from _sqlite_places(path, where)
            return
        except sqlite3.DatabaseError:
            pass  # not readable as a database (a partial copy): its bytes are read below
    data = path.read_bytes()
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        yield Place(where, png_text(data))
        return
    if head.startswith(b"\x93NUMPY"):
        with io.BytesIO(data) as f:
            major, _ = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            header = read(f)  # the shape, order and dtype only
        yield Place(where, repr(header))
        return
    if head.startswith(b"PAR1"):
        try:
            df = pl.read_parquet(io.BytesIO(data))
            for col, dtype in df.schema.items():
                if dtype == pl.Utf8:
                    yield from (Place(f"{where}:{col}", v) for v in df[col].drop_nulls().to_list())
        except Exception:  # noqa: BLE001 (an unreadable Parquet file is still searched as bytes)
            pass
    for text in _texts(data):
        yield Place(where, text)


def stored_places(root: str | Path, label: str, matcher: Matcher | None = None) -> Iterator[Place]:
    """Every text stored under ``root`` (see the module docstring) as shared places named
    ``label/relative path``; path parts in which ``matcher`` finds an identifier are shown as
    ``<withheld>``."""
    root = Path(root)
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        rel = path.relative_to(root).as_posix()
        shown = "/".join(WITHHELD if matcher and matcher.find(p) else p for p in rel.split("/"))
        yield Place(f"{label}/{shown} (file name)", rel)
        yield from _file_places(path, f"{label}/{shown}")


def audit_stored(
    identifiers_by_file: Mapping[str, set[Identifier]], roots: Mapping[str, str | Path]
) -> PhiAuditResult:
    """Search every text under ``roots`` (``{label: folder}``) for every identifier (birth dates included,
    other dates and times not) of every file; see the module docstring."""
    everyone = [i for ids in identifiers_by_file.values() for i in ids]
    births = [i for i in everyone if "BirthDate" in i.attribute]
    matcher = Matcher([i for i in everyone if not i.temporal] + births)
    places = [p for label, root in roots.items() for p in stored_places(root, label, matcher)]
    return audit_places(identifiers_by_file, places, shared_identifiers=births)
