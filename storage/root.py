"""One storage root for every table, image and LanceDB database of the pipeline.

The root is a project-local folder (the default) or ``s3://bucket/prefix``. Every read and write goes
through one fsspec filesystem, so local and S3 share a single code path; the native clients that do not
speak fsspec (polars' cloud reader, LanceDB) get their options rendered from the same settings here.

This module is plain Python (no Dagster import): libraries receive a :class:`Storage` from the assets.

Layout under the root::

    tables/<table>/<partition>.parquet     Parquet tables written by polars
    quarantine/<table>/<partition>.parquet rejected rows with reasons
    gates/<table>/<partition>.json         outcome of the latest gate (status, run id, checks)
    manifests/<table>/<partition>/<run>.json  raw files a root table read (path key, size, sha256/ETag)
    images/<aa>/<sha256>.<ext>             content-addressed image bytes, referenced by image id
    lancedb/                               LanceDB databases

File modes: a published root's files follow the process umask (``0644`` under umask ``022``), as any file
the pipeline's readers, backups and other users would expect; a *private* root (``Storage(private=True)``:
the restricted location of patient data, its staging) writes its files ``0600`` whatever the umask. Both
are written through :func:`tempfile.mkstemp` (always ``0600``) and then given their mode before the rename.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import posixpath
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import fsspec
import polars as pl

from .errors import UncommittedTable, UnsafePath
from .layout import IMAGES, image_key

ENV_ROOT = "MEDRWR_STORAGE_ROOT"
ENV_S3_ENDPOINT = "MEDRWR_S3_ENDPOINT_URL"
ENV_PROJECT_DIR = "MEDRWR_PROJECT_DIR"


def project_dir() -> Path:
    """The folder that holds the project's local state (`.medrwr/`): ``$MEDRWR_PROJECT_DIR`` or the cwd."""
    return Path(os.environ.get(ENV_PROJECT_DIR) or os.getcwd()).resolve()


def default_storage_root() -> str:
    """``$MEDRWR_STORAGE_ROOT`` if set, else ``<project>/.medrwr/storage``."""
    return os.environ.get(ENV_ROOT) or str(project_dir() / ".medrwr" / "storage")


@dataclass(frozen=True)
class S3Settings:
    """How to reach an S3 API. Credentials come from the usual AWS environment variables."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None

    @classmethod
    def from_env(cls) -> S3Settings:
        return cls(
            endpoint_url=os.environ.get(ENV_S3_ENDPOINT) or os.environ.get("AWS_ENDPOINT_URL"),
            region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
            access_key_id=os.environ.get("AWS_ACCESS_KEY_ID"),
            secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
        )

    @property
    def allow_http(self) -> bool:
        return bool(self.endpoint_url and self.endpoint_url.startswith("http://"))

    def s3fs_kwargs(self) -> dict[str, Any]:
        """Options for ``s3fs.S3FileSystem`` (the endpoint goes in ``client_kwargs``)."""
        client: dict[str, Any] = {"region_name": self.region}
        if self.endpoint_url:
            client["endpoint_url"] = self.endpoint_url
        # transient errors (503 SlowDown, throttling, dropped connections) are retried with backoff
        kw: dict[str, Any] = {
            "client_kwargs": client,
            "config_kwargs": {"retries": {"max_attempts": 10, "mode": "standard"}},
        }
        if self.access_key_id:
            kw["key"] = self.access_key_id
            kw["secret"] = self.secret_access_key
        return kw

    def polars_options(self) -> dict[str, str]:
        """``storage_options`` for polars' native cloud reader (object_store spelling)."""
        opts = {"aws_region": self.region or "us-east-1"}
        if self.endpoint_url:
            opts["aws_endpoint_url"] = self.endpoint_url
            opts["aws_allow_http"] = "true" if self.allow_http else "false"
        if self.access_key_id:
            opts["aws_access_key_id"] = self.access_key_id
            opts["aws_secret_access_key"] = self.secret_access_key or ""
        return opts

    def lancedb_options(self) -> dict[str, str]:
        """``storage_options`` for ``lancedb.connect`` (Lance spelling)."""
        opts = {"region": self.region or "us-east-1"}
        if self.endpoint_url:
            opts["aws_endpoint"] = self.endpoint_url
            opts["allow_http"] = "true" if self.allow_http else "false"
        if self.access_key_id:
            opts["aws_access_key_id"] = self.access_key_id
            opts["aws_secret_access_key"] = self.secret_access_key or ""
        return opts


