"""DICOM PS3.15 Table E.1-1 (Basic Application Level Confidentiality Profile) as data.

The table is vendored as ``quality/data/ps315_table_e1_1.csv`` (release 2026c, transcribed by
dicom-anonymizer 2.1.0, BSD-3-Clause; attribution in ``ps315_table_e1_1.LICENSE``; regenerate with
``tools/vendor_ps315_table.py``). Each entry has a tag, which may name a repeating group (``60xx4000``,
Overlay Comments; ``50xxxxxx``, every Curve attribute), and the Basic Profile action:

* ``X`` remove, ``Z`` replace with a zero-length value, ``D`` replace with a dummy value, ``U`` replace a UID
  consistently, ``K`` keep;
* compound actions (``X/Z``, ``X/D``, ``Z/D``, ``X/Z/D``, ``X/Z/U*``) leave the choice to the implementer
  according to the IOD's attribute type. :func:`resolve` states the one this pipeline takes.

Used by :mod:`assets.echo.deid` (to apply the profile) and :mod:`quality.phi` (to know which attribute
values identify someone). Plain library (no Dagster).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from pathlib import Path

TABLE_PATH = Path(__file__).parent / "data" / "ps315_table_e1_1.csv"
ACTIONS = {"X", "Z", "D", "U", "K", "X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*"}


@dataclass(frozen=True)
class ProfileEntry:
    """One row of Table E.1-1: ``tag`` and ``mask`` (bits that must match) and the Basic Profile action."""

    tag: int
    mask: int
    name: str
    action: str

    def matches(self, tag: int) -> bool:
        return (int(tag) & self.mask) == self.tag

    @property
    def tag_text(self) -> str:
        digits = f"{self.tag:08X}"
        return "".join(d if (self.mask >> (4 * (7 - i))) & 0xF else "x" for i, d in enumerate(digits))


def _parse(text: str) -> tuple[int, int]:
    value = int(text.replace("x", "0").replace("X", "0"), 16) if text[:1] != "x" else 0
    mask = int("".join("0" if c in "xX" else "F" for c in text), 16)
    return value & mask, mask


@cache
def load_table() -> tuple[ProfileEntry, ...]:
    """Every entry of the vendored table, in tag order."""
    lines = [ln for ln in TABLE_PATH.read_text().splitlines() if not ln.startswith("#")]
    entries = []
    for row in csv.DictReader(lines):
        if row["action"] not in ACTIONS:
            raise ValueError(f"{TABLE_PATH}: unknown action {row['action']!r} for {row['tag']}")
        tag, mask = _parse(row["tag"])
        entries.append(ProfileEntry(tag, mask, row["name"], row["action"]))
    return tuple(entries)


@cache
def _exact() -> dict[int, ProfileEntry]:
    return {e.tag: e for e in load_table() if e.mask == 0xFFFFFFFF}


@cache
def _masked() -> tuple[ProfileEntry, ...]:
    return tuple(e for e in load_table() if e.mask != 0xFFFFFFFF)


def entry_for(tag: int) -> ProfileEntry | None:
    """The table entry that covers ``tag`` (exact tags first, then repeating groups), or ``None``."""
    tag = int(tag)
    found = _exact().get(tag)
    if found is not None:
        return found
    for e in _masked():
        if e.matches(tag):
            return e
    return None


def resolve(action: str, vr: str) -> str:
    """The single action taken for a (possibly compound) Basic Profile action on an element of ``vr``.

    Our de-identified header is never written back as a DICOM file (only a few of its values reach the
    ``echo_studies`` table), so type-2 conformance does not force an empty value: every compound action
    containing ``X`` resolves to ``X`` (the element is removed), ``Z/D`` resolves to ``Z`` (emptied),
    and ``X/Z/U*`` resolves to ``X``. ``D`` on a sequence resolves to ``Z`` (an empty sequence: a dummy
    item would carry no information either). Dates and times are handled by the Retain Longitudinal
    Temporal Information with Modified Dates option in :mod:`assets.echo.deid` before this applies.
    """
    if "X" in action.split("/"):
        return "X"
    if action == "Z/D":
        return "Z"
    if action == "D" and vr == "SQ":
        return "Z"
    return action
