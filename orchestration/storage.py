"""One storage root for every table, image and LanceDB database of the pipeline.

The root is a project-local folder (the default) or ``s3://bucket/prefix``. Every read and write goes
through one fsspec filesystem, so local and S3 share a single code path; the native clients that do not
speak fsspec (polars' cloud reader, LanceDB) get their options rendered from the same settings here.

This module is plain Python (no Dagster import): libraries receive a :class:`Storage` from the assets.

Layout under the root::

    tables/<table>/<partition>.parquet     Parquet tables written by polars
    quarantine/<table>/<partition>.parquet rejected rows with reasons
    images/<aa>/<sha256>.<ext>             content-addressed image bytes, referenced by image id
    lancedb/                               LanceDB databases
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import fsspec
import polars as pl

ENV_ROOT = "MEDRWR_STORAGE_ROOT"
ENV_S3_ENDPOINT = "MEDRWR_S3_ENDPOINT_URL"
ENV_PROJECT_DIR = "MEDRWR_PROJECT_DIR"

IMAGE_EXTENSIONS = {"jpg", "jpeg", "png", "bmp", "tif", "tiff", "gif", "webp"}


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
        kw: dict[str, Any] = {"client_kwargs": client}
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


@dataclass
class Storage:
    """A storage root (local folder or ``s3://bucket/prefix``) with table, image and LanceDB helpers."""

    root: str = field(default_factory=default_storage_root)
    s3: S3Settings = field(default_factory=S3Settings.from_env)

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
        """Absolute URI (or local path) of ``parts`` joined under the root."""
        return posixpath.join(self.root, *parts) if parts else self.root

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.uri(*parts))

    def write_bytes(self, data: bytes, *parts: str) -> str:
        """Write ``data`` at ``parts`` under the root (replacing it); returns the URI."""
        path = self.uri(*parts)
        if self.is_s3:
            with self.fs.open(path, "wb") as f:
                f.write(data)
        else:  # plain file I/O: same result as fsspec's local filesystem, without its per-call overhead
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_bytes(data)
        return path

    def read_bytes(self, *parts: str) -> bytes:
        if not self.is_s3:
            return Path(self.uri(*parts)).read_bytes()
        with self.fs.open(self.uri(*parts), "rb") as f:
            return f.read()

    def list(self, *parts: str) -> list[str]:
        """Names (not paths) directly under ``parts``; empty when the folder does not exist."""
        path = self.uri(*parts)
        if not self.fs.exists(path):
            return []
        return sorted(posixpath.basename(p.rstrip("/")) for p in self.fs.ls(path, detail=False))

    def delete(self, *parts: str) -> None:
        path = self.uri(*parts)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    # ---- tables -------------------------------------------------------------------------------
    @staticmethod
    def table_parts(table: str, partition: str | None = None) -> tuple[str, ...]:
        return ("tables", table, f"{partition or '__all__'}.parquet")

    def write_table(self, df: pl.DataFrame, table: str, partition: str | None = None) -> str:
        """Write ``df`` as Parquet at ``tables/<table>/<partition>.parquet``; returns its URI."""
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

    # ---- quarantine ---------------------------------------------------------------------------
    def write_quarantine(self, df: pl.DataFrame, table: str, partition: str | None = None) -> str:
        """Rejected rows of ``table`` for one partition, replaced on every materialization."""
        buf = io.BytesIO()
        df.write_parquet(buf)
        return self.write_bytes(buf.getvalue(), "quarantine", table, f"{partition or '__all__'}.parquet")

    def read_quarantine(self, table: str, partition: str | None = None) -> pl.DataFrame:
        return pl.read_parquet(
            io.BytesIO(self.read_bytes("quarantine", table, f"{partition or '__all__'}.parquet"))
        )

    # ---- content-addressed images ---------------------------------------------------------------
    @staticmethod
    def image_parts(image_id: str) -> tuple[str, str, str]:
        return ("images", image_id[:2], image_id)

    def put_image(self, data: bytes, ext: str) -> str:
        """Store image bytes once under their content id and return the id (no rewrite if present)."""
        image_id = image_id_for(data, ext)
        if not self.exists(*self.image_parts(image_id)):
            self.write_bytes(data, *self.image_parts(image_id))
        return image_id

    def get_image(self, image_id: str) -> bytes:
        return self.read_bytes(*self.image_parts(image_id))

    def image_exists(self, image_id: str) -> bool:
        return self.exists(*self.image_parts(image_id))

    def image_uri(self, image_id: str) -> str:
        return self.uri(*self.image_parts(image_id))

    def existing_images(self, image_ids: list[str] | set[str]) -> set[str]:
        """The subset of ``image_ids`` present in storage, with one listing per shard folder."""
        wanted: dict[str, set[str]] = {}
        for image_id in image_ids:
            wanted.setdefault(image_id[:2], set()).add(image_id)
        present: set[str] = set()
        for shard, ids in wanted.items():
            present |= ids & set(self.list("images", shard))
        return present

    # ---- LanceDB ------------------------------------------------------------------------------
    def lancedb_uri(self, name: str = "kb") -> str:
        return self.uri("lancedb", name)

    def kb_location(self, name: str = "kb"):
        """The LanceDB database ``lancedb/<name>`` as a plain :class:`retrieval.store.KBLocation`."""
        from retrieval.store import KBLocation

        return KBLocation(self.lancedb_uri(name), self.lancedb_storage_options())

    def lancedb_storage_options(self) -> dict[str, str] | None:
        return self.s3.lancedb_options() if self.is_s3 else None

    def polars_storage_options(self) -> dict[str, str] | None:
        return self.s3.polars_options() if self.is_s3 else None

    def describe(self) -> str:
        where = f" (endpoint {self.s3.endpoint_url})" if self.is_s3 and self.s3.endpoint_url else ""
        return f"{self.root}{where}"
