"""Lineage for auditors: the whole upstream chain of a checkpoint or an evaluation report, verified.

    python -m orchestration.audit checkpoint:stage1 [--profile smoke] [--json]
    python -m orchestration.audit report:<run id | path of reports/<run id>/report.md>

Given a target, :func:`audit` walks the asset graph upstream from the materialization that produced it, down to
the raw files the root tables read, and prints one tree:

- every asset (partition) on the way, with the Dagster run that materialized it, its data version and the code
  version it ran under (and today's code version when it differs);
- for a model: its lineage manifest (items table and data version, items file sha256, KB table/tag/version, text
  and image embedder, training config and its hash, git commit) and the run config of the Dagster run;
- for a KB index: the LanceDB tag, version, physical table and embedder identity (model id and fingerprint);
- for a root table: its input manifest (``manifests/<table>/<partition>/<run>.json``, written by the gate) and
  every raw file in it (path key, size, sha256 or S3 ETag).

Which upstream version: with the Dagster instance (``$DAGSTER_HOME``), the latest materialization of each parent
partition *before* the child's materialization (so a later re-run upstream does not hide what was used; the tree
says so). Without it, the published version of each parent (gate record), with a note.

Verification (each check ``ok``, ``CHANGED`` or ``MISSING``; ``unverified`` when it cannot be checked): every raw
file is re-hashed against the configured sources (the ``sources`` resource's settings, so local folders and S3
both work; on S3 the ETag is compared); every input manifest against the digest recorded in the
materialization; the KB tag must still exist in LanceDB at the recorded version; a model's items file, item data
versions and KB tag must agree with the upstream nodes; the model folder must still hold its weights (hashed with
``--weights``). The command exits 1 when anything is CHANGED or MISSING, 2 when the target is not found.

The walk reads the storage root and the instance only; it never writes. The Dagster instance and the asset
graph are optional inputs (this module is in ``orchestration/`` and may import Dagster).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import posixpath
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .storage import Storage

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
        return [c for c in self.checks() if c.status in FAILING]

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "storage_root": self.storage_root, "dagster_instance": self.instance,
                "git_commit_now": self.git_commit_now, "ok": self.ok, "summary": self.summary(),
                "failures": [asdict(c) for c in self.failures], "tree": asdict(self.root)}


# ---- the walk -------------------------------------------------------------------------------------------
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


class Auditor:
    """Builds the lineage tree of a target from a storage root, the raw sources and (optionally) the Dagster
    instance and asset graph."""

    def __init__(self, store: Storage, sources, instance=None, graph=None, verify_weights: bool = False,
                 verify: bool = True):
        self.store, self.sources, self.instance, self.graph = store, sources, instance, graph
        self.verify_weights, self.verify = verify_weights, verify
        self._seen: dict[tuple, Node] = {}
        self._source_dirs: dict[str, Any] = {}
        self._key_maps: dict[str, dict[str, str]] = {}
        self.restricted: Storage | None = None

    # -- Dagster instance (optional) --
    def _records(self, asset: str, partition: str | None = None, before: int | None = None, limit: int = 1):
        if self.instance is None:
            return []
        from dagster import AssetKey, AssetRecordsFilter

        flt = AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[partition] if partition else None,
                                 before_storage_id=before)
        return list(self.instance.fetch_materializations(flt, limit=limit).records)

    def _latest_per_partition(self, asset: str, before: int | None) -> dict[str | None, Any]:
        latest: dict[str | None, Any] = {}
        for rec in self._records(asset, None, before, limit=10_000):  # newest first
            latest.setdefault(rec.partition_key, rec)
        return latest

    def _parents(self, asset: str) -> list[tuple[str, bool]]:
        """``(parent asset, partitioned)`` of ``asset`` in the code location's asset graph."""
        if self.graph is None:
            return []
        from dagster import AssetKey

        node = self.graph.get(AssetKey(asset))
        return [(k.to_user_string(), self.graph.get(k).is_partitioned) for k in sorted(node.parent_keys)]

    def _code_version_now(self, asset: str) -> str | None:
        if self.graph is None:
            return None
        from dagster import AssetKey

        return self.graph.get(AssetKey(asset)).code_version

    # -- nodes --
    def node(self, asset: str, partition: str | None, record=None) -> Node:
        """The node of one materialization (``record``: a Dagster event record; else the published version)."""
        gate = self.store.read_gate_record(asset, partition) or {}
        run_id = record.run_id if record is not None else gate.get("run_id")
        key = (asset, partition, run_id)
        if key in self._seen:
            first = self._seen[key]
            return Node(asset, partition, run_id, first.at, first.data_version, first.code_version, shown_above=True)
        node = Node(asset, partition, run_id, current_code_version=self._code_version_now(asset))
        self._seen[key] = node
        metadata: dict[str, Any] = {}
        if record is not None:
            mat = record.asset_materialization
            tags = mat.tags or {}
            metadata = dict(mat.metadata or {})
            node.at = _iso(record.timestamp)
            node.data_version = tags.get("dagster/data_version")
            node.code_version = tags.get("dagster/code_version")
        else:
            node.at = gate.get("at")
            if self.instance is None:
                node.notes.append("no Dagster instance: the published version is shown (gate record)")
        if not gate:
            node.notes.append("no gate record under the storage root")
        elif gate.get("run_id") != run_id:
            node.notes.append(f"re-materialized since: the published version is run {gate.get('run_id')} "
                              f"({gate.get('status')}, {gate.get('at')})")
        elif gate.get("status") != "passed":
            node.notes.append(f"its latest gate {gate.get('status')}: {gate.get('failed_checks')}")
        if node.code_version and node.current_code_version and node.code_version != node.current_code_version:
            node.notes.append(f"code version today: {node.current_code_version}")
        self._input_manifest(node, metadata)
        if asset in MODEL_ASSETS.values():
            self._model(node, metadata, published=gate.get("run_id") == run_id)
        if asset in KB_INDEXES:
            self._kb_index(node, metadata, published=gate.get("run_id") == run_id)
        if asset == "eval_report":
            self._report(node, metadata)
        before = record.storage_id if record is not None else None
        for parent, partitioned in self._parents(asset):
            node.children.extend(self._parent_nodes(parent, partitioned, before))
        self._cross_checks(node)
        return node

    def _parent_nodes(self, parent: str, partitioned: bool, before: int | None) -> list[Node]:
        if self.instance is not None:
            recs = self._latest_per_partition(parent, before)
            if recs:
                return [self.node(parent, p, r) for p, r in sorted(recs.items(), key=lambda kv: kv[0] or "")]
        if partitioned:
            return [self.node(parent, p) for p in self.store.table_partitions(parent)]
        if self.store.exists(*self.store.table_parts(parent)) or self.store.read_gate_record(parent):
            return [self.node(parent, None)]
        return [Node(parent, notes=["never materialized (no record, no published table)"])]

    # -- input manifests and raw files --
    def _input_manifest(self, node: Node, metadata: dict) -> None:
        expected = _meta_value(metadata, "input_manifest_sha256")
        if not node.run_id:
            return
        parts = Storage.input_manifest_parts(node.asset, node.partition, node.run_id)
        recorded_manifest = bool(expected) or bool(self.store.list("manifests", node.asset))
        if not self.store.exists(*parts):
            if recorded_manifest:
                node.checks.append(Check("input manifest", self.store.uri(*parts), MISSING,
                                         {"sha256": expected} if expected else {}))
            return
        body = self.store.read_bytes(*parts)
        digest = _sha256(body)
        status = OK if not expected or expected == digest else CHANGED
        node.checks.append(Check("input manifest", self.store.uri(*parts), status,
                                 {"sha256": expected} if expected else {}, {"sha256": digest},
                                 "" if expected else "no digest recorded (no Dagster record): not compared"))
        files = json.loads(body).get("files") or []
        node.facts["input_manifest"] = self.store.uri(*parts)
        node.facts["raw_files"] = len(files)
        node.facts["raw_bytes"] = int(sum(f.get("size", 0) for f in files))
        if self.verify:
            for entry in files:
                node.checks.append(self._raw_file(node, entry))

    def _source(self, dataset: str):
        if dataset not in self._source_dirs:
            self._source_dirs[dataset] = self.sources.source(dataset)
        return self._source_dirs[dataset]

    def _locate(self, node: Node, path_key: str) -> tuple[Any, str] | str:
        """``(SourceDir, relative path)`` of a manifest entry, or why it cannot be re-read."""
        if node.asset in KEYED_INPUTS:
            return self._keyed(node, path_key)
        if node.asset == "kb_image_cases":  # entries are "<corpus>/<path>"
            corpus, _, rel = path_key.partition("/")
            return self._source(corpus), rel
        if node.partition:
            return self._source(node.partition), path_key
        return "no source is known for an unpartitioned table"

    def _keyed(self, node: Node, path_key: str) -> tuple[Any, str] | str:
        """An echo file key resolved through the source's key map in the restricted root, when this auditor
        can read it (``MEDRWR_RESTRICTED_ROOT``, default ``<project>/.medrwr/restricted``)."""
        import csv
        import io

        from .sources import SourceDir
        from .storage import project_dir

        if self.restricted is None:
            self.restricted = Storage(root=os.environ.get("MEDRWR_RESTRICTED_ROOT")
                                      or str(project_dir() / ".medrwr" / "restricted"), s3=self.store.s3)
        source = node.partition or ""
        if source not in self._key_maps:
            parts = ("keymaps", "echo_studies", f"{source}.keymap.csv")
            try:
                text = self.restricted.read_bytes(*parts).decode() if self.restricted.exists(*parts) else ""
            except Exception:  # no access to the restricted root: the keys stay opaque
                text = ""
            self._key_maps[source] = {r["file_key"]: r["relative_path"] for r in csv.DictReader(io.StringIO(text))}
        rel = self._key_maps[source].get(path_key)
        if rel is None:
            return KEYED_INPUTS[node.asset]
        if source == "synthetic" and not self.sources.has_override("echo_synthetic"):
            src = SourceDir(self.restricted.uri("sources", "echo", "synthetic"), s3=self.restricted.s3)
        else:
            src = self.sources.echo_source(source)
        return src, rel

    def _raw_file(self, node: Node, entry: dict) -> Check:
        key = entry.get("path_key", "")
        recorded = {k: entry[k] for k in ("size", "sha256", "etag") if k in entry}
        where = self._locate(node, key)
        if isinstance(where, str):
            return Check("raw file", key, UNVERIFIED, recorded, note=where)
        src, rel = where
        name = src.path(rel) if rel else key
        try:
            found = src.fingerprint(rel)
        except (FileNotFoundError, IsADirectoryError):
            return Check("raw file", name, MISSING, recorded)
        except Exception as e:  # unsafe path, unreachable store: not verifiable, said so
            return Check("raw file", name, MISSING, recorded, note=f"{type(e).__name__}: {e}")
        if "sha256" in recorded and "sha256" in found:
            same = found["sha256"] == recorded["sha256"] and found["size"] == recorded.get("size", found["size"])
        elif "etag" in recorded and "etag" in found:
            same = found["etag"] == recorded["etag"] and found["size"] == recorded.get("size", found["size"])
        else:
            return Check("raw file", name, UNVERIFIED, recorded, found,
                         "recorded and current hashes are of different kinds (the source moved between local and S3)")
        return Check("raw file", name, OK if same else CHANGED, recorded, found)

    # -- models --
    def _model(self, node: Node, metadata: dict, published: bool) -> None:
        lineage = _meta_value(metadata, "lineage")
        row = None
        if self.store.exists(*self.store.table_parts(node.asset)):
            row = self.store.read_table(node.asset).row(0, named=True)
        if row is not None and published:
            manifest = json.loads(row["manifest"])
            node.facts["manifest_digest"] = manifest_digest(row["manifest"])
        elif lineage is None and row is not None:
            manifest = json.loads(row["manifest"])
            node.notes.append("the pointer table is the published version, not this run's")
        else:
            manifest = lineage or {}
        path = (row or {}).get("path") if published or lineage is None else _meta_value(metadata, "path")
        node.facts["path"] = path
        node.facts["weights_sha256"] = manifest.get("weights_sha256") or (row or {}).get("weights_sha256")
        if row is not None and published:
            node.facts["model_ref"] = row.get("model_ref")
        for key in ("git_commit", "config_hash", "config", "items_table", "item_data_versions", "items_uri",
                    "items_sha256", "kb_table", "kb_tag", "kb_version", "kb_uri", "text_embedder", "image_embedder",
                    "kb_embedder", "parent_model", "parent_weights_sha256", "global_step", "resumed_from",
                    "model_ref", "kind", "parameters", "seed"):
            if manifest.get(key) is not None:
                node.facts[key] = manifest[key]
        run_id = manifest.get("dagster_run_id") or node.run_id
        if self.instance is not None and run_id:
            run = self.instance.get_run_by_id(run_id)
            if run is not None:
                op = (run.run_config or {}).get("ops", {}).get(node.asset, {})
                node.facts["run_config"] = op.get("config", op)
                if run.tags.get("medrwr/profile"):
                    node.facts["profile"] = run.tags["medrwr/profile"]
        if not self.verify:
            return
        if manifest.get("items_uri") and manifest.get("items_sha256"):
            node.checks.append(self._stored_file("items file", manifest["items_uri"], manifest["items_sha256"]))
        if path and node.facts.get("weights_sha256"):
            node.checks.append(self._stored_file("weights", posixpath.join(path, "model.safetensors"),
                                                 node.facts["weights_sha256"], hash_it=self.verify_weights))

    def _stored_file(self, kind: str, uri: str, sha256: str, hash_it: bool = True) -> Check:
        """A file under the storage root (an items table, a model's weights) against its recorded sha256."""
        root = self.store.root.rstrip("/") + "/"
        if not uri.startswith(root):
            return Check(kind, uri, UNVERIFIED, {"sha256": sha256}, note="outside the storage root")
        parts = tuple(uri[len(root):].split("/"))
        if not self.store.exists(*parts):
            return Check(kind, uri, MISSING, {"sha256": sha256})
        if not hash_it:
            return Check(kind, uri, OK, {"sha256": sha256}, {"size": self.store.size(*parts)},
                         "present (not re-hashed; pass --weights to hash it)")
        digest = _sha256(self.store.read_bytes(*parts))
        return Check(kind, uri, OK if digest == sha256 else CHANGED, {"sha256": sha256}, {"sha256": digest})

    # -- KB indexes --
    def _kb_index(self, node: Node, metadata: dict, published: bool) -> None:
        row = None
        if published and self.store.exists(*self.store.table_parts(node.asset)):
            row = self.store.read_table(node.asset).row(0, named=True)
        if row is not None:
            embedder = json.loads(row.get("embedder") or "{}")
            info = {"db": row["db"], "table": row["table"], "physical_table": row.get("physical_table"),
                    "tag": row["tag"], "version": row["version"],
                    "embedder_fingerprint": row.get("embedder_fingerprint")}
        else:
            embedder = _meta_value(metadata, "embedder") or {}
            info = {"db": "kb", "table": None, "physical_table": _meta_value(metadata, "lancedb_table"),
                    "tag": _meta_value(metadata, "lancedb_tag"), "version": _meta_value(metadata, "lancedb_version"),
                    "embedder_fingerprint": None}
        node.facts.update({f"kb_{k}": v for k, v in info.items()})
        node.facts["embedder"] = embedder.get("model_id", embedder) if isinstance(embedder, dict) else embedder
        node.facts["embedder_identity"] = embedder
        if self.verify:
            node.checks.append(self._kb_tag(info))

    def _kb_tag(self, info: dict) -> Check:
        name = f"{info['physical_table'] or info['table']}@{info['tag']}"
        recorded = {"tag": info["tag"], "version": info["version"]}
        if not info.get("tag") or not (info.get("physical_table") or info.get("table")):
            return Check("kb tag", name, UNVERIFIED, recorded, note="no tag or table recorded")
        try:
            conn = self.store.kb_location(info["db"] or "kb").connect()
            table = info["physical_table"] or info["table"]
            tags = conn.open_table(table).tags.list()
        except Exception as e:  # a table that is gone, an unreachable store: a failed verification, named
            return Check("kb tag", name, MISSING, recorded, note=f"LanceDB table {table}: {type(e).__name__}: {e}")
        if info["tag"] not in tags:
            return Check("kb tag", name, MISSING, recorded, note="the tag was deleted (retention?)")
        version = int(tags[info["tag"]]["version"])
        status = OK if info["version"] is None or version == int(info["version"]) else CHANGED
        return Check("kb tag", name, status, recorded, {"version": version})

    # -- reports --
    def _report(self, node: Node, metadata: dict) -> None:
        lineage = _meta_value(metadata, "lineage") or self.report_lineage(node.run_id) or {}
        node.facts.update({k: lineage[k] for k in ("kb_tag", "embedder", "image_index_tag", "image_embedder",
                                                   "benchmark_versions", "code_version", "profile")
                           if k in lineage})
        node.facts["checkpoint_manifests"] = lineage.get("checkpoint_manifests", {})
        for n in ("report.md", "report.html"):
            if node.run_id and self.store.exists("reports", node.run_id, n):
                node.facts.setdefault("report_files", []).append(self.store.uri("reports", node.run_id, n))

    def report_lineage(self, run_id: str | None) -> dict | None:
        if run_id and self.store.exists("reports", run_id, "lineage.json"):
            return json.loads(self.store.read_bytes("reports", run_id, "lineage.json"))
        if self.store.exists(*self.store.table_parts("eval_report")):
            row = self.store.read_table("eval_report").row(0, named=True)
            lineage = json.loads(row.get("lineage") or "{}")
            if lineage.get("run_id") == run_id:
                return lineage
        return None

    # -- agreement between a node and its parents --
    def _cross_checks(self, node: Node) -> None:
        parents = {c.asset: self._seen.get((c.asset, c.partition, c.run_id), c) if c.shown_above else c
                   for c in node.children if c.partition is None}
        versions = node.facts.get("item_data_versions") or {}
        for table, version in versions.items():
            up = parents.get(table)
            if up is not None and up.data_version:
                node.checks.append(Check("items data version", table, OK if up.data_version == version else CHANGED,
                                         {"data_version": version}, {"data_version": up.data_version}))
        kb = parents.get("kb_text_index")
        if kb is not None and node.facts.get("kb_tag") and kb.facts.get("kb_tag") is not None \
                and node.asset in MODEL_ASSETS.values():
            node.checks.append(Check("kb tag used", node.facts["kb_tag"],
                                     OK if kb.facts["kb_tag"] == node.facts["kb_tag"] else CHANGED,
                                     {"tag": node.facts["kb_tag"]}, {"tag": kb.facts["kb_tag"]},
                                     "the tag training pinned vs the kb_text_index materialization upstream"))
        if node.asset == "eval_report":
            for role, cited in (node.facts.get("checkpoint_manifests") or {}).items():
                up = parents.get(MODEL_ASSETS.get(role, ""))
                digest = up.facts.get("manifest_digest") if up is not None else None
                if digest:
                    node.checks.append(Check("manifest digest", role, OK if f"manifest {digest})" in cited else CHANGED,
                                             {"cited": cited}, {"digest": digest}))


