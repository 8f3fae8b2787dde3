"""What the KB-sources sensor watches: each source's files and their fingerprint, and new source folders.
Plain Python (no Dagster).

- :func:`source_files` lists the files a source's reader reads (``sources/``), so a change anywhere else in a
  shared dataset folder (SLAKE images beside its knowledge graph) does not trigger a KB refresh.
- :func:`fingerprint` is a digest over those files' relative paths, sizes and content ids: sha256 locally
  (cached per path, size and mtime while the process lives, so an unchanged file is not re-read every tick),
  the ETag on S3 (from one listing, no object is read). The listing cache of s3fs is dropped first, so every
  tick sees the store as it is.
- :func:`discover_sources` finds new MedRAG-style corpus folders under the data root: a folder that is not a
  dataset folder of the pipeline, whose name is a valid partition key and which holds ``*.jsonl``,
  ``*.jsonl.gz`` or ``*.parquet`` files. Its name becomes a ``kb_sources`` partition, read from that folder.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any

from assets.common.profiles import DATASET_FOLDERS
from storage.keys import InvalidPartitionKey, validate_partition_key
from storage.sources import SourceDir

from .sources import CORPUS_PATTERNS, REGISTRY

# the files each registered source's reader reads (sources/: each KbSource's patterns); any other source is a
# MedRAG-style corpus (CORPUS_PATTERNS)
SOURCE_PATTERNS: dict[str, tuple[str, ...]] = {name: s.patterns for name, s in REGISTRY.items()}
# folders under the data root that are datasets, never new KB corpora
RESERVED_FOLDERS = frozenset(DATASET_FOLDERS.values()) | {"echo"}

_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def _matches(rel: str, patterns: tuple[str, ...]) -> bool:
    return any(re.fullmatch(p, rel) for p in patterns)


def _listing(src: SourceDir) -> dict[str, dict[str, Any]]:
    """``{relative path: info}`` of every file under the source's root (an empty dict when it is absent)."""
    fs = src.fs
    base = fs._strip_protocol(src.root).rstrip("/")
    if src.is_s3:
        fs.invalidate_cache()
    if not fs.exists(base):
        return {}
    found = fs.find(base, detail=True)
    return {p[len(base) + 1 :]: info for p, info in found.items() if p.startswith(base + "/")}


def source_files(source: str, src: SourceDir) -> dict[str, dict[str, Any]]:
    """``{relative path: listing info}`` of the files ``source``'s reader reads under ``src``."""
    patterns = SOURCE_PATTERNS.get(source, CORPUS_PATTERNS)
    return {rel: info for rel, info in sorted(_listing(src).items()) if _matches(rel, patterns)}


def _content_id(src: SourceDir, rel: str, info: dict[str, Any]) -> str:
    if src.is_s3:
        return "etag:" + str(info.get("ETag") or info.get("etag") or "").strip('"')
    path = src.path(rel)
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        _SHA_CACHE[key] = "sha256:" + digest.hexdigest()
    return _SHA_CACHE[key]


def fingerprint(source: str, src: SourceDir) -> tuple[str, int]:
    """``(digest, files)``: sha256 over ``path, size, content id`` of every file ``source`` reads
    (``("", 0)`` when it reads none: a missing or emptied folder never triggers a refresh)."""
    files = source_files(source, src)
    if not files:
        return "", 0
    h = hashlib.sha256()
    for rel, info in files.items():
        h.update(f"{rel}\t{int(info.get('size') or 0)}\t{_content_id(src, rel, info)}\n".encode())
    return h.hexdigest(), len(files)


def discover_sources(data_root: SourceDir) -> list[str]:
    """New corpus folders directly under ``data_root`` (see the module docstring), sorted. Only the top level
    is listed, then each candidate folder (never the dataset folders, which may hold millions of images)."""
    fs = data_root.fs
    base = fs._strip_protocol(data_root.root).rstrip("/")
    if data_root.is_s3:
        fs.invalidate_cache()
    if not fs.exists(base):
        return []
    out = []
    for entry in fs.ls(base, detail=True):
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        if entry.get("type") != "directory" or name in RESERVED_FOLDERS:
            continue
        try:
            validate_partition_key(name)
        except InvalidPartitionKey:
            continue
        if source_files(name, SourceDir(f"{data_root.root}/{name}", s3=data_root.s3)):
            out.append(name)
    return sorted(out)
