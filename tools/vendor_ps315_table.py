"""Regenerate ``quality/data/ps315_table_e1_1.csv`` (DICOM PS3.15 Table E.1-1, Basic Profile actions).

The table is taken from the field lists of ``dicom-anonymizer`` (Kitware, BSD-3-Clause; PyPI
``dicom-anonymizer``), which transcribes the standard's Table E.1-1 release by release. Install the
version named below in a throwaway environment, then run from the repository root::

    pip install dicom-anonymizer==2.1.0
    python tools/vendor_ps315_table.py [--release dicomfields_2026c]

Each row: ``tag`` (8 hex digits, ``x`` where the standard's tag is a repeating group such as ``60xx4000``),
``name`` (as the standard writes it), ``action`` (Basic Profile column: D, Z, X, U, Z/D, X/Z, X/D, X/Z/D,
X/Z/U*). Licence and attribution: ``quality/data/ps315_table_e1_1.LICENSE``.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import inspect
import re
import sys
from pathlib import Path

CATEGORIES = {  # dicom-anonymizer list -> Table E.1-1 Basic Profile action
    "D_TAGS": "D",
    "Z_TAGS": "Z",
    "X_TAGS": "X",
    "U_TAGS": "U",
    "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D",
    "X_Z_D_TAGS": "X/Z/D",
    "X_Z_U_STAR_TAGS": "X/Z/U*",
}
ENTRY = re.compile(r"\(\s*((?:0x[0-9A-Fa-f]{4}\s*,?\s*){2,4})\)\s*,\s*#\s*([^\n]+)")
OUT = Path("quality/data/ps315_table_e1_1.csv")


def tag_text(t: tuple[int, ...]) -> str:
    """``(group, element[, group mask, element mask])`` as 8 hex digits, ``x`` for masked-out digits."""
    value = (t[0] << 16) | t[1]
    mask = ((t[2] << 16) | t[3]) if len(t) == 4 else 0xFFFFFFFF
    digits = f"{value:08X}"
    return "".join(d if (mask >> (4 * (7 - i))) & 0xF else "x" for i, d in enumerate(digits))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--release", default="dicomfields_2026c")
    a = p.parse_args(argv)
    module = importlib.import_module(f"dicomanonymizer.dicom_anonymization_databases.{a.release}")
    names = {}
    for m in ENTRY.finditer(inspect.getsource(module)):
        t = tuple(int(x, 16) for x in re.findall(r"0x[0-9A-Fa-f]{4}", m.group(1)))
        names[t] = m.group(2).strip()
    rows = []
    for category, action in CATEGORIES.items():
        for t in getattr(module, category):
            rows.append({"tag": tag_text(t), "name": names.get(tuple(t), ""), "action": action})
    rows.sort(key=lambda r: r["tag"])
    with OUT.open("w", newline="") as f:
        f.write(
            f"# DICOM PS3.15 Table E.1-1 Basic Profile actions, from dicom-anonymizer {a.release} "
            "(Kitware, BSD-3-Clause); see ps315_table_e1_1.LICENSE\n"
        )
        w = csv.DictWriter(f, fieldnames=["tag", "name", "action"])
        w.writeheader()
        w.writerows(rows)
    sys.stdout.write(f"wrote {len(rows)} attributes to {OUT}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
