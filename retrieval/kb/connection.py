"""Where a KB database lives and who may write it.

A :class:`KBLocation` is plain values (URI and object-store options). Writers: one writer per KB database at a
time: Dagster's ``kb_writer`` pool (limit 1) is the guard in production (its slot claim is atomic on
Postgres). On SQLite, the laptop default, the claim is not atomic across processes: two run workers can both
hold a one-slot pool (measured: 2 of 8 simultaneous claims), so writers of a local KB also take
:func:`writer_lock`, an OS file lock in the database folder.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

WRITER_LOCK = ".kb_writer.lock"


@dataclass(frozen=True)
class KBLocation:
    """Where a LanceDB database lives: a local folder or ``s3://`` URI, and LanceDB's object-store options."""

    uri: str
    storage_options: dict[str, str] | None = None

    def connect(self):
        import lancedb

        return lancedb.connect(self.uri, storage_options=self.storage_options)


def local_root(location: KBLocation) -> Path | None:
    """The folder of a local database (``None`` for an object-store URI such as ``s3://``)."""
    uri = location.uri
    if uri.startswith("file://"):
        return Path(uri.removeprefix("file://"))
    return None if "://" in uri else Path(uri)


@contextmanager
def writer_lock(
    location: KBLocation, timeout_s: float = 3600.0, log: Callable[[str], None] | None = None
) -> Iterator[Path | None]:
    """Hold the database's writer lock (a ``filelock`` OS lock on ``<db>/.kb_writer.lock``) for the block.

    Local databases only: for an object-store URI nothing is locked here (``None`` is yielded) and the
    ``kb_writer`` pool on a Postgres-backed instance is the guard (module docstring). The OS drops the lock
    when its process dies, so a killed writer never leaves it held. ``log`` gets one line after release with
    the wall-clock times (``time.time()``) the lock was held from and to, both taken while it was held.
    """
    root = local_root(location)
    if root is None:
        yield None
        return
    from filelock import FileLock, Timeout

    root.mkdir(parents=True, exist_ok=True)
    path = root / WRITER_LOCK
    lock = FileLock(str(path), timeout=timeout_s)
    asked = time.time()
    try:
        lock.acquire()
    except Timeout as exc:
        raise TimeoutError(
            f"{path}: another writer of this knowledge base has held its lock for over "
            f"{timeout_s:.0f} s; find that run (lsof {path}) and let it finish or stop it, "
            "then retry"
        ) from exc
    held_from = time.time()
    try:
        yield path
    finally:
        held_to = time.time()
        lock.release()
        if log is not None:
            log(
                f"kb writer lock {path} held from {held_from:.6f} to {held_to:.6f} "
                f"(waited {held_from - asked:.3f} s)"
            )


def connect(location: KBLocation):
    """A LanceDB connection to ``location`` (local or S3)."""
    return location.connect()
