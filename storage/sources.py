"""Read-only, confined and bounded access to a source folder in its released layout, local or on S3.

Every reader reads its dataset through a :class:`SourceDir`, so these contracts hold for all of them:

- **Confined.** Each relative path a reader passes (a file name in a mapping, an ``img_name`` in a record)
  is checked before anything is opened. It must be relative and stay inside the root once normalized
  (``imgs/../a.jpg`` is ``a.jpg``); ``../x``, ``/etc/x``, ``~/x``, ``C:x``, ``s3://other/x``, backslashes
  and control characters are refused. Locally, its real path (symbolic links resolved) must also lie under
  the root's real path, and the file opened is that real path. A refused path raises :class:`UnsafePath`
  (a :class:`SourceError`) and is never read.
- **Literal.** Names are never patterns: a folder named ``Echo [2024] export`` is read as named, and
  :meth:`SourceDir.glob` matches only the reader's own pattern against the literal names under the root.
- **Bounded.** No read yields more than ``max_file_bytes`` bytes (after ``.gz`` decompression); past it the
  read stops with :class:`FileTooLarge` naming the file and the cap. ``.gz`` files are decompressed as a
  stream, and JSON-lines and CSV files are read row by row, never held whole.
- **Listed files are opened safely.** :meth:`SourceDir.list_entries` walks a local root without following
  links to folders and says, per entry, why it cannot be read (a symbolic link that is broken or leads
  outside the root, a named pipe, socket or device, a folder that cannot be listed) without opening it;
  :meth:`SourceDir.open_listed` opens a listed name literally (a backslash in a POSIX file name is a
  character, not a separator) and only when it is a regular file confined to the root, never blocking (a
  FIFO is refused by ``O_NONBLOCK`` and ``fstat``). Neither puts the root's path in its messages.
- **Row problems stay rows.** :meth:`SourceDir.iter_jsonl` reports per line: invalid JSON, a value that is
  not an object, invalid UTF-8, nesting too deep to parse, lines over ``max_line_bytes``.
  :meth:`SourceDir.iter_csv` reports ragged rows per row.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import io
import json
import os
import posixpath
import re
import stat
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from typing import IO, Any

import fsspec
from fsspec.utils import glob_translate

from .errors import SourceError, UnsafePath
from .root import S3Settings

DEFAULT_MAX_FILE_BYTES = 4 * 1024**3
"""Largest number of bytes one source file may yield (after decompression): 4 GiB."""

DEFAULT_MAX_LINE_BYTES = 64 * 1024**2
"""Longest JSON line read: 64 MiB; a longer line is a row problem, skipped without being held."""

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_DRIVE = re.compile(r"^[A-Za-z]:")
_HOME = re.compile(r"^~([^/]*/|$)")  # ~, ~/x, ~user/x (a file named ~$draft.csv is just a name)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MAGIC = re.compile(r"[*?\[]")
_KINDS = {
    stat.S_IFIFO: "a named pipe",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a folder",
}
_JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


class UnreadableEntry(OSError):
    """A listed entry that is not a regular file inside the root. The message names neither the entry nor the
    root (a folder name may name a patient): the caller says which file it was, by its key."""


class FileTooLarge(SourceError):
    """A file that yields more bytes than the reader's cap (after decompression); reading stopped there."""

    def __init__(self, path: str, limit: int, decompressed: bool = False):
        self.limit = limit
        what = "decompresses to more than" if decompressed else "is larger than"
        super().__init__(
            path,
            f"{what} the cap of {limit:,} bytes",
            "check the file (a decompression bomb?) or raise the source's max_file_bytes",
        )


