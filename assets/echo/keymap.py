"""The file-key map: the only link from a pseudonymous file key back to an input path.

Outputs, quarantine rows and metadata name an input file only by its key (``f_<16 hex>``,
:func:`assets.echo.deid.file_key`). To trace a quarantined file, an authorised person reads this map,
which is written **only** to a restricted location the deployment names: a local folder or a URI
(``s3://restricted-bucket/echo-keymaps``) with the same access rules as the raw source data, and never
inside the published storage root (:func:`write_key_map` refuses that). Layout::

    <location>/echo_studies/<source>.keymap.csv   columns: file_key, relative_path, source, salt_fingerprint

One file per source, rewritten on every read of that source (it lists the files seen that time). Local
files are written under a temporary name, renamed, and made readable by their owner only (mode 600).
Plain library (no Dagster).
"""

from __future__ import annotations

import csv
import io
import os
import posixpath
from pathlib import Path

import fsspec


class KeyMapLocationError(ValueError):
    """The key map would land where published data lives, or nowhere."""


def _norm(uri: str) -> str:
    if "://" in uri and not uri.startswith("file://"):
        return uri.rstrip("/")
    return str(Path(uri.removeprefix("file://")).expanduser().resolve())


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def key_map_uri(location: str, source: str) -> str:
    """Where :func:`write_key_map` writes the map of ``source`` under ``location``."""
    return posixpath.join(_norm(location), "echo_studies", f"{source}.keymap.csv")


def write_key_map(
    key_map: dict[str, str],
    location: str,
    *,
    source: str,
    salt_fingerprint: str,
    published_root: str,
    storage_options: dict | None = None,
) -> str:
    """Write ``key_map`` (file key -> path relative to the source root) for ``source``; returns its URI.

    Raises :class:`KeyMapLocationError` when ``location`` is empty or the map would fall inside
    ``published_root`` (the storage root whose content is published).
    """
    if not location:
        raise KeyMapLocationError(
            "no restricted location for the file-key map: name a folder or URI outside the "
            "published storage root, with the access rules of the raw data"
        )
    target = key_map_uri(location, source)
    if _inside(target, _norm(published_root)):
        raise KeyMapLocationError(
            "the file-key map location is inside the published storage root: choose a "
            "restricted folder or bucket outside it"
        )
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["file_key", "relative_path", "source", "salt_fingerprint"])
    for key, rel in sorted(key_map.items()):
        w.writerow([key, rel, source, salt_fingerprint])
    data = buf.getvalue().encode()
    if "://" in target:
        with fsspec.open(target, "wb", **(storage_options or {})) as f:
            f.write(data)
        return target
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return str(path)


def read_key_map(uri: str, storage_options: dict | None = None) -> dict[str, str]:
    """The map written by :func:`write_key_map` (file key -> relative path)."""
    with fsspec.open(uri, "rt", **(storage_options or {})) as f:
        return {r["file_key"]: r["relative_path"] for r in csv.DictReader(f)}
