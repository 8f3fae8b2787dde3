"""The audit tree as text (the command's default output)."""

from __future__ import annotations

import json
from typing import Any

from .tree import CHANGED, OK, UNVERIFIED, AuditResult, Check, Node

_FACT_ORDER = (
    "git_commit",
    "code_version",
    "profile",
    "config_hash",
    "config",
    "run_config",
    "path",
    "weights_sha256",
    "manifest_digest",
    "items_table",
    "item_data_versions",
    "items_uri",
    "items_sha256",
    "kb_table",
    "kb_tag",
    "kb_version",
    "kb_physical_table",
    "kb_embedder_fingerprint",
    "embedder",
    "text_embedder",
    "image_embedder",
    "input_manifest",
    "raw_files",
    "raw_bytes",
)
_HIDDEN = {"embedder_identity", "kb_embedder"}


def _short(value: Any, width: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def _check_line(c: Check) -> str:
    if c.kind == "raw file":
        rec = c.recorded
        what = f"size {rec.get('size')}  " + (
            f"sha256 {rec['sha256']}" if "sha256" in rec else f"etag {rec.get('etag')}"
        )
        if c.status == CHANGED:
            now = c.found
            what += (
                "  now: size "
                + str(now.get("size"))
                + " "
                + (f"sha256 {now.get('sha256')}" if "sha256" in now else f"etag {now.get('etag')}")
            )
    else:
        what = " ".join(f"{k} {_short(v, 80)}" for k, v in c.recorded.items())
        if c.found and c.status != OK:
            what += "  now: " + " ".join(f"{k} {_short(v, 80)}" for k, v in c.found.items())
    note = f"  ({c.note})" if c.note else ""
    return f"[{c.status:^10}] {c.kind}: {c.name}  {what}{note}"


def render(result: AuditResult, max_files: int | None = None) -> str:
    """The tree as text: one line per materialization, its facts, its checks (every raw file unless
    ``max_files``), then a summary."""
    lines = [
        f"audit {result.target}   storage {result.storage_root}   "
        f"Dagster instance: {'yes' if result.instance else 'no (published versions only)'}   "
        f"code now: {result.git_commit_now}"
    ]

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
        facts = sorted(
            node.facts.items(),
            key=lambda kv: (_FACT_ORDER.index(kv[0]) if kv[0] in _FACT_ORDER else len(_FACT_ORDER), kv[0]),
        )
        for k, v in facts:
            if k not in _HIDDEN and v not in (None, "", {}, []):
                lines.append(f"{bar} · {k}: {_short(v)}")
        raw = [c for c in node.checks if c.kind == "raw file"]
        for c in [c for c in node.checks if c.kind != "raw file"]:
            lines.append(f"{bar} {_check_line(c)}")
        shown = (
            raw if max_files is None else [c for c in raw if c.status != OK][:max_files] or raw[:max_files]
        )
        for c in shown:
            lines.append(f"{bar} {_check_line(c)}")
        if len(shown) < len(raw):
            lines.append(
                f"{bar} ... {len(raw) - len(shown)} more raw files ({sum(c.status == OK for c in raw)} ok)"
            )
        for i, child in enumerate(node.children):
            visit(child, inner, i == len(node.children) - 1, False)

    visit(result.root, "", True, True)
    lines.append("")
    for kind, counts in sorted(result.summary().items()):
        lines.append(f"{kind}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    failures = result.failures
    if result.allow_unverified and any(c.status == UNVERIFIED for c in result.checks()):
        lines.append("unverified checks accepted (--allow-unverified)")
    lines.append(
        "RESULT: ok, the chain verifies"
        if not failures
        else f"RESULT: {len(failures)} problem(s): "
        + "; ".join(f"{c.status} {c.kind} {c.name}" for c in failures[:20])
    )
    return "\n".join(lines)
