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
  stream, and JSON-lines and CSV files are read row by row, never held whole: no line is read past
  ``max_line_bytes`` (64 MiB), so a 1 GiB line (from a small ``.gz``) costs at most that much memory
  before it is refused. A whole JSON document (:meth:`SourceDir.load_json`) is refused above
  ``max_document_bytes`` (256 MiB) as soon as that many bytes came through; Parquet files are read in
  batches, and a row group (decoded whole by Arrow) declaring more than ``max_document_bytes`` is refused
  before it is decoded.
- **Fields capped.** No text field of a row may exceed ``max_field_bytes`` (1 MiB of UTF-8): released
  datasets have none above a few KiB (longest MedQA/MedMCQA/PubMedQA field: 4.2 K characters), a larger
  one is a corrupt cell, a wrong column, or an attack on every prompt and table read downstream.
- **Listed files are opened safely.** :meth:`SourceDir.list_entries` walks a local root without following
  links to folders and says, per entry, why it cannot be read (a symbolic link that is broken or leads
  outside the root, a named pipe, socket or device, a folder that cannot be listed) without opening it;
  :meth:`SourceDir.open_listed` opens a listed name literally (a backslash in a POSIX file name is a
  character, not a separator) and only when it is a regular file confined to the root, never blocking (a
  FIFO is refused by ``O_NONBLOCK`` and ``fstat``). Neither puts the root's path in its messages.
- **Row problems stay rows.** :meth:`SourceDir.iter_jsonl` reports per line: invalid JSON, a value that is
  not an object, invalid UTF-8, nesting too deep to parse, lines over ``max_line_bytes``, a field over
  ``max_field_bytes``. :meth:`SourceDir.iter_csv` reports per row ragged rows and fields over
  ``max_field_bytes``; a CSV line (or quoted record) over ``max_line_bytes`` refuses the file
  (:class:`LineTooLong`), since the rows after an unbounded line or an unclosed quote cannot be trusted.
  The raw record kept for the quarantine of an oversized field holds its first
  :data:`RAW_FIELD_CHARS` characters and its size, never the field.
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
"""Longest line read (JSON lines, CSV): 64 MiB; a longer JSON line is a row problem, skipped without being
held, a longer CSV line refuses the file; neither is read whole."""

DEFAULT_MAX_FIELD_BYTES = 1024**2
"""Largest text field of a row (UTF-8 bytes): 1 MiB; a row with a larger one is quarantined."""

DEFAULT_MAX_DOCUMENT_BYTES = 256 * 1024**2
"""Largest whole JSON document parsed at once (:meth:`SourceDir.load_json`): 256 MiB."""

RAW_FIELD_CHARS = 200
"""Characters of an oversized field kept in the quarantined raw record."""

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

    def __init__(self, path: str, limit: int, decompressed: bool = False, setting: str = "max_file_bytes"):
        self.limit = limit
        what = "decompresses to more than" if decompressed else "is larger than"
        super().__init__(
            path,
            f"{what} the cap of {limit:,} bytes ({setting})",
            f"check the file (a decompression bomb?) or raise the source's {setting}",
        )


class LineTooLong(SourceError):
    """A CSV line (or quoted record) longer than ``max_line_bytes``: reading stopped there."""


def utf8_size_over(text: str, limit: int) -> int | None:
    """The UTF-8 size of ``text`` when it is over ``limit`` bytes, else ``None`` (encoded only when its
    length in characters could be)."""
    if len(text) * 4 <= limit:
        return None
    size = len(text) if len(text) > limit else len(text.encode("utf-8", "surrogatepass"))
    return size if size > limit else None


def oversized_fields(value: Any, limit: int, path: str = "") -> list[tuple[str, int]]:
    """``(field path, UTF-8 size)`` of every string in ``value`` (nested dicts and lists walked) larger than
    ``limit`` bytes; a dict key path is ``a.b``, a list index ``a[2]``."""
    found: list[tuple[str, int]] = []
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, v = stack.pop()
        if isinstance(v, str):
            size = utf8_size_over(v, limit)
            if size is not None:
                found.append((where or "(value)", size))
        elif isinstance(v, dict):
            stack.extend((f"{where}.{k}" if where else str(k), x) for k, x in v.items())
        elif isinstance(v, list):
            stack.extend((f"{where}[{i}]", x) for i, x in enumerate(v))
    return sorted(found)


