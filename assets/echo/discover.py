"""Which files of an echo source are clips: by content, never by name.

* DICOM: the 128-byte preamble followed by ``DICM`` (PS3.10), whatever the name (``IM0001``, ``x.DCM``).
* DICOMDIR: a DICOM file of the Media Storage Directory class; every file its records reference
  (``ReferencedFileID``, relative to the DICOMDIR's folder) is a DICOM candidate, and a referenced file
  that is not there is reported. The DICOMDIR itself holds no image and is not ingested.
* AVI: ``RIFF....AVI `` (EchoNet-Dynamic).
* A file named like DICOM (``.dcm``, ``.dicom``, ``.dic``) without the marker is reported as not DICOM
  (a truncated or mislabelled export), since its owner meant it to be a clip. Other files (manifests,
  notes, thumbnails) are counted, not ingested.

Paths are literal: the listing walks the folder (:meth:`storage.sources.SourceDir.list_entries`), no glob,
and a name is opened literally (a backslash is part of a POSIX file name). Only regular files inside the
source folder are opened (:meth:`storage.sources.SourceDir.open_listed`, which never blocks on a FIFO): a
symbolic link that is broken or leads outside the folder, a named pipe, socket or device, a link to a folder,
an unlistable folder or a file that cannot be read is listed in :attr:`Discovery.unreadable` with a reason
that names no path, for the caller to quarantine under the file's key; discovery itself never raises for
one entry. Plain library (no Dagster).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

import pydicom

from storage.sources import SourceDir, UnreadableEntry

DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
SNIFF_BYTES = 132


@dataclass
class Discovery:
    """The candidate files of a source and what was not a candidate (paths relative to the root)."""

    files_seen: int = 0
    dicom: list[str] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)
    dicomdirs: list[str] = field(default_factory=list)
    not_dicom: list[str] = field(default_factory=list)  # named like DICOM, no DICM marker
    missing_referenced: list[str] = field(default_factory=list)  # in a DICOMDIR, absent on disk
    other: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (entry, why), never opened or failed


def sniff(head: bytes) -> str | None:
    """``"dicom"``, ``"avi"`` or ``None`` from the first :data:`SNIFF_BYTES` bytes of a file."""
    if len(head) >= SNIFF_BYTES and head[128:132] == b"DICM":
        return "dicom"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    return None


def _dicomdir_references(src: SourceDir, rel: str) -> list[str] | None:
    """Relative paths the DICOMDIR ``rel`` references, or ``None`` when ``rel`` is not a DICOMDIR."""
    from .dicom import quiet_pydicom

    with src.open_listed(rel) as f, quiet_pydicom():
        ds = pydicom.dcmread(f, stop_before_pixels=True)
    if str(ds.file_meta.get("MediaStorageSOPClassUID", "")) != DICOMDIR_CLASS:
        return None
    base = posixpath.dirname(rel)
    refs = []
    for record in ds.get("DirectoryRecordSequence", []) or []:
        ref = record.get("ReferencedFileID")
        if ref:
            parts = [str(ref)] if isinstance(ref, str) else [str(p) for p in ref]
            refs.append(posixpath.join(base, *parts) if base else posixpath.join(*parts))
    return refs


def discover(src: SourceDir, skip: set[str] | frozenset[str] = frozenset()) -> Discovery:
    """Every file under ``src`` sorted into candidates and the rest (``skip``: manifest files)."""
    found = Discovery()
    entries = [(rel, problem) for rel, problem in src.list_entries() if rel not in skip]
    found.files_seen = len(entries)
    kinds: dict[str, str | None] = {}
    for rel, problem in entries:
        if problem is None:
            try:
                with src.open_listed(rel) as f:
                    kinds[rel] = sniff(f.read(SNIFF_BYTES))
                continue
            except Exception as e:  # UnreadableEntry, a failed read (permissions, I/O), an unsafe S3 name
                problem = str(e) if isinstance(e, UnreadableEntry) else f"cannot be read ({type(e).__name__})"
        found.unreadable.append((rel, problem))
    files = sorted(kinds)
    by_lower = {f.lower(): f for f in files}
    unreadable_lower = {rel.lower() for rel, _ in found.unreadable}
    referenced: set[str] = set()
    for rel in files:
        if kinds[rel] != "dicom":
            continue
        try:
            refs = _dicomdir_references(src, rel) if posixpath.basename(rel).upper() == "DICOMDIR" else None
        except Exception:  # a damaged DICOMDIR is ingested (and quarantined) like any other DICOM file
            refs = None
        if refs is None:
            continue
        found.dicomdirs.append(rel)
        for ref in refs:  # ISO 9660 media write upper-case ids: match case-insensitively
            actual = by_lower.get(ref.lower())
            if actual is None and ref.lower() in unreadable_lower:
                continue  # already reported as unreadable
            if actual is None:
                found.missing_referenced.append(ref)
            else:
                referenced.add(actual)
    for rel in files:
        if rel in found.dicomdirs:
            continue
        if kinds[rel] == "dicom" or rel in referenced:
            found.dicom.append(rel)
        elif kinds[rel] == "avi":
            found.videos.append(rel)
        elif rel.lower().endswith(DICOM_SUFFIXES):
            found.not_dicom.append(rel)
        else:
            found.other.append(rel)
    return found
