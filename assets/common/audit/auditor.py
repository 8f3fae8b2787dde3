"""The walk upstream from a checkpoint or report (see the package docstring); reads, never writes."""

from __future__ import annotations

import json
import os
import posixpath
from typing import Any

import polars as pl

from retrieval.pointers import KbPointer
from storage.errors import UncommittedTable
from storage.pointers import ModelPointer
from storage.root import Storage

from .tree import (
    CHANGED,
    KB_INDEXES,
    KEYED_INPUTS,
    MISSING,
    MODEL_ASSETS,
    OK,
    UNVERIFIED,
    Check,
    Node,
    _iso,
    _meta_value,
    _sha256,
    manifest_digest,
)


class Auditor:
    """Builds the lineage tree of a target from a storage root, the raw sources and (optionally) the Dagster
    instance and asset graph."""

    def __init__(
        self,
        store: Storage,
        sources,
        instance=None,
        graph=None,
        verify_weights: bool = False,
        verify: bool = True,
    ):
        self.store, self.sources, self.instance, self.graph = store, sources, instance, graph
        self.verify_weights, self.verify = verify_weights, verify
        self._seen: dict[tuple, Node] = {}
        self._source_dirs: dict[str, Any] = {}
        self._key_maps: dict[str, dict[str, str]] = {}
        self.restricted: Storage | None = None
        # published tables that did not verify against their gate record: label -> why (what to do)
        self.uncommitted: dict[str, str] = {}

    # -- Dagster instance (optional) --
    def _records(self, asset: str, partition: str | None = None, before: int | None = None, limit: int = 1):
        if self.instance is None:
            return []
        from dagster import AssetKey, AssetRecordsFilter

        flt = AssetRecordsFilter(
            asset_key=AssetKey(asset),
            asset_partitions=[partition] if partition else None,
            before_storage_id=before,
        )
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

    def _published(self, table: str, partition: str | None, node: Node | None) -> pl.DataFrame | None:
        """A published table as its gate record commits it (:meth:`Storage.read_published_table`); None when
        it is not there. A table its gate record does not name (a publication interrupted before its commit, a
        file changed after publication) is not read: a ``CHANGED`` check ``published table`` on ``node``
        names it, and the audit fails."""
        if not self.store.exists(*self.store.table_parts(table, partition)):
            return None
        try:
            return self.store.read_published_table(table, partition)
        except UncommittedTable as e:
            label = f"{table}[{partition}]" if partition else table
            self.uncommitted[label] = str(e)
            if node is not None:
                node.checks.append(
                    Check(
                        "published table",
                        label,
                        CHANGED,
                        note=f"{e} (the audit did not read it)",
                    )
                )
            return None

    # -- nodes --
    def node(self, asset: str, partition: str | None, record=None) -> Node:
        """The node of one materialization (``record``: a Dagster event record; else the published
        version)."""
        gate = self.store.read_gate_record(asset, partition) or {}
        run_id = record.run_id if record is not None else gate.get("run_id")
        key = (asset, partition, run_id)
        if key in self._seen:
            first = self._seen[key]
            return Node(
                asset, partition, run_id, first.at, first.data_version, first.code_version, shown_above=True
            )
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
            node.notes.append(
                f"re-materialized since: the published version is run {gate.get('run_id')} "
                f"({gate.get('status')}, {gate.get('at')})"
            )
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
                node.checks.append(
                    Check(
                        "input manifest",
                        self.store.uri(*parts),
                        MISSING,
                        {"sha256": expected} if expected else {},
                    )
                )
            return
        body = self.store.read_bytes(*parts)
        digest = _sha256(body)
        status = OK if not expected or expected == digest else CHANGED
        node.checks.append(
            Check(
                "input manifest",
                self.store.uri(*parts),
                status,
                {"sha256": expected} if expected else {},
                {"sha256": digest},
                "" if expected else "no digest recorded (no Dagster record): not compared",
            )
        )
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

        from storage.root import project_dir
        from storage.sources import SourceDir

        if self.restricted is None:
            self.restricted = Storage(
                root=os.environ.get("MEDRWR_RESTRICTED_ROOT")
                or str(project_dir() / ".medrwr" / "restricted"),
                s3=self.store.s3,
            )
        source = node.partition or ""
        if source not in self._key_maps:
            parts = ("keymaps", "echo_studies", f"{source}.keymap.csv")
            try:
                text = self.restricted.read_bytes(*parts).decode() if self.restricted.exists(*parts) else ""
            except Exception:  # no access to the restricted root: the keys stay opaque
                text = ""
            self._key_maps[source] = {
                r["file_key"]: r["relative_path"] for r in csv.DictReader(io.StringIO(text))
            }
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
            same = found["sha256"] == recorded["sha256"] and found["size"] == recorded.get(
                "size", found["size"]
            )
        elif "etag" in recorded and "etag" in found:
            same = found["etag"] == recorded["etag"] and found["size"] == recorded.get("size", found["size"])
        else:
            return Check(
                "raw file",
                name,
                UNVERIFIED,
                recorded,
                found,
                "recorded and current hashes are of different kinds (the source moved between local and S3)",
            )
        return Check("raw file", name, OK if same else CHANGED, recorded, found)

    # -- models --
    def _model(self, node: Node, metadata: dict, published: bool) -> None:
        lineage = _meta_value(metadata, "lineage")
        table = self._published(node.asset, None, node)
        pointer = ModelPointer.from_row(table) if table is not None else None
        if pointer is not None and published:
            manifest = pointer.manifest
            node.facts["manifest_digest"] = manifest_digest(pointer.manifest_json)
        elif lineage is None and pointer is not None:
            manifest = pointer.manifest
            node.notes.append("the pointer table is the published version, not this run's")
        else:
            manifest = lineage or {}
        if published or lineage is None:
            path = pointer.path if pointer is not None else None
        else:
            path = _meta_value(metadata, "path")
        node.facts["path"] = path
        node.facts["weights_sha256"] = manifest.get("weights_sha256") or (
            pointer.weights_sha256 if pointer is not None else None
        )
        if pointer is not None and published:
            node.facts["model_ref"] = pointer.model_ref
        for key in (
            "git_commit",
            "config_hash",
            "config",
            "items_table",
            "item_data_versions",
            "items_uri",
            "items_sha256",
            "kb_table",
            "kb_tag",
            "kb_version",
            "kb_uri",
            "text_embedder",
            "image_embedder",
            "kb_embedder",
            "parent_model",
            "parent_weights_sha256",
            "global_step",
            "resumed_from",
            "model_ref",
            "kind",
            "parameters",
            "seed",
        ):
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
            node.checks.append(
                self._stored_file("items file", manifest["items_uri"], manifest["items_sha256"])
            )
        if path and node.facts.get("weights_sha256"):
            node.checks.append(
                self._stored_file(
                    "weights",
                    posixpath.join(path, "model.safetensors"),
                    node.facts["weights_sha256"],
                    hash_it=self.verify_weights,
                )
            )

    def _stored_file(self, kind: str, uri: str, sha256: str, hash_it: bool = True) -> Check:
        """A file under the storage root (an items table, a model's weights) against its recorded sha256."""
        root = self.store.root.rstrip("/") + "/"
        if not uri.startswith(root):
            return Check(kind, uri, UNVERIFIED, {"sha256": sha256}, note="outside the storage root")
        parts = tuple(uri[len(root) :].split("/"))
        if not self.store.exists(*parts):
            return Check(kind, uri, MISSING, {"sha256": sha256})
        if not hash_it:
            return Check(
                kind,
                uri,
                OK,
                {"sha256": sha256},
                {"size": self.store.size(*parts)},
                "present (not re-hashed; pass --weights to hash it)",
            )
        digest = _sha256(self.store.read_bytes(*parts))
        return Check(kind, uri, OK if digest == sha256 else CHANGED, {"sha256": sha256}, {"sha256": digest})

    # -- KB indexes --
    def _kb_index(self, node: Node, metadata: dict, published: bool) -> None:
        table = self._published(node.asset, None, node) if published else None
        if table is not None:
            pointer = KbPointer.from_row(table)
            embedder = pointer.embedder
            info = {
                "db": pointer.db,
                "table": pointer.table,
                "physical_table": pointer.physical_table,
                "tag": pointer.tag,
                "version": pointer.version,
                "embedder_fingerprint": pointer.embedder_fingerprint,
            }
        else:
            embedder = _meta_value(metadata, "embedder") or {}
            info = {
                "db": "kb",
                "table": None,
                "physical_table": _meta_value(metadata, "lancedb_table"),
                "tag": _meta_value(metadata, "lancedb_tag"),
                "version": _meta_value(metadata, "lancedb_version"),
                "embedder_fingerprint": None,
            }
        node.facts.update({f"kb_{k}": v for k, v in info.items()})
        node.facts["embedder"] = (
            embedder.get("model_id", embedder) if isinstance(embedder, dict) else embedder
        )
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
            return Check(
                "kb tag", name, MISSING, recorded, note=f"LanceDB table {table}: {type(e).__name__}: {e}"
            )
        if info["tag"] not in tags:
            return Check("kb tag", name, MISSING, recorded, note="the tag was deleted (retention?)")
        version = int(tags[info["tag"]]["version"])
        status = OK if info["version"] is None or version == int(info["version"]) else CHANGED
        return Check("kb tag", name, status, recorded, {"version": version})

    # -- reports --
    def _report(self, node: Node, metadata: dict) -> None:
        lineage = _meta_value(metadata, "lineage") or self.report_lineage(node.run_id, node) or {}
        node.facts.update(
            {
                k: lineage[k]
                for k in (
                    "kb_tag",
                    "embedder",
                    "image_index_tag",
                    "image_embedder",
                    "benchmark_versions",
                    "code_version",
                    "profile",
                )
                if k in lineage
            }
        )
        node.facts["checkpoint_manifests"] = lineage.get("checkpoint_manifests", {})
        for n in ("report.md", "report.html"):
            if node.run_id and self.store.exists("reports", node.run_id, n):
                node.facts.setdefault("report_files", []).append(self.store.uri("reports", node.run_id, n))
        self._report_artefacts(node, lineage.get("artefacts"))

    def _report_artefacts(self, node: Node, artefacts: dict | None) -> None:
        """Re-hash what the report vouches for: every file written beside it, and the result rows of each
        benchmark (their digest, and their scores recomputed from the answers)."""
        if not artefacts:
            node.checks.append(
                Check("report files", "report", UNVERIFIED, note="a report from before artefact hashes")
            )
            return
        for name, sha in sorted(artefacts.get("files_sha256", {}).items()):
            parts = ("reports", node.run_id or "", *name.split("/"))
            if not node.run_id or not self.store.exists(*parts):
                node.checks.append(Check("report file", name, MISSING, {"sha256": sha}))
                continue
            digest = _sha256(self.store.read_bytes(*parts))
            verdict = OK if digest == sha else CHANGED
            node.checks.append(Check("report file", name, verdict, {"sha256": sha}, {"sha256": digest}))
        from training.evaluation.results import EvalResultsError, results_digest, validate_results

        for bench, sha in sorted(artefacts.get("results_sha256", {}).items()):
            if not self.store.exists(*self.store.table_parts("eval_results", bench)):
                node.checks.append(Check("result rows", bench, MISSING, {"sha256": sha}))
                continue
            rows = self._published("eval_results", bench, node)
            if rows is None:  # not what its gate committed: a failed "published table" check names it
                continue
            digest = results_digest(rows)
            verdict = OK if digest == sha else CHANGED
            node.checks.append(Check("result rows", bench, verdict, {"sha256": sha}, {"sha256": digest}))
            try:
                validate_results(rows)
                node.checks.append(Check("result scores", bench, OK, note="recomputed from the answers"))
            except EvalResultsError as e:
                node.checks.append(Check("result scores", bench, CHANGED, found={"error": str(e)[:300]}))

    def report_lineage(self, run_id: str | None, node: Node | None = None) -> dict | None:
        """The lineage of the report of ``run_id``: its ``lineage.json``, else the published ``eval_report``
        row when it is that run's (only as its gate record commits it; else a failed check on ``node``)."""
        if run_id and self.store.exists("reports", run_id, "lineage.json"):
            return json.loads(self.store.read_bytes("reports", run_id, "lineage.json"))
        table = self._published("eval_report", None, node)
        if table is not None and table.height:
            row = table.row(0, named=True)
            lineage = json.loads(row.get("lineage") or "{}")
            if lineage.get("run_id") == run_id:
                return lineage
        return None

    # -- agreement between a node and its parents --
    def _cross_checks(self, node: Node) -> None:
        parents = {
            c.asset: self._seen.get((c.asset, c.partition, c.run_id), c) if c.shown_above else c
            for c in node.children
            if c.partition is None
        }
        versions = node.facts.get("item_data_versions") or {}
        for table, version in versions.items():
            up = parents.get(table)
            if up is not None and up.data_version:
                node.checks.append(
                    Check(
                        "items data version",
                        table,
                        OK if up.data_version == version else CHANGED,
                        {"data_version": version},
                        {"data_version": up.data_version},
                    )
                )
        kb = parents.get("kb_text_index")
        if (
            kb is not None
            and node.facts.get("kb_tag")
            and kb.facts.get("kb_tag") is not None
            and node.asset in MODEL_ASSETS.values()
        ):
            node.checks.append(
                Check(
                    "kb tag used",
                    node.facts["kb_tag"],
                    OK if kb.facts["kb_tag"] == node.facts["kb_tag"] else CHANGED,
                    {"tag": node.facts["kb_tag"]},
                    {"tag": kb.facts["kb_tag"]},
                    "the tag training pinned vs the kb_text_index materialization upstream",
                )
            )
        if node.asset == "eval_report":
            for role, cited in (node.facts.get("checkpoint_manifests") or {}).items():
                up = parents.get(MODEL_ASSETS.get(role, ""))
                digest = up.facts.get("manifest_digest") if up is not None else None
                if digest:
                    node.checks.append(
                        Check(
                            "manifest digest",
                            role,
                            OK if f"manifest {digest})" in cited else CHANGED,
                            {"cited": cited},
                            {"digest": digest},
                        )
                    )
