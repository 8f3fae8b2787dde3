"""Entry points over the walk: a verified audit of a target, and the cheap summary a report cites."""

from __future__ import annotations

from typing import Any

from storage.provenance import git_commit
from storage.root import Storage

from .auditor import Auditor
from .tree import MODEL_ASSETS, AuditResult, Node, TargetNotFound


def lineage_summary(store: Storage, graph, asset: str) -> dict[str, Any]:
    """What a report cites about one published model without verifying anything (cheap: no hashing): its
    manifest digest and how many input manifests and raw files its upstream chain holds."""
    node = Auditor(store, None, None, graph, verify=False).node(asset, None)
    roots = [n for n in node.walk() if not n.shown_above and "raw_files" in n.facts]
    return {
        "manifest": node.facts.get("manifest_digest"),
        "input_manifests": len(roots),
        "raw_files": int(sum(n.facts["raw_files"] for n in roots)),
    }


def _report_run_id(ref: str) -> str:
    """The run id of ``report:<ref>``: a run id, or a path under ``reports/<run id>/`` (or the folder)."""
    parts = [p for p in ref.replace("\\", "/").split("/") if p]
    if "reports" in parts[:-1]:
        return parts[parts.index("reports") + 1]
    if len(parts) > 1 and parts[-1].startswith("report"):
        return parts[-2]
    return parts[-1] if parts else ref


def audit(
    target: str,
    store: Storage,
    sources,
    instance=None,
    graph=None,
    verify_weights: bool = False,
    allow_unverified: bool = False,
) -> AuditResult:
    """The lineage tree of ``target`` (``checkpoint:<base|stage1|stage2>`` or ``report:<run id or path>``),
    verified; raises :class:`TargetNotFound` when it is not published. A check that cannot be made
    (``unverified``: a key this auditor cannot resolve, a file outside the storage root) fails the result
    unless ``allow_unverified``."""
    kind, _, ref = target.partition(":")
    auditor = Auditor(store, sources, instance, graph, verify_weights)
    if kind == "checkpoint":
        asset = MODEL_ASSETS.get(ref)
        if asset is None:
            raise TargetNotFound(f"unknown checkpoint {ref!r}: use one of {sorted(MODEL_ASSETS)}")
        records = auditor._records(asset)
        if not records and not store.exists(*store.table_parts(asset)):
            raise TargetNotFound(
                f"{asset} is not published under {store.describe()} and has no materialization "
                "in the Dagster instance: materialize it first"
            )
        root = auditor.node(asset, None, records[0] if records else None)
    elif kind == "report":
        run_id = _report_run_id(ref)
        records = [r for r in auditor._records("eval_report", limit=1000) if r.run_id == run_id]
        if not records and auditor.report_lineage(run_id) is None:
            raise TargetNotFound(
                f"no evaluation report of run {run_id!r}: neither a materialization of eval_report "
                f"in the Dagster instance nor reports/{run_id}/lineage.json under {store.describe()}"
                + "".join(f"; {why}" for why in auditor.uncommitted.values())
            )
        published = (store.read_gate_record("eval_report") or {}).get("run_id") == run_id
        if records or published:
            root = auditor.node("eval_report", None, records[0] if records else None)
        else:  # an older report without a Dagster record: its lineage file, with today's published upstream
            root = Node(
                "eval_report",
                run_id=run_id,
                notes=[
                    "no Dagster record of this report: its lineage file is shown with today's "
                    "published upstream"
                ],
            )
            auditor._report(root, {})
            root.children = [
                auditor.node(MODEL_ASSETS[role], None)
                for role in root.facts["checkpoint_manifests"]
                if role in MODEL_ASSETS
            ]
            auditor._cross_checks(root)
    else:
        raise TargetNotFound(
            f"unknown target {target!r}: use checkpoint:<base|stage1|stage2> or report:<run id or path>"
        )
    return AuditResult(target, root, store.describe(), instance is not None, git_commit(), allow_unverified)