def image_id_for(data: bytes, ext: str) -> str:
    """Content id of an image: ``<sha256 hex>.<ext>`` (lower-case extension, ``jpeg`` spelled ``jpg``)."""
    ext = ext.lower().lstrip(".")
    ext = "jpg" if ext == "jpeg" else ext
    return f"{hashlib.sha256(data).hexdigest()}.{ext}"


def safe_parts(parts: tuple[str, ...]) -> list[str]:
    """Every segment of ``parts`` (split on ``/``) checked: never empty, ``.``, ``..``, absolute, a backslash
    or a control character. A partition key or a file name from a source can therefore never write outside
    the root."""
    out: list[str] = []
    for part in parts:
        if not isinstance(part, str) or not part:
            raise UnsafePath(message=f"empty path part in {parts!r}")
        for seg in part.split("/"):
            if seg in ("", ".", "..") or "\\" in seg or any(ord(c) < 32 or ord(c) == 127 for c in seg):
                raise UnsafePath(
                    message=f"unsafe path part {part!r} in {parts!r}: relative segments, "
                    "absolute paths, backslashes and control characters are refused"
                )
            out.append(seg)
    return out


CONTENT_ADDRESSED = ("images", "clips")


def _key(partition: str | None) -> str:
    """A partition key as a file name: validated (no separators, no ``..``), ``__all__`` when
    unpartitioned."""
    if partition is None:
        return "__all__"
    from .keys import validate_partition_key

    return validate_partition_key(partition)


STAGING_ORPHAN_AGE_S = 24 * 3600.0
"""A staging area untouched this long is an orphan (its step died) and the next staging sweeps it away."""


PRIVATE_FILE_MODE = 0o600
"""Mode of every file a private root (restricted data) writes."""