def _clip(value: Any) -> Any:
    """``value`` with every long string cut to :data:`RAW_FIELD_CHARS` characters and its size noted (what
    the quarantine keeps of a record with an oversized field)."""
    if isinstance(value, str) and len(value) > RAW_FIELD_CHARS:
        return f"{value[:RAW_FIELD_CHARS]}... [{len(value):,} characters]"
    if isinstance(value, dict):
        return {k: _clip(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clip(v) for v in value]
    return value


def _may_be_oversized(value: Any, limit: int) -> bool:
    """Cheap pre-check for :func:`oversized_fields`: a string longer than ``limit // 4`` characters (which
    may encode to more than ``limit`` bytes) anywhere in ``value``."""
    quick = limit // 4
    stack = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t is str:
            if len(v) > quick:
                return True
        elif t is dict:
            stack.extend(v.values())
        elif t is list:
            stack.extend(v)
    return False


def _field_problem(value: Any, limit: int) -> str | None:
    if not _may_be_oversized(value, limit):
        return None
    big = oversized_fields(value, limit)
    if not big:
        return None
    what = ", ".join(f"{name!r} ({size:,} bytes)" for name, size in big[:5])
    return (
        f"field(s) over the cap of {limit:,} bytes: {what}; a corrupt cell or a wrong column? "
        "(raise the source's max_field_bytes if such fields are real)"
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

    ``max_file_bytes`` caps what any one file may yield (after ``.gz`` decompression), ``max_line_bytes``
    the length of one JSON or CSV line, ``max_field_bytes`` one text field of a row and
    ``max_document_bytes`` a whole JSON document; see the module docstring for the contracts.
    """

    root: str
    s3: S3Settings = field(default_factory=S3Settings.from_env)
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES
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

    def read_text(self, rel: str, max_bytes: int | None = None) -> str:
        """The whole file as text (UTF-8, BOM removed), decompressed when it ends in ``.gz``;
        :class:`FileTooLarge` as soon as more than ``max_bytes`` (default ``max_file_bytes``) came through,
        without reading further."""
        limit = self.max_file_bytes if max_bytes is None else min(max_bytes, self.max_file_bytes)
        setting = "max_file_bytes" if limit == self.max_file_bytes else "max_document_bytes"
        data = bytearray()
        with self._stream(rel) as f:
            while chunk := f.read(1 << 20):  # 1 MiB at a time: never more than the cap (plus 1 MiB) held
                data += chunk
                if len(data) > limit:
                    raise FileTooLarge(self.path(rel), limit, rel.endswith(".gz"), setting)
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise SourceError(self.path(rel), f"not UTF-8 text ({e})", "re-export the file as UTF-8") from e

    def load_json(self, rel: str, what: str = "JSON file", max_bytes: int | None = None) -> Any:
        """Parse a whole JSON document of at most ``max_bytes`` (default ``max_document_bytes``); a syntax
        error names the line and column, a text field over ``max_field_bytes`` refuses the file naming the
        field's path."""
        self.require(rel, what)
        text = self.read_text(rel, self.max_document_bytes if max_bytes is None else max_bytes)
        try:
            value = json.loads(text)
            del text
            problem = _field_problem(value, self.max_field_bytes)
            if problem:
                raise SourceError(
                    self.path(rel), problem, "fix or remove the record, or raise max_field_bytes"
                )
            return value
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
                del text
                if err:
                    yield line_no, _clip(line.decode("utf-8", "replace").rstrip("\r\n")), err
                elif not isinstance(value, dict):
                    yield line_no, _clip(value), f"not a JSON object: {_JSON_TYPES.get(type(value), 'null')}"
                elif problem := _field_problem(value, self.max_field_bytes):
                    yield line_no, _clip(value), problem
                else:
                    yield line_no, value, None

    def _csv_lines(self, raw: IO[bytes], path: str, fed: list[int]) -> Iterator[str]:
        """The decoded lines of a CSV stream for :mod:`csv`, none read past ``max_line_bytes``; ``fed[0]``
        counts the bytes handed over since the caller last reset it (one record), which may not exceed
        ``max_line_bytes`` either (a quoted field spanning lines, an unclosed quote)."""
        line_no = 0
        while line := raw.readline(self.max_line_bytes + 1):
            line_no += 1
            fed[0] += len(line)
            if fed[0] > self.max_line_bytes:
                what = (
                    "line" if len(line) > self.max_line_bytes else "record (a quoted field over many lines?)"
                )
                raise LineTooLong(
                    path,
                    f"{what} ending at line {line_no} is longer than the cap of "
                    f"{self.max_line_bytes:,} bytes; "
                    "reading stopped there, nothing of this file is used",
                    "check the file (an unclosed quote, a missing line break, a decompression bomb?) or "
                    "raise the source's max_line_bytes",
                )
            if line_no == 1:
                line = line.removeprefix(codecs.BOM_UTF8)
            yield line.decode("utf-8")

    def iter_csv(
        self, rel: str, what: str = "CSV file", delimiter: str = ",", columns: list[str] | None = None
    ) -> Iterator[tuple[int, Any, str | None]]:
        """``(line_no, {column: value}, None)`` per row, streamed; ``(line_no, fields, reason)`` for a row
        whose number of fields differs from the header's or with a field over ``max_field_bytes`` (its
        ``fields`` clipped). ``columns`` names the columns of a file without a header row. Blank lines are
        skipped; an empty file, a missing or repeated header name, bad quoting, invalid UTF-8 or a line over
        ``max_line_bytes`` (:class:`LineTooLong`, read no further) raise :class:`SourceError`."""
        path = self.require(rel, what)
        # csv's own field cap (process-wide, 131,072 characters by default) must not undercut ours; records
        # are bounded by max_line_bytes in _csv_lines before csv sees them
        if csv.field_size_limit() < self.max_line_bytes:
            csv.field_size_limit(self.max_line_bytes)
        fed = [0]
        with self._stream(rel) as raw:
            reader = csv.reader(self._csv_lines(raw, path, fed), delimiter=delimiter)
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
                    fed[0] = 0
                    fields = next(reader, None)
                    if fields is None:
                        return
                    if not fields:
                        continue
                    if len(fields) != len(header):
                        yield line_no, _clip(fields), f"expected {len(header)} fields, found {len(fields)}"
                        continue
                    row = dict(zip(header, fields, strict=True))
                    if problem := _field_problem(row, self.max_field_bytes):
                        yield line_no, _clip(row), problem
                    else:
                        yield line_no, row, None
            except csv.Error as e:
                raise SourceError(
                    path, f"malformed CSV at line {reader.line_num}: {e}", "fix the quoting"
                ) from e
            except UnicodeDecodeError as e:
                raise SourceError(path, f"not UTF-8 text ({e})", "re-export the file as UTF-8") from e

    def iter_parquet(
        self, rel: str, what: str = "Parquet file", batch_rows: int = 1024
    ) -> Iterator[tuple[int, dict[str, Any], str | None]]:
        """``(row index, {column: value}, None)`` per row of a Parquet file, read ``batch_rows`` rows at a
        time from the open file (never the whole file in memory); ``(index, clipped row, reason)`` for a row
        with a text field over ``max_field_bytes``. Refused before any row is decoded when the footer declares
        more uncompressed data than ``max_file_bytes`` (the writer's sizes: an honest guard, not proof
        against a forged footer); an unreadable file raises :class:`SourceError`."""
        import pyarrow.parquet as pq

        path = self.require(rel, what)
        with self.open(rel) as f:
            try:
                pf = pq.ParquetFile(f)
                meta = pf.metadata
                declared = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
            except Exception as e:  # noqa: BLE001 - pyarrow raises several error types for bad files
                raise SourceError(
                    path,
                    f"not a readable Parquet file ({type(e).__name__}: {e})",
                    "re-download or re-export the file",
                ) from e
            if declared > self.max_file_bytes:
                raise SourceError(
                    path,
                    f"declares {declared:,} bytes of uncompressed data, over the cap of "
                    f"{self.max_file_bytes:,} bytes",
                    "split the file or raise the source's max_file_bytes",
                )
            # a row group is decoded whole: one larger than a JSON document may be is refused before that
            for i in range(meta.num_row_groups):
                if (size := meta.row_group(i).total_byte_size) > self.max_document_bytes:
                    raise SourceError(
                        path,
                        f"row group {i} declares {size:,} bytes of uncompressed data, over the cap of "
                        f"{self.max_document_bytes:,} bytes for one decoded unit (max_document_bytes)",
                        "rewrite the file with smaller row groups (e.g. row_group_size=10_000) or raise "
                        "the source's max_document_bytes",
                    )
            index = 0
            try:
                for batch in pf.iter_batches(batch_size=batch_rows):
                    for row in batch.to_pylist():
                        if problem := _field_problem(row, self.max_field_bytes):
                            yield index, _clip({k: v for k, v in row.items() if isinstance(v, str)}), problem
                        else:
                            yield index, row, None
                        index += 1
            except (OSError, ValueError) as e:  # ArrowIOError, ArrowInvalid: a corrupt page
                raise SourceError(
                    path,
                    f"not a readable Parquet file at row {index} ({type(e).__name__}: {e})",
                    "re-download or re-export the file",
                ) from e

    def read_csv(self, rel: str, what: str = "CSV file", delimiter: str = ",") -> list[dict[str, str]]:
        """All rows of a CSV with a header; a file without a header or with a ragged row is an error."""
        rows = []
        for line_no, row, err in self.iter_csv(rel, what, delimiter):
            if err:
                raise SourceError(self.path(rel), f"line {line_no}: {err}", "fix the row or its quoting")
            rows.append(row)
        return rows