def git_commit() -> str:
    """The code version: ``MEDRWR_GIT_COMMIT`` (set in images), else ``git rev-parse HEAD`` of the project
    (with ``-dirty`` when the work tree has uncommitted changes), else ``unknown``."""
    import subprocess

    if os.environ.get("MEDRWR_GIT_COMMIT"):
        return os.environ["MEDRWR_GIT_COMMIT"]
    repo = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def lineage_summary(store: Storage, graph, asset: str) -> dict[str, Any]:
    """What a report cites about one published model without verifying anything (cheap: no hashing): its
    manifest digest and how many input manifests and raw files its upstream chain holds."""
    node = Auditor(store, None, None, graph, verify=False).node(asset, None)
    roots = [n for n in node.walk() if not n.shown_above and "raw_files" in n.facts]
    return {"manifest": node.facts.get("manifest_digest"), "input_manifests": len(roots),
            "raw_files": int(sum(n.facts["raw_files"] for n in roots))}


def _report_run_id(ref: str) -> str:
    """The run id of ``report:<ref>``: a run id, or a path under ``reports/<run id>/`` (or the folder)."""
    parts = [p for p in ref.replace("\\", "/").split("/") if p]
    if "reports" in parts[:-1]:
        return parts[parts.index("reports") + 1]
    if len(parts) > 1 and parts[-1].startswith("report"):
        return parts[-2]
    return parts[-1] if parts else ref


