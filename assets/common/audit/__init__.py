"""Lineage for auditors: the whole upstream chain of a checkpoint or an evaluation report, verified.

The library behind ``python -m orchestration.audit``:

    python -m orchestration.audit checkpoint:stage1 [--profile smoke] [--json]
    python -m orchestration.audit report:<run id | path of reports/<run id>/report.md>

Given a target, :func:`audit` walks the asset graph upstream from the materialization that produced it, down
to the raw files the root tables read, and prints one tree:

- every asset (partition) on the way, with the Dagster run that materialized it, its data version and the code
  version it ran under (and today's code version when it differs);
- for a model: its lineage manifest (items table and data version, items file sha256, KB table/tag/version,
  text and image embedder, training config and its hash, git commit) and the run config of the Dagster run;
- for a KB index: the LanceDB tag, version, physical table and embedder identity (model id and fingerprint);
- for a root table: its input manifest (``manifests/<table>/<partition>/<run>.json``, written by the gate) and
  every raw file in it (path key, size, sha256 or S3 ETag).

Which upstream version: with the Dagster instance (``$DAGSTER_HOME``), the latest materialization of each
parent partition *before* the child's materialization (so a later re-run upstream does not hide what was used;
the tree says so). Without it, the published version of each parent (gate record), with a note.

Verification (each check ``ok``, ``CHANGED`` or ``MISSING``; ``unverified`` when it cannot be checked): every
raw file is re-hashed against the configured sources (the ``sources`` resource's settings, so local folders
and S3 both work; on S3 the ETag is compared); every input manifest against the digest recorded in the
materialization; the KB tag must still exist in LanceDB at the recorded version; a model's items file, item
data versions and KB tag must agree with the upstream nodes; the model folder must still hold its weights
(hashed with ``--weights``). A published table the walk reads (a model or KB pointer, ``eval_results`` of
a benchmark, ``eval_report``) is read only as its gate record commits it (its sha256): one its gate record
does not name (a publication interrupted before its commit, a file changed after it) is a ``CHANGED``
``published table`` check naming it, and is not read. The command exits 1 when anything is CHANGED or
MISSING, or ``unverified`` unless the auditor passes ``--allow-unverified`` (every input an audit lists is
verifiable by someone with the right access: echo files through the restricted key map, which lists every
file of the input manifest); 2 when the target is not found.

The walk reads the storage root and the instance only; it never writes. The Dagster instance and the asset
graph are optional inputs (Dagster is imported only to read them).
"""

from .auditor import Auditor
from .render import render
from .targets import audit, lineage_summary
from .tree import (
    CHANGED,
    FAILING,
    MISSING,
    MODEL_ASSETS,
    OK,
    UNVERIFIED,
    AuditResult,
    Check,
    Node,
    TargetNotFound,
    manifest_digest,
)

__all__ = [
    "CHANGED",
    "FAILING",
    "MISSING",
    "MODEL_ASSETS",
    "OK",
    "UNVERIFIED",
    "AuditResult",
    "Auditor",
    "Check",
    "Node",
    "TargetNotFound",
    "audit",
    "lineage_summary",
    "manifest_digest",
    "render",
]