def current_umask() -> int:
    """The process umask, read without changing it where Linux tells it (``/proc/self/status``); elsewhere
    set and restored at once (``os.umask`` has no getter)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def published_file_mode() -> int:
    """The mode a new published file gets: ``0666`` less the umask (what ``open()`` would have made)."""
    return 0o666 & ~current_umask()


def _disk_error(error: OSError, target: Path, size: int) -> OSError:
    """``error`` of a local write, said with the file, the folder and the size; a full disk (ENOSPC) also
    says how much room is left there."""
    import errno
    import shutil

    if error.errno != errno.ENOSPC:
        return error
    try:
        free = shutil.disk_usage(next(p for p in (target.parent, *target.parents) if p.exists())).free
        room = f"{free:,} bytes free"
    except OSError:
        room = "free space unknown"
    return OSError(
        errno.ENOSPC,
        f"no space left on the device writing {target.name} ({size:,} bytes) into {target.parent} "
        f"({room}): free space there or point MEDRWR_STORAGE_ROOT at a larger disk; nothing was published "
        "by this write (the old file, if any, is intact)",
        str(target),
    )


@dataclass
class Storage:
    """A storage root (local folder or ``s3://bucket/prefix``) with table, image and LanceDB helpers.

    Writes cannot tear: locally a file is written under a temporary name in the same folder and renamed into
    place (``os.replace`` is atomic), on S3 an object appears only when its PUT completes. A content-addressed
    file that already exists is kept only when its size matches (a truncated copy is rewritten). Files
    follow the umask, or are ``0600`` when ``private`` (restricted data; module docstring).
    """

    root: str = field(default_factory=default_storage_root)
    s3: S3Settings = field(default_factory=S3Settings.from_env)
    private: bool = False

    def __post_init__(self) -> None:
        if self.is_s3:
            self.root = self.root.rstrip("/")
        else:
            root = self.root[len("file://") :] if self.root.startswith("file://") else self.root
            self.root = str(Path(root).expanduser().resolve())

    # ---- basics -------------------------------------------------------------------------------
    @property
    def is_s3(self) -> bool:
        return self.root.startswith("s3://")

    @cached_property
    def fs(self) -> fsspec.AbstractFileSystem:
        if self.is_s3:
            return fsspec.filesystem("s3", **self.s3.s3fs_kwargs())
        return fsspec.filesystem("file", auto_mkdir=True)

    def uri(self, *parts: str) -> str:
        """Absolute URI (or local path) of ``parts`` joined under the root; refuses parts that would escape
        it."""
        return posixpath.join(self.root, *safe_parts(parts)) if parts else self.root

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.uri(*parts))

    def size(self, *parts: str) -> int | None:
        """Size in bytes, or None when absent."""
        path = self.uri(*parts)
        if not self.is_s3:
            try:
                return os.stat(path).st_size
            except FileNotFoundError:
                return None
        try:
            return int(self.fs.size(path))
        except FileNotFoundError:
            return None

    def write_bytes(self, data: bytes, *parts: str) -> str:
        """Write ``data`` at ``parts`` under the root (replacing it atomically); returns the URI."""
        path = self.uri(*parts)
        if self.is_s3:
            self.fs.pipe_file(path, data)  # one PUT: the object appears whole or not at all
            self.fs.invalidate_cache(posixpath.dirname(path))
        else:
            target = Path(path)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            except OSError as e:
                raise _disk_error(e, target, len(data)) from e
            try:
                os.fchmod(fd, PRIVATE_FILE_MODE if self.private else published_file_mode())
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, target)
            except BaseException as e:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                if isinstance(e, OSError):
                    raise _disk_error(e, target, len(data)) from e
                raise
        return path

    def put_content_addressed(self, data: bytes, *parts: str) -> str:
        """Write ``data`` at a content-addressed path unless an intact copy (same size) is already there."""
        if self.size(*parts) != len(data):
            self.write_bytes(data, *parts)
        return self.uri(*parts)

    def read_bytes(self, *parts: str) -> bytes:
        if not self.is_s3:
            return Path(self.uri(*parts)).read_bytes()
        with self.fs.open(self.uri(*parts), "rb") as f:
            return f.read()

    def list(self, *parts: str) -> list[str]:
        """Names (not paths) directly under ``parts``; empty when the folder does not exist."""
        path = self.uri(*parts)
        if not self.is_s3:
            try:
                return sorted(n for n in os.listdir(path) if not n.endswith(".tmp"))
            except (FileNotFoundError, NotADirectoryError):
                return []
        if not self.fs.exists(path):
            return []
        return sorted(posixpath.basename(p.rstrip("/")) for p in self.fs.ls(path, detail=False, refresh=True))

    def find(self, *parts: str) -> list[str]:
        """Paths (relative to ``parts``) of every file below ``parts``, sorted."""
        base = self.uri(*parts)
        if not self.fs.exists(base):
            return []
        stripped = self.fs._strip_protocol(base).rstrip("/") + "/"
        return sorted(p[len(stripped) :] for p in self.fs.find(base) if p.startswith(stripped))

    def delete(self, *parts: str) -> None:
        path = self.uri(*parts)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    # ---- tables -------------------------------------------------------------------------------
    @staticmethod
    def table_parts(table: str, partition: str | None = None) -> tuple[str, ...]:
        return ("tables", table, f"{_key(partition)}.parquet")

    def write_table(self, df: pl.DataFrame, table: str, partition: str | None = None) -> str:
        """Write ``df`` as Parquet at ``tables/<table>/<partition>.parquet`` (atomically); returns its URI."""
        buf = io.BytesIO()
        df.write_parquet(buf, compression="zstd", statistics=True)
        return self.write_bytes(buf.getvalue(), *self.table_parts(table, partition))

    def read_table(self, table: str, partition: str | None = None) -> pl.DataFrame:
        """Read one partition (or the unpartitioned table) written by :meth:`write_table`."""
        parts = self.table_parts(table, partition)
        if not self.exists(*parts):
            raise FileNotFoundError(
                f"table {table!r} partition {partition!r} not found at {self.uri(*parts)}: "
                "materialize it first (dagster asset materialize) or check the storage root"
            )
        return pl.read_parquet(io.BytesIO(self.read_bytes(*parts)))

    def table_partitions(self, table: str) -> list[str]:
        return [n[: -len(".parquet")] for n in self.list("tables", table) if n.endswith(".parquet")]

    def unpublish_table(self, table: str, partition: str | None = None) -> bool:
        """Remove a published partition (a gate failed on its latest data); True when one was removed."""
        parts = self.table_parts(table, partition)
        if self.exists(*parts):
            self.delete(*parts)
            return True
        return False

    def publish_table(
        self, df: pl.DataFrame, table: str, partition: str | None, record: dict[str, Any]
    ) -> str:
        """Publish ``df`` with one commit point: its gate record.

        1. the gate record becomes ``publishing``, naming the new table's sha256 and keeping the previous
           record (a crash here: readers still serve the previous table, which the kept record names);
        2. the table is written (atomically: temporary name, then rename; one PUT on S3);
        3. the gate record ``record`` (status ``passed``) naming the table's sha256 replaces it: the commit.

        Readers (:meth:`read_published_table`) serve only a table whose sha256 the gate record names, so a
        crash between 2 and 3 serves nothing (not a table no gate vouched for). Returns the table's URI."""
        buf = io.BytesIO()
        df.write_parquet(buf, compression="zstd", statistics=True)
        data = buf.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        previous = self.read_gate_record(table, partition)
        pending = {"status": "publishing", "table_sha256": digest, "run_id": record.get("run_id")}
        self.write_gate_record(table, partition, {**pending, "previous": previous} if previous else pending)
        uri = self.write_bytes(data, *self.table_parts(table, partition))
        self.write_gate_record(table, partition, {**record, "table_sha256": digest})
        return uri

    def read_published_table(self, table: str, partition: str | None = None) -> pl.DataFrame:
        """Read a partition the way downstream work must: only when its gate record names it.

        A gate record names the table by sha256 (:meth:`publish_table`); a table whose digest is not the one
        its committed record names (or, during a publication, the previous record) raises
        :class:`~storage.errors.UncommittedTable`. A table with no gate record, or one written before gate
        records named digests, is read as it is."""
        parts = self.table_parts(table, partition)
        if not self.exists(*parts):
            return self.read_table(table, partition)  # the usual "not found" error
        data = self.read_bytes(*parts)
        record = self.read_gate_record(table, partition)
        named = None
        if record and record.get("status") == "publishing":
            previous = record.get("previous") or {}
            # the previous record names the table still served; none (a first publication, or a record from
            # before records named digests): nothing is served until the commit
            named = previous.get("table_sha256") or "(none)"
        elif record and record.get("table_sha256"):
            named = record["table_sha256"]
        if named is not None:
            digest = hashlib.sha256(data).hexdigest()
            if digest != named:
                label = f"{table}[{partition}]" if partition else table
                interrupted = record.get("status") == "publishing"
                raise UncommittedTable(
                    f"{label}: the table at {self.uri(*parts)} (sha256 {digest[:16]}) is not the one its "
                    f"gate record {self.uri(*self.gate_parts(table, partition))} commits ("
                    + (
                        f"a publication by run {record.get('run_id')} was interrupted before its commit"
                        if interrupted
                        else f"it names sha256 {named[:16]}: the file changed after publication"
                    )
                    + "), so it is not served. Materialize the partition again."
                )
        return pl.read_parquet(io.BytesIO(data))

    # ---- gate records -------------------------------------------------------------------------
    @staticmethod
    def gate_parts(table: str, partition: str | None = None) -> tuple[str, ...]:
        return ("gates", table, f"{_key(partition)}.json")

    def write_gate_record(self, table: str, partition: str | None, record: dict[str, Any]) -> str:
        """The outcome of the latest gate of ``table``/``partition`` (check names, pass/fail, run id)."""
        return self.write_bytes(
            json.dumps(record, indent=1, sort_keys=True).encode(), *self.gate_parts(table, partition)
        )

    def read_gate_record(self, table: str, partition: str | None = None) -> dict[str, Any] | None:
        parts = self.gate_parts(table, partition)
        return json.loads(self.read_bytes(*parts)) if self.exists(*parts) else None

    # ---- input manifests ----------------------------------------------------------------------
    @staticmethod
    def input_manifest_parts(table: str, partition: str | None, run_id: str) -> tuple[str, ...]:
        """Where the input manifest (raw files read) of one materialization of a root table lives."""
        return ("manifests", table, _key(partition), f"{safe_parts((run_id,))[0]}.json")

    # ---- quarantine ---------------------------------------------------------------------------
    def write_quarantine(self, df: pl.DataFrame, table: str, partition: str | None = None) -> str:
        """Rejected rows of ``table`` for one partition, replaced on every materialization."""
        buf = io.BytesIO()
        df.write_parquet(buf)
        return self.write_bytes(buf.getvalue(), "quarantine", table, f"{_key(partition)}.parquet")

    def read_quarantine(self, table: str, partition: str | None = None) -> pl.DataFrame:
        return pl.read_parquet(io.BytesIO(self.read_bytes("quarantine", table, f"{_key(partition)}.parquet")))

    # ---- content-addressed images ---------------------------------------------------------------
    @staticmethod
    def image_parts(image_id: str) -> tuple[str, str, str]:
        return (IMAGES, *image_key(image_id))

    def put_image(self, data: bytes, ext: str) -> str:
        """Store image bytes once under their content id and return the id (an intact copy is not
        rewritten)."""
        image_id = image_id_for(data, ext)
        self.put_content_addressed(data, *self.image_parts(image_id))
        return image_id

    def get_image(self, image_id: str) -> bytes:
        return self.read_bytes(*self.image_parts(image_id))

    def image_exists(self, image_id: str) -> bool:
        return self.exists(*self.image_parts(image_id))

    def existing_images(self, image_ids: list[str] | set[str]) -> set[str]:
        """The subset of ``image_ids`` present in storage, with one listing per shard folder."""
        wanted: dict[str, set[str]] = {}
        for image_id in image_ids:
            wanted.setdefault(image_key(image_id)[0], set()).add(image_id)
        present: set[str] = set()
        for shard, ids in wanted.items():
            present |= ids & set(self.list(IMAGES, shard))
        return present

    # ---- staging ------------------------------------------------------------------------------
    def staging(self, token: str, staging_root: str | None = None) -> StagedStorage:
        """A view of this root whose writes land in a staging area (``<root>/_staging/<token>`` unless
        ``staging_root`` names another place, e.g. a restricted folder for patient data) until
        :meth:`StagedStorage.promote`; reads see staged files first, then published ones. A staging area
        under ``staging_root`` is private (files ``0600``) as restricted data is; promoted files take the
        published root's mode."""
        area = staging_root or self.uri("_staging")
        if staging_root is None:
            self.sweep_staging()
        return StagedStorage(
            root=self.root,
            s3=self.s3,
            base=self,
            private=self.private,
            area=Storage(
                root=posixpath.join(area, *safe_parts((token,))),
                s3=self.s3,
                private=self.private or staging_root is not None,
            ),
        )

    def sweep_staging(self, older_than_s: float = STAGING_ORPHAN_AGE_S) -> list[str]:
        """Remove staging areas (``_staging/<token>``) whose newest file is older than ``older_than_s``
        seconds (default one day): what a step that died with an exception, or a killed process, left behind.
        The steps that stage write into their area as they go (images, clips, reports) and promote it at
        their end, so a live area is never a day old. Returns the tokens removed."""
        import time

        removed = []
        now = time.time()
        for token in self.list("_staging"):
            newest = self._newest_mtime("_staging", token)
            if newest is not None and now - newest > older_than_s:
                self.delete("_staging", token)
                removed.append(token)
        return removed

    def _newest_mtime(self, *parts: str) -> float | None:
        """Newest modification time (epoch seconds) of the files under ``parts``; None when empty."""
        base = self.uri(*parts)
        if not self.is_s3:
            times = [p.stat().st_mtime for p in Path(base).rglob("*") if p.is_file()]
            return max(times, default=None) if times else Path(base).stat().st_mtime
        infos = self.fs.find(base, detail=True)
        stamps = [i.get("LastModified") for i in infos.values() if i.get("LastModified") is not None]
        return max(t.timestamp() for t in stamps) if stamps else None

    # ---- LanceDB ------------------------------------------------------------------------------
    def lancedb_uri(self, name: str = "kb") -> str:
        return self.uri("lancedb", name)

    def kb_location(self, name: str = "kb"):
        """The LanceDB database ``lancedb/<name>`` as a plain :class:`retrieval.kb.connection.KBLocation`."""
        from retrieval.kb.connection import KBLocation

        return KBLocation(self.lancedb_uri(name), self.lancedb_storage_options())

    def lancedb_storage_options(self) -> dict[str, str] | None:
        return self.s3.lancedb_options() if self.is_s3 else None

    def polars_storage_options(self) -> dict[str, str] | None:
        return self.s3.polars_options() if self.is_s3 else None

    def describe(self) -> str:
        where = f" (endpoint {self.s3.endpoint_url})" if self.is_s3 and self.s3.endpoint_url else ""
        return f"{self.root}{where}"


@dataclass
class StagedStorage(Storage):
    """Writes go to ``area`` (a separate :class:`Storage`); nothing is visible under the published root until
    :meth:`promote` moves every staged file into place. :meth:`discard` throws the staged files away (a failed
    gate). Tables and quarantine are written by the gate, not through this view. Used as a context manager it
    is discarded when the block ends, however it ends (``finally``)."""

    base: Storage | None = None
    area: Storage | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.base is None or self.area is None:
            raise ValueError("StagedStorage needs base and area; use Storage.staging(token)")

    def write_bytes(self, data: bytes, *parts: str) -> str:
        self.area.write_bytes(data, *parts)
        return self.base.uri(*parts)

    def put_content_addressed(self, data: bytes, *parts: str) -> str:
        if self.base.size(*parts) != len(data) and self.area.size(*parts) != len(data):
            self.area.write_bytes(data, *parts)
        return self.base.uri(*parts)

    def exists(self, *parts: str) -> bool:
        return self.area.exists(*parts) or self.base.exists(*parts)

    def size(self, *parts: str) -> int | None:
        staged = self.area.size(*parts)
        return staged if staged is not None else self.base.size(*parts)

    def read_bytes(self, *parts: str) -> bytes:
        return self.area.read_bytes(*parts) if self.area.exists(*parts) else self.base.read_bytes(*parts)

    def list(self, *parts: str) -> list[str]:
        return sorted(set(self.area.list(*parts)) | set(self.base.list(*parts)))

    def delete(self, *parts: str) -> None:
        raise PermissionError("a staged view never deletes published files; discard() drops staged ones")

    def write_table(self, df: pl.DataFrame, table: str, partition: str | None = None) -> str:
        raise PermissionError("tables are published by the gate after the checks pass, not through staging")

    write_quarantine = write_table

    def staged_files(self) -> list[str]:
        """Relative paths of every staged file."""
        return self.area.find()

    def promote(self) -> int:
        """Move every staged file under the published root (content-addressed files already intact there are
        skipped); returns how many files were written. Then the staging area is removed."""
        written = 0
        local = not self.base.is_s3 and not self.area.is_s3
        for rel in self.staged_files():
            size = self.area.size(rel)
            if rel.split("/", 1)[0] in CONTENT_ADDRESSED and self.base.size(rel) == size:
                continue
            if local:  # a rename: atomic, and no copy of the bytes (both roots local; same device or a copy)
                target = Path(self.base.uri(rel))
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.replace(self.area.uri(rel), target)
                    if self.area.private != self.base.private:  # e.g. de-identified clips staged privately
                        os.chmod(target, PRIVATE_FILE_MODE if self.base.private else published_file_mode())
                except OSError:  # another device: copy atomically
                    self.base.write_bytes(self.area.read_bytes(rel), rel)
            else:
                self.base.write_bytes(self.area.read_bytes(rel), rel)
            written += 1
        self.discard()
        return written

    def discard(self) -> None:
        """Remove the staging area and everything in it."""
        self.area.delete()

    def __enter__(self) -> StagedStorage:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """``with store.staging(token) as stage:`` -- the staging area is removed in a ``finally`` whatever
        ends the step (an exception, a failed gate, a full disk, S3 errors; after a promotion it is already
        gone). A failure to remove it never hides the step's own error; the daily sweep
        (:meth:`Storage.sweep_staging`) gets what is left."""
        try:
            self.discard()
        except Exception:
            if exc is None:
                raise