def audit(target: str, store: Storage, sources, instance=None, graph=None, verify_weights: bool = False) -> AuditResult:
    """The lineage tree of ``target`` (``checkpoint:<base|stage1|stage2>`` or ``report:<run id or path>``),
    verified; raises :class:`TargetNotFound` when it is not published."""
    kind, _, ref = target.partition(":")
    auditor = Auditor(store, sources, instance, graph, verify_weights)
    if kind == "checkpoint":
        asset = MODEL_ASSETS.get(ref)
        if asset is None:
            raise TargetNotFound(f"unknown checkpoint {ref!r}: use one of {sorted(MODEL_ASSETS)}")
        records = auditor._records(asset)
        if not records and not store.exists(*store.table_parts(asset)):
            raise TargetNotFound(f"{asset} is not published under {store.describe()} and has no materialization "
                                 "in the Dagster instance: materialize it first")
        root = auditor.node(asset, None, records[0] if records else None)
    elif kind == "report":
        run_id = _report_run_id(ref)
        records = [r for r in auditor._records("eval_report", limit=1000) if r.run_id == run_id]
        if not records and auditor.report_lineage(run_id) is None:
            raise TargetNotFound(f"no evaluation report of run {run_id!r}: neither a materialization of eval_report "
                                 f"in the Dagster instance nor reports/{run_id}/lineage.json under {store.describe()}")
        published = (store.read_gate_record("eval_report") or {}).get("run_id") == run_id
        if records or published:
            root = auditor.node("eval_report", None, records[0] if records else None)
        else:  # an older report without a Dagster record: its lineage file, with today's published upstream
            root = Node("eval_report", run_id=run_id, notes=[
                "no Dagster record of this report: its lineage file is shown with today's published upstream"])
            auditor._report(root, {})
            root.children = [auditor.node(MODEL_ASSETS[role], None) for role in root.facts["checkpoint_manifests"]
                             if role in MODEL_ASSETS]
            auditor._cross_checks(root)
    else:
        raise TargetNotFound(f"unknown target {target!r}: use checkpoint:<base|stage1|stage2> or report:<run id or path>")
    return AuditResult(target, root, store.describe(), instance is not None, git_commit())


