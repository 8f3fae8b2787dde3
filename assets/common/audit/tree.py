"""The audit's lineage tree: checks, nodes and the result (plain data, no Dagster)."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

OK, CHANGED, MISSING, UNVERIFIED = "ok", "CHANGED", "MISSING", "unverified"
FAILING = (CHANGED, MISSING)
MODEL_ASSETS = {"base": "base_model", "stage1": "stage1_checkpoint", "stage2": "stage2_checkpoint"}
KB_INDEXES = ("kb_text_index", "kb_image_index")
KEYED_INPUTS = {"echo_studies": "pseudonymous path key not in a readable key map (restricted root)"}


class TargetNotFound(LookupError):
    """The checkpoint or report named is not published (or not in the instance)."""


@dataclass
class Check:
    """One verification: what was recorded, what is there now, and the verdict."""

    kind: str  # raw file, input manifest, kb tag, items file, items data version, weights, manifest digest
    name: str
    status: str
    recorded: dict[str, Any] = field(default_factory=dict)
    found: dict[str, Any] = field(default_factory=dict)
    note: str = ""


@dataclass
class Node:
    """One materialization (asset, partition, run) of the chain and what was checked about it."""

    asset: str
    partition: str | None = None
    run_id: str | None = None
    at: str | None = None
    data_version: str | None = None
    code_version: str | None = None
    current_code_version: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    children: list[Node] = field(default_factory=list)
    shown_above: bool = False  # the same materialization appears earlier in the tree

    @property
    def label(self) -> str:
        return f"{self.asset}[{self.partition}]" if self.partition else self.asset

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass
class AuditResult:
    target: str
    root: Node
    storage_root: str
    instance: bool
    git_commit_now: str
    # an input that cannot be checked is a failure unless the auditor accepts it (--allow-unverified)
    allow_unverified: bool = False

    def checks(self) -> list[Check]:
        return [c for n in self.root.walk() if not n.shown_above for c in n.checks]

    def summary(self) -> dict[str, Any]:
        out: dict[str, dict[str, int]] = {}
        for c in self.checks():
            out.setdefault(c.kind, {}).setdefault(c.status, 0)
            out[c.kind][c.status] += 1
        return out

    @property
    def failures(self) -> list[Check]:
        failing = FAILING if self.allow_unverified else (*FAILING, UNVERIFIED)
        return [c for c in self.checks() if c.status in failing]

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "storage_root": self.storage_root,
            "dagster_instance": self.instance,
            "git_commit_now": self.git_commit_now,
            "ok": self.ok,
            "allow_unverified": self.allow_unverified,
            "summary": self.summary(),
            "failures": [asdict(c) for c in self.failures],
            "tree": asdict(self.root),
        }


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds") if ts else None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_digest(manifest_json: str) -> str:
    """The short digest of a model's lineage manifest that eval reports cite (``manifest <digest>``)."""
    return _sha256(manifest_json.encode())[:16]


def _meta_value(metadata: dict, key: str) -> Any:
    v = metadata.get(key)
    return getattr(v, "value", v)
