"""Read-only access to a source folder in its released layout, local or on S3, through fsspec."""

from __future__ import annotations

import csv
import gzip
import io
import json
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO

import fsspec

from .storage import S3Settings


class SourceError(Exception):
    """A whole source file is unusable. The message names the file, the problem and the fix."""

    def __init__(self, path: str, problem: str, fix: str):
        self.path, self.problem, self.fix = path, problem, fix
        super().__init__(f"{path}: {problem}. {fix}")


@dataclass
class SourceDir:
    """A dataset's folder as released (``/data/slake`` or ``s3://bucket/raw/slake``)."""

    root: str
    s3: S3Settings = field(default_factory=S3Settings.from_env)

    def __post_init__(self) -> None:
        self.root = str(self.root).rstrip("/")

    @cached_property
    def fs(self) -> fsspec.AbstractFileSystem:
        if self.root.startswith("s3://"):
            return fsspec.filesystem("s3", **self.s3.s3fs_kwargs())
        return fsspec.filesystem("file")

    def path(self, rel: str) -> str:
        return posixpath.join(self.root, rel) if rel else self.root

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.path(rel))

    def require(self, rel: str, what: str) -> str:
        """Path of ``rel``; raise a :class:`SourceError` naming the file when it is missing."""
        p = self.path(rel)
        if not self.fs.exists(p):
            raise SourceError(p, f"{what} not found", f"check the source folder configured for this dataset ({self.root})")
        return p

    def read_bytes(self, rel: str) -> bytes:
        if not self.root.startswith("s3://"):  # plain file I/O locally, without fsspec's per-call overhead
            return Path(self.path(rel)).read_bytes()
        with self.fs.open(self.path(rel), "rb") as f:
            return f.read()

    def open(self, rel: str) -> BinaryIO:
        """A seekable binary file object for ``rel`` (read in parts, never whole); close it after use."""
        if not self.root.startswith("s3://"):
            return open(self.path(rel), "rb")  # noqa: SIM115 - the caller closes it
        return self.fs.open(self.path(rel), "rb")

    def files(self) -> list[str]:
        """Every file under the root, recursively, as sorted relative paths. The root and the names are
        taken literally (no glob: a folder named ``Echo [2024] export`` is listed like any other)."""
        base = self.fs._strip_protocol(self.root).rstrip("/") + "/"
        return sorted(p[len(base) :] for p in self.fs.find(self.root) if p.startswith(base))

    def read_text(self, rel: str) -> str:
        data = self.read_bytes(rel)
        if rel.endswith(".gz"):
            data = gzip.decompress(data)
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise SourceError(self.path(rel), f"not UTF-8 text ({e})", "re-export the file as UTF-8") from e

    def load_json(self, rel: str, what: str = "JSON file") -> Any:
        """Parse a whole JSON document; a syntax error names the line and column."""
        self.require(rel, what)
        text = self.read_text(rel)
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise SourceError(
                self.path(rel),
                f"malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}",
                "fix the file or restore it from the dataset's release",
            ) from e

    def iter_jsonl(self, rel: str, what: str = "JSON-lines file") -> Iterator[tuple[int, Any, str | None]]:
        """``(line_no, record or None, error or None)`` per non-blank line: bad lines are row-level problems."""
        self.require(rel, what)
        for i, line in enumerate(self.read_text(rel).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                yield i, json.loads(line), None
            except json.JSONDecodeError as e:
                yield i, line, f"malformed JSON line: {e.msg} at column {e.colno}"

    def read_csv(self, rel: str, what: str = "CSV file", delimiter: str = ",") -> list[dict[str, str]]:
        """All rows of a CSV with a header; a file without a header or with ragged rows is an error."""
        self.require(rel, what)
        text = self.read_text(rel)
        reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
        if not reader.fieldnames:
            raise SourceError(self.path(rel), "CSV file is empty or has no header row", "add the header row")
        rows = []
        try:
            for row in reader:
                rows.append(row)
        except csv.Error as e:
            raise SourceError(self.path(rel), f"malformed CSV at line {reader.line_num}: {e}", "fix the quoting") from e
        return rows

    def glob(self, pattern: str) -> list[str]:
        """Paths relative to the root that match ``pattern``, sorted."""
        # fsspec returns S3 paths without the ``s3://`` protocol: strip it from the root too
        base = self.fs._strip_protocol(self.root).rstrip("/") + "/"
        return sorted(p[len(base) :] if p.startswith(base) else p for p in self.fs.glob(self.path(pattern)))


def validate_partition_key(key: str) -> str:
    """``key`` if it is safe as a partition key (it names files under the storage root); else ValueError.

    Refused: empty keys, ``.``/``..``, any ``/`` or ``\\``, control characters, keys over 128 characters.
    """
    if not isinstance(key, str) or not key or key in (".", "..") or len(key) > 128 or any(
            c in "/\\" or ord(c) < 32 or ord(c) == 127 for c in key):
        raise ValueError(f"invalid partition key {key!r}: use 1-128 characters without '/', '\\\\', control "
                         "characters, and not '.' or '..' (it names files under the storage root)")
    return key