# ---- rendering ------------------------------------------------------------------------------------------
_FACT_ORDER = ("git_commit", "code_version", "profile", "config_hash", "config", "run_config", "path", "weights_sha256",
               "manifest_digest", "items_table", "item_data_versions", "items_uri", "items_sha256", "kb_table", "kb_tag",
               "kb_version", "kb_physical_table", "kb_embedder_fingerprint", "embedder", "text_embedder",
               "image_embedder", "input_manifest", "raw_files", "raw_bytes")
_HIDDEN = {"embedder_identity", "kb_embedder"}


def _short(value: Any, width: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def _check_line(c: Check) -> str:
    if c.kind == "raw file":
        rec = c.recorded
        what = f"size {rec.get('size')}  " + (f"sha256 {rec['sha256']}" if "sha256" in rec else f"etag {rec.get('etag')}")
        if c.status == CHANGED:
            now = c.found
            what += "  now: size " + str(now.get("size")) + " " + (f"sha256 {now.get('sha256')}" if "sha256" in now
                                                                      else f"etag {now.get('etag')}")
    else:
        what = " ".join(f"{k} {_short(v, 80)}" for k, v in c.recorded.items())
        if c.found and c.status != OK:
            what += "  now: " + " ".join(f"{k} {_short(v, 80)}" for k, v in c.found.items())
    note = f"  ({c.note})" if c.note else ""
    return f"[{c.status:^10}] {c.kind}: {c.name}  {what}{note}"


def render(result: AuditResult, max_files: int | None = None) -> str:
    """The tree as text: one line per materialization, its facts, its checks (every raw file unless
    ``max_files``), then a summary."""
    lines = [f"audit {result.target}   storage {result.storage_root}   "
             f"Dagster instance: {'yes' if result.instance else 'no (published versions only)'}   "
             f"code now: {result.git_commit_now}"]

    def visit(node: Node, prefix: str, last: bool, top: bool) -> None:
        branch = "" if top else ("└── " if last else "├── ")
        head = [node.label]
        if node.run_id:
            head.append(f"run {node.run_id[:8]}")
        if node.at:
            head.append(node.at)
        if node.data_version:
            head.append(f"data {node.data_version[:16]}")
        if node.code_version:
            head.append(f"code {node.code_version}")
        if node.shown_above:
            head.append("(shown above)")
        lines.append(prefix + branch + "  ".join(head))
        inner = prefix + ("" if top else ("    " if last else "│   "))
        if node.shown_above:
            return
        bar = inner + ("│ " if node.children else "  ")
        for note in node.notes:
            lines.append(f"{bar} ! {note}")
        facts = sorted(node.facts.items(), key=lambda kv: (_FACT_ORDER.index(kv[0]) if kv[0] in _FACT_ORDER
                                                           else len(_FACT_ORDER), kv[0]))
        for k, v in facts:
            if k not in _HIDDEN and v not in (None, "", {}, []):
                lines.append(f"{bar} · {k}: {_short(v)}")
        raw = [c for c in node.checks if c.kind == "raw file"]
        for c in [c for c in node.checks if c.kind != "raw file"]:
            lines.append(f"{bar} {_check_line(c)}")
        shown = raw if max_files is None else [c for c in raw if c.status != OK][:max_files] or raw[:max_files]
        for c in shown:
            lines.append(f"{bar} {_check_line(c)}")
        if len(shown) < len(raw):
            lines.append(f"{bar} ... {len(raw) - len(shown)} more raw files ({sum(c.status == OK for c in raw)} ok)")
        for i, child in enumerate(node.children):
            visit(child, inner, i == len(node.children) - 1, False)

    visit(result.root, "", True, True)
    lines.append("")
    for kind, counts in sorted(result.summary().items()):
        lines.append(f"{kind}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    failures = result.failures
    lines.append("RESULT: ok, the chain verifies" if not failures else
                 f"RESULT: {len(failures)} problem(s): " + "; ".join(f"{c.status} {c.kind} {c.name}" for c in failures[:20]))
    return "\n".join(lines)


# ---- command line ---------------------------------------------------------------------------------------
def _instance(use: bool):
    """The project's Dagster instance (``$DAGSTER_HOME``, default ``<project>/.medrwr/dagster_home``) when it
    exists; ``None`` otherwise."""
    if not use:
        return None
    from .storage import project_dir

    home = Path(os.environ.get("DAGSTER_HOME") or project_dir() / ".medrwr" / "dagster_home")
    if not home.is_dir():
        return None
    os.environ["DAGSTER_HOME"] = str(home.resolve())
    from dagster import DagsterInstance

    return DagsterInstance.get()


def _resources(root: str | None):
    """The storage root and the sources as the code location configures them (same environment variables)."""
    from .resources import SourcesResource, StorageResource
    from .settings import source_overrides

    endpoint = os.environ.get("MEDRWR_S3_ENDPOINT_URL")
    store = StorageResource(root=root or os.environ.get("MEDRWR_STORAGE_ROOT"), s3_endpoint_url=endpoint).get()
    sources = SourcesResource(profile=os.environ.get("MEDRWR_PROFILE") or "smoke",
                              data_dir=os.environ.get("MEDRWR_DATA_DIR"), overrides=source_overrides(),
                              s3_endpoint_url=endpoint)
    return store, sources


def main(argv: list[str] | None = None, instance=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestration.audit", description=__doc__.splitlines()[0])
    parser.add_argument("target", help="checkpoint:<base|stage1|stage2> or report:<run id or path of the report>")
    parser.add_argument("--profile", default=None, help="smoke or full (where the raw sources are read from); "
                        "overrides MEDRWR_PROFILE")
    parser.add_argument("--root", default=None, help="storage root (default: MEDRWR_STORAGE_ROOT or the project's)")
    parser.add_argument("--json", action="store_true", help="the tree and the verdicts as JSON")
    parser.add_argument("--weights", action="store_true", help="also re-hash model weights (slow for large models)")
    parser.add_argument("--no-instance", action="store_true", help="ignore the Dagster instance (published versions)")
    parser.add_argument("--max-files", type=int, default=None, help="raw files listed per table (problems first)")
    args = parser.parse_args(argv)
    if args.profile:
        os.environ["MEDRWR_PROFILE"] = args.profile
    store, sources = _resources(args.root)
    from .definitions import build_defs

    graph = build_defs().resolve_asset_graph()
    inst = instance if instance is not None or args.no_instance else _instance(True)
    try:
        result = audit(args.target, store, sources, inst, graph, verify_weights=args.weights)
    except TargetNotFound as e:
        print(f"audit: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict(), indent=1, sort_keys=True, default=str) if args.json
          else render(result, args.max_files))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
