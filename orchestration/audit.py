"""The audit command: the whole upstream chain of a checkpoint or an evaluation report, verified.

    python -m orchestration.audit checkpoint:stage1 [--profile smoke] [--json]
    python -m orchestration.audit report:<run id | path of reports/<run id>/report.md>

What it walks and checks is described in :mod:`assets.common.audit`; this module adds the command line: the
storage root and sources as the code location configures them, the project's Dagster instance and the code
location's asset graph. Exits 1 when anything is CHANGED or MISSING, or unverified (an input this auditor
cannot check, e.g. without read access to the restricted echo key map) unless ``--allow-unverified``; 2 when
the target is not found.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from assets.common.audit import TargetNotFound, audit, render


def _instance(use: bool):
    """The project's Dagster instance (``$DAGSTER_HOME``, default ``<project>/.medrwr/dagster_home``) when it
    exists; ``None`` otherwise."""
    if not use:
        return None
    from .instance import dagster_home_path

    home = dagster_home_path()
    if not home.is_dir():
        return None
    os.environ["DAGSTER_HOME"] = str(home.resolve())
    from dagster import DagsterInstance

    return DagsterInstance.get()


def _resources(root: str | None):
    """The storage root and the sources as the code location configures them (same environment variables)."""
    from assets.common.resources import SourcesResource, StorageResource
    from assets.common.settings import source_overrides

    endpoint = os.environ.get("MEDRWR_S3_ENDPOINT_URL")
    store = StorageResource(
        root=root or os.environ.get("MEDRWR_STORAGE_ROOT"), s3_endpoint_url=endpoint
    ).get()
    sources = SourcesResource(
        profile=os.environ.get("MEDRWR_PROFILE") or "smoke",
        data_dir=os.environ.get("MEDRWR_DATA_DIR"),
        overrides=source_overrides(),
        s3_endpoint_url=endpoint,
    )
    return store, sources


def main(argv: list[str] | None = None, instance=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m orchestration.audit", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "target", help="checkpoint:<base|stage1|stage2> or report:<run id or path of the report>"
    )
    parser.add_argument(
        "--profile",
        default=None,
        help="smoke or full (where the raw sources are read from); overrides MEDRWR_PROFILE",
    )
    parser.add_argument(
        "--root", default=None, help="storage root (default: MEDRWR_STORAGE_ROOT or the project's)"
    )
    parser.add_argument("--json", action="store_true", help="the tree and the verdicts as JSON")
    parser.add_argument(
        "--weights", action="store_true", help="also re-hash model weights (slow for large models)"
    )
    parser.add_argument(
        "--allow-unverified",
        action="store_true",
        help="accept checks that cannot be made (e.g. pseudonymous echo files without access to the "
        "restricted key map); by default an unverified input is a failure",
    )
    parser.add_argument(
        "--no-instance", action="store_true", help="ignore the Dagster instance (published versions)"
    )
    parser.add_argument(
        "--max-files", type=int, default=None, help="raw files listed per table (problems first)"
    )
    args = parser.parse_args(argv)
    if args.profile:
        os.environ["MEDRWR_PROFILE"] = args.profile
    store, sources = _resources(args.root)
    from .definitions import build_defs

    graph = build_defs().resolve_asset_graph()
    inst = instance if instance is not None or args.no_instance else _instance(True)
    try:
        result = audit(
            args.target,
            store,
            sources,
            inst,
            graph,
            verify_weights=args.weights,
            allow_unverified=args.allow_unverified,
        )
    except TargetNotFound as e:
        print(f"audit: {e}", file=sys.stderr)
        return 2
    print(
        json.dumps(result.to_dict(), indent=1, sort_keys=True, default=str)
        if args.json
        else render(result, args.max_files)
    )
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