def normalize_relpath(rel: str) -> str:
    """``rel`` as a normalized path inside a root (``""`` is the root itself).

    Raises :class:`UnsafePath` for anything that is not a plain relative name or that normalizes to a path
    outside the root: absolute paths, ``~`` and ``~user/...``, drive letters, URLs, backslashes, control
    characters, ``..`` that climbs above the root. ``..`` that stays inside (``a/../b``) is removed; a name
    that merely starts with ``~`` (``~$draft.csv``) is an ordinary name.
    """
    problem = None
    if not isinstance(rel, str):
        problem = f"not a path string ({type(rel).__name__})"
    elif _CONTROL.search(rel):
        problem = "control character in the name"
    elif "\\" in rel:
        problem = "backslash in the name (a Windows path?)"
    elif _URL.match(rel):
        problem = "a URL, not a name inside the source folder"
    elif rel.startswith("/"):
        problem = "absolute path"
    elif _DRIVE.match(rel):
        problem = "drive-letter path"
    elif _HOME.match(rel):
        problem = "home-relative path (~)"
    if problem is None:
        norm = posixpath.normpath(rel) if rel else "."
        if norm == ".." or norm.startswith("../"):
            problem = "leaves the source folder (..)"
        else:
            return "" if norm == "." else norm
    raise UnsafePath(
        repr(rel), f"unsafe path: {problem}", "names in a source must be relative paths inside its folder"
    )


class _Capped(io.RawIOBase):
    """A readable stream that raises :class:`FileTooLarge` once more than ``limit`` bytes came through."""

    def __init__(self, inner: IO[bytes], limit: int, path: str, decompressed: bool):
        self._inner, self._limit, self._path, self._decompressed = inner, limit, path, decompressed
        self._count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._inner.readinto(buffer)
        self._count += n or 0
        if self._count > self._limit:
            raise FileTooLarge(self._path, self._limit, self._decompressed)
        return n


def _json_value(text: str) -> tuple[Any, str | None]:
    """``(value, None)`` or ``(None, reason)``: invalid JSON, nesting too deep, numbers too long."""
    try:
        return json.loads(text), None
    except json.JSONDecodeError as e:
        return None, f"malformed JSON line: {e.msg} at column {e.colno}"
    except RecursionError:
        return None, "malformed JSON line: nested too deeply to parse"
    except ValueError as e:  # e.g. an integer longer than Python's digit limit
        return None, f"malformed JSON line: {e}"


