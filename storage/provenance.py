"""Code and content provenance recorded in manifests and checked by the audit.

- :func:`git_commit`: the code version (one definition for the assets, the trainer and the audit command).
- :func:`folder_digest`: the identity of a folder of files (a model's weights and configs).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

ENV_GIT_COMMIT = "MEDRWR_GIT_COMMIT"
PROJECT_DIR = Path(__file__).resolve().parents[1]


def git_commit(explicit: str | None = None) -> str:
    """The code version: ``explicit`` when given, else ``MEDRWR_GIT_COMMIT`` (set in images), else
    ``git rev-parse HEAD`` of the project (with ``-dirty`` when tracked files have uncommitted changes), else
    ``unknown``."""
    if explicit:
        return explicit
    if os.environ.get(ENV_GIT_COMMIT):
        return os.environ[ENV_GIT_COMMIT]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=PROJECT_DIR,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_DIR,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of one file, read in chunks (never the whole file in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def folder_digest(local: str | Path) -> str:
    """sha256 over the relative names and the sha256 of every file in ``local``, in sorted order (a model's
    identity, recorded as ``weights_sha256`` in its manifest)."""
    h = hashlib.sha256()
    root = Path(local)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(bytes.fromhex(file_sha256(path)))
    return h.hexdigest()
