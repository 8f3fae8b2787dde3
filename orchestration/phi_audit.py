"""PHI audit of what was stored: the storage root and ``DAGSTER_HOME`` read back for every identifier.

    python -m orchestration.phi_audit --source DIR [--source DIR ...] [--scan LABEL=DIR ...]

Reads the identifiers of each source folder again (restricted access: the folders hold patient data) and
searches every file, database cell and blob under the places scanned (:mod:`quality.phi_stored`). Without
``--scan`` it scans the storage root of the settings (``MEDRWR_STORAGE_ROOT``, default
``<project>/.medrwr/storage``) and ``DAGSTER_HOME`` (default ``<project>/.medrwr/dagster_home``). Prints
the attribute and place of each finding (never the value) and exits 1 when anything is found.
"""

from __future__ import annotations

import argparse
import os
import sys

from quality.phi import Identifier
from quality.phi_stored import audit_stored, folder_identifiers
from storage.root import default_storage_root

from .instance import dagster_home_path


def default_places() -> dict[str, str]:
    """The storage root and the Dagster instance of this project's settings (local folders only)."""
    places = {}
    root = default_storage_root()
    if "://" not in root:
        places["storage root"] = root
    places["DAGSTER_HOME"] = str(dagster_home_path())
    return {label: path for label, path in places.items() if os.path.isdir(path)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", action="append", required=True, help="a source folder (repeatable)")
    p.add_argument("--scan", action="append", default=[], help="LABEL=DIR to scan (repeatable)")
    a = p.parse_args(argv)
    roots = dict(s.split("=", 1) for s in a.scan) if a.scan else default_places()
    if not roots:
        p.error(
            "nothing to scan: give --scan LABEL=DIR (neither the storage root nor DAGSTER_HOME exists here)"
        )
    ids: dict[str, set[Identifier]] = {}
    for i, src in enumerate(a.source):
        ids |= {f"{i}:{k}": v for k, v in folder_identifiers(src).items()}
    result = audit_stored(ids, roots)
    print(result.describe())
    for attribute, where in result.leaks:
        print(f"  {attribute} in {where}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