@dataclass
class SourceDir:
    """A dataset's folder as released (``/data/slake`` or ``s3://bucket/raw/slake``), read-only.

    ``max_file_bytes`` caps what any one file may yield (after ``.gz`` decompression) and
    ``max_line_bytes`` the length of one JSON line; see the module docstring for the contracts.
    """

    root: str
    s3: S3Settings = field(default_factory=S3Settings.from_env)
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    _real_root: str = field(init=False, repr=False, default="")
    _opened: set[str] = field(init=False, repr=False, default_factory=set)
    _listed: set[str] = field(init=False, repr=False, default_factory=set)

    def __post_init__(self) -> None:
        root = str(self.root)
        if root.startswith("file://"):
            root = root[len("file://") :]
        if _URL.match(root) and not root.startswith("s3://"):
            raise ValueError(f"unsupported source root {root!r}: use a local folder or s3://bucket/prefix")
        if root.startswith("s3://"):
            self.root = root.rstrip("/")
        else:  # literal: no ~ expansion, made absolute so that fsspec and os agree
            self.root = os.path.abspath(root)
            self._real_root = os.path.realpath(self.root)

    @property
    def is_s3(self) -> bool:
        return self.root.startswith("s3://")

    @cached_property
    def fs(self) -> fsspec.AbstractFileSystem:
        if self.is_s3:
            return fsspec.filesystem("s3", **self.s3.s3fs_kwargs())
        return fsspec.filesystem("file")

    # ---- paths ----------------------------------------------------------------------------------------
    def path(self, rel: str) -> str:
        """The full path of ``rel`` under the root, for messages and keys; raises :class:`UnsafePath`."""
        norm = normalize_relpath(rel)
        return posixpath.join(self.root, norm) if norm else self.root

    def _target(self, rel: str) -> str:
        """The path to open for ``rel``: confined to the root, symbolic links resolved locally."""
        full = self.path(rel)
        if self.is_s3:
            return full
        real = os.path.realpath(full)
        if os.path.commonpath([self._real_root, real]) != self._real_root:
            raise UnsafePath(
                full,
                "unsafe path: a symbolic link leads outside the source folder",
                "copy the files into the source folder or point the source at their real folder",
            )
        return real

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self._target(rel))

    def require(self, rel: str, what: str) -> str:
        """Path of ``rel``; raise a :class:`SourceError` naming the file when it is missing."""
        p = self.path(rel)
        if not self.exists(rel):
            raise SourceError(
                p, f"{what} not found", f"check the source folder configured for this dataset ({self.root})"
            )
        return p

    # ---- listing --------------------------------------------------------------------------------------
    def list_files(self, sub: str = "") -> list[str]:
        """Every file under ``sub`` (recursively), as sorted paths relative to the root; names literal."""
        base = self.fs._strip_protocol(self.root).rstrip("/") + "/"
        self._target(sub)  # refuse a sub-folder that leaves the root
        return sorted(p[len(base) :] for p in self.fs.find(self.path(sub)) if p.startswith(base))

    def glob(self, pattern: str) -> list[str]:
        """Files whose path relative to the root matches the reader's ``pattern`` (``*``, ``?``, ``[..]``,
        ``**`` for any depth including none), sorted. Only the pattern is interpreted, never the root."""
        pattern = normalize_relpath(pattern)
        parts = pattern.split("/")
        fixed = next((i for i, p in enumerate(parts) if _MAGIC.search(p)), len(parts))
        matches = re.compile(glob_translate(pattern)).match
        return [p for p in self.list_files("/".join(parts[:fixed])) if matches(p)]

    def list_entries(self) -> list[tuple[str, str | None]]:
        """Every entry under the root that is not a folder, as sorted ``(relative path, problem)``; the
        problem is ``None`` for a regular file (or a link to one inside the root) and otherwise says why it
        cannot be read, without any path. Links to folders are not followed (reported), a folder that cannot
        be listed is reported as one entry. Never opens anything. On S3 every object is a regular file."""
        if self.is_s3:
            return [(rel, None) for rel in self.list_files()]
        out: list[tuple[str, str | None]] = []

        def unlistable(err: OSError) -> None:
            rel = os.path.relpath(err.filename, self.root) if err.filename else "."
            out.append((rel.replace(os.sep, "/"), f"folder cannot be listed ({type(err).__name__})"))

        for folder, dirs, files in os.walk(self.root, onerror=unlistable, followlinks=False):
            for name in sorted(dirs):
                if os.path.islink(os.path.join(folder, name)):
                    rel = os.path.relpath(os.path.join(folder, name), self.root).replace(os.sep, "/")
                    out.append((rel, "a symbolic link to a folder (not followed)"))
            for name in files:
                full = os.path.join(folder, name)
                rel = os.path.relpath(full, self.root).replace(os.sep, "/")
                out.append((rel, self._entry_problem(full)))
        return sorted(out)

    def _entry_problem(self, full: str) -> str | None:
        try:
            st = os.lstat(full)
        except OSError as e:
            return f"cannot be examined ({type(e).__name__})"
        if stat.S_ISLNK(st.st_mode):
            real = os.path.realpath(full)
            if os.path.commonpath([self._real_root, real]) != self._real_root:
                return "a symbolic link that leads outside the source folder"
            try:
                st = os.stat(real)
            except FileNotFoundError:
                return "a broken symbolic link (its target does not exist)"
            except OSError as e:
                return f"a symbolic link whose target cannot be examined ({type(e).__name__})"
        if not stat.S_ISREG(st.st_mode):
            return f"not a regular file ({_KINDS.get(stat.S_IFMT(st.st_mode), 'special file')})"
        return None

    def _listed_target(self, rel: str) -> str:
        """The real path of a name from :meth:`list_entries`, taken literally, confined to the root."""
        parts = rel.split("/")
        if not rel or any(p in ("", ".", "..") for p in parts) or "\x00" in rel:
            raise UnreadableEntry("not a relative file name inside the source folder")
        real = os.path.realpath(os.path.join(self.root, *parts))
        if os.path.commonpath([self._real_root, real]) != self._real_root:
            raise UnreadableEntry("a symbolic link that leads outside the source folder")
        return real

    @contextmanager
    def open_listed(self, rel: str) -> Iterator[IO[bytes]]:
        """A name from :meth:`list_entries` opened as a binary stream when it is a regular file inside the
        root; else :class:`UnreadableEntry` (no path in its message). Locally the name is literal (a
        backslash is a character), the file is opened with ``O_NONBLOCK`` (a FIFO never blocks) and checked
        with ``fstat`` after opening (a file swapped for a pipe or device in between is refused)."""
        if self.is_s3:
            with self.open(rel) as f:
                yield f
            return
        real = self._listed_target(rel)
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC)
        except FileNotFoundError as e:
            raise UnreadableEntry("the file does not exist (a broken symbolic link, or removed)") from e
        except OSError as e:
            raise UnreadableEntry(f"cannot be opened ({type(e).__name__}: {e.strerror})") from e
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise UnreadableEntry(f"not a regular file ({_KINDS.get(stat.S_IFMT(mode), 'special file')})")
            os.set_blocking(fd, True)
            f = os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise
        self._opened.add(rel)
        self._listed.add(rel)
        with f:
            yield f

    # ---- reading --------------------------------------------------------------------------------------
    @contextmanager
    def open(self, rel: str) -> Iterator[IO[bytes]]:
        """The file's raw bytes as a binary stream (no decompression), confined to the root."""
        target = self._target(rel)
        f = self._open_regular(target, rel) if not self.is_s3 else self.fs.open(target, "rb")
        self._opened.add(normalize_relpath(rel))
        with f:
            yield f

    def _open_regular(self, target: str, rel: str) -> IO[bytes]:
        """``target`` opened for reading when it is a regular file (never blocking on a FIFO), else
        :class:`SourceError`."""
        fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise SourceError(
                    self.path(rel),
                    f"not a regular file ({_KINDS.get(stat.S_IFMT(mode), 'special file')})",
                    "replace it with the file it stands for",
                )
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    # ---- lineage --------------------------------------------------------------------------------------
    def files_read(self) -> list[str]:
        """Relative paths of every file opened through this object so far, sorted."""
        return sorted(self._opened)

    def input_manifest(self, key: Any = None) -> list[dict[str, Any]]:
        """One entry per file read: ``path_key`` (the relative path, or ``key(rel)`` where paths may identify
        someone), ``size`` and ``sha256`` (locally) or the S3 ``etag``. What an auditor re-checks later."""
        return [{"path_key": key(rel) if key else rel, **self.fingerprint(rel)} for rel in self.files_read()]

    def fingerprint(self, rel: str) -> dict[str, Any]:
        """``size`` and ``sha256`` (locally) or ``size`` and the S3 ``etag`` of one file, as the input
        manifest records them (:mod:`orchestration.audit` re-checks a manifest with this); raises
        :class:`FileNotFoundError` when the file is absent."""
        target = self._listed_target(rel) if rel in self._listed else self._target(rel)
        if self.is_s3:
            info = self.fs.info(target)
            return {"size": int(info.get("size") or 0), "etag": str(info.get("ETag", "")).strip('"')}
        digest = hashlib.sha256()
        with open(target, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        return {"size": os.path.getsize(target), "sha256": digest.hexdigest()}

    @contextmanager
    def _stream(self, rel: str) -> Iterator[io.BufferedReader]:
        """A buffered binary stream of the file's content, decompressed when it ends in ``.gz``, that
        raises :class:`FileTooLarge` past ``max_file_bytes``."""
        path = self.path(rel)
        gz = rel.endswith(".gz")
        with (
            self.open(rel) as raw,
            gzip.GzipFile(fileobj=raw, mode="rb") if gz else nullcontext(raw) as inner,
        ):
            try:
                yield io.BufferedReader(_Capped(inner, self.max_file_bytes, path, gz), buffer_size=1 << 20)
            except (gzip.BadGzipFile, EOFError, zlib.error) as e:
                raise SourceError(
                    path, f"corrupt gzip stream ({e})", "re-download or re-compress the file"
                ) from e

    def read_bytes(self, rel: str, max_bytes: int | None = None) -> bytes:
        """The file's raw bytes (no decompression); :class:`FileTooLarge` above ``max_bytes``
        (default ``max_file_bytes``), decided from the file's size before reading when it is known."""
        limit = self.max_file_bytes if max_bytes is None else max_bytes
        with self.open(rel) as f:
            size = getattr(f, "size", None) if self.is_s3 else os.fstat(f.fileno()).st_size
            if size is not None and size > limit:
                raise FileTooLarge(self.path(rel), limit)
            data = f.read(limit + 1)
        if len(data) > limit:
            raise FileTooLarge(self.path(rel), limit)
        return data

    def read_text(self, rel: str) -> str:
        """The whole file as text (UTF-8, BOM removed), decompressed when it ends in ``.gz``."""
        with self._stream(rel) as f:
            data = f.read()
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
        except (RecursionError, ValueError) as e:
            problem = (
                "JSON nested too deeply to parse" if isinstance(e, RecursionError) else f"malformed JSON: {e}"
            )
            raise SourceError(
                self.path(rel), problem, "fix the file or restore it from the dataset's release"
            ) from e

    def iter_jsonl(self, rel: str, what: str = "JSON-lines file") -> Iterator[tuple[int, Any, str | None]]:
        """``(line_no, object, None)`` per non-blank line holding a JSON object, else ``(line_no, raw,
        reason)``.

        Streams the file line by line (``.gz`` decompressed on the fly); every bad line is a row problem
        for the caller to quarantine: invalid JSON, a non-object value (``raw`` is the value), invalid
        UTF-8, nesting too deep, a line over ``max_line_bytes`` (``raw`` is ``None``, the line is skipped).
        """
        self.require(rel, what)
        with self._stream(rel) as f:
            line_no = 0
            while line := f.readline(self.max_line_bytes + 1):
                line_no += 1
                if len(line) > self.max_line_bytes and not line.endswith(b"\n"):
                    while line and not line.endswith(b"\n"):  # skip the rest of the line, 1 MiB at a time
                        line = f.readline(1 << 20)
                    yield line_no, None, f"line longer than {self.max_line_bytes:,} bytes"
                    continue
                if line_no == 1:
                    line = line.removeprefix(codecs.BOM_UTF8)
                if not line.strip():
                    continue
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError as e:
                    yield (
                        line_no,
                        line.decode("utf-8", "replace"),
                        f"not UTF-8 text: {e.reason} at byte {e.start}",
                    )
                    continue
                value, err = _json_value(text)
                if err:
                    yield line_no, text.rstrip("\r\n"), err
                elif not isinstance(value, dict):
                    yield line_no, value, f"not a JSON object: {_JSON_TYPES.get(type(value), 'null')}"
                else:
                    yield line_no, value, None

    def iter_csv(
        self, rel: str, what: str = "CSV file", delimiter: str = ",", columns: list[str] | None = None
    ) -> Iterator[tuple[int, Any, str | None]]:
        """``(line_no, {column: value}, None)`` per row, streamed; ``(line_no, fields, reason)`` for a row
        whose number of fields differs from the header's. ``columns`` names the columns of a file without
        a header row. Blank lines are skipped; an empty file, a missing or repeated header name, bad
        quoting or invalid UTF-8 raise :class:`SourceError`."""
        path = self.require(rel, what)
        with self._stream(rel) as raw:
            reader = csv.reader(io.TextIOWrapper(raw, encoding="utf-8-sig", newline=""), delimiter=delimiter)
            try:
                header = list(columns) if columns else next(reader, None)
                if not header:
                    raise SourceError(
                        path,
                        "CSV file is empty or has no header row",
                        "add the header row (or declare the columns)",
                    )
                repeated = sorted({c for c in header if header.count(c) > 1})
                if repeated:
                    raise SourceError(
                        path,
                        f"column names repeated in the header: {repeated}",
                        "give every column a distinct name",
                    )
                while True:
                    line_no = reader.line_num + 1
                    fields = next(reader, None)
                    if fields is None:
                        return
                    if not fields:
                        continue
                    if len(fields) != len(header):
                        yield line_no, fields, f"expected {len(header)} fields, found {len(fields)}"
                    else:
                        yield line_no, dict(zip(header, fields, strict=True)), None
            except csv.Error as e:
                raise SourceError(
                    path, f"malformed CSV at line {reader.line_num}: {e}", "fix the quoting"
                ) from e
            except UnicodeDecodeError as e:
                raise SourceError(path, f"not UTF-8 text ({e})", "re-export the file as UTF-8") from e

    def read_csv(self, rel: str, what: str = "CSV file", delimiter: str = ",") -> list[dict[str, str]]:
        """All rows of a CSV with a header; a file without a header or with a ragged row is an error."""
        rows = []
        for line_no, row, err in self.iter_csv(rel, what, delimiter):
            if err:
                raise SourceError(self.path(rel), f"line {line_no}: {err}", "fix the row or its quoting")
            rows.append(row)
        return rows
