"""Exactly-once triggers with a cool-down: the cursor logic the sensors share. Plain Python (no Dagster).

A sensor observes a set of *keys* (a KB source, an index) and, for each, a *fingerprint* (a digest of what it
watches). :func:`decide` compares the observation with the JSON cursor and returns the keys to fire and the
next cursor:

- a key whose fingerprint equals the one last fired: nothing (unchanged; exactly once per change);
- a changed key never fired before, or fired at least ``cooldown_s`` ago: fire, record fingerprint and time;
- a changed key fired less than ``cooldown_s`` ago: *pending*; kept in the cursor and fired on the first
  tick after the cool-down ends, once, with the latest fingerprint (a burst of changes makes one run).

The cursor is JSON: ``{"v": 1, "keys": {key: {"fired": fp, "at": epoch s, "seen": fp}}}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

CURSOR_VERSION = 1


def load_cursor(cursor: str | None) -> dict[str, dict[str, Any]]:
    """The per-key state of ``cursor`` (empty when unset, unreadable or of another version)."""
    if not cursor:
        return {}
    try:
        data = json.loads(cursor)
    except json.JSONDecodeError:
        return {}
    if (
        not isinstance(data, dict)
        or data.get("v") != CURSOR_VERSION
        or not isinstance(data.get("keys"), dict)
    ):
        return {}
    return {str(k): dict(v) for k, v in data["keys"].items() if isinstance(v, dict)}


def dump_cursor(state: dict[str, dict[str, Any]]) -> str:
    return json.dumps({"v": CURSOR_VERSION, "keys": state}, sort_keys=True, separators=(",", ":"))


@dataclass
class Decision:
    """What one tick does: keys to fire (with their fingerprints), keys held by the cool-down, next cursor."""

    fire: dict[str, str] = field(default_factory=dict)
    pending: dict[str, float] = field(default_factory=dict)  # key -> seconds until its cool-down ends
    cursor: str = ""


def decide(
    cursor: str | None,
    observed: dict[str, str],
    now: float,
    cooldown_s: float,
    baseline: frozenset[str] | set[str] = frozenset(),
) -> Decision:
    """Which of ``observed`` (``{key: fingerprint}``) fire at ``now``; keys not observed keep their state.

    ``baseline``: keys whose current state is already built (e.g. a KB source materialized before the sensor
    was switched on); seen for the first time, they are recorded as they are and fire nothing: a first tick
    records the current state, only later changes fire."""
    state = load_cursor(cursor)
    out = Decision()
    for key, fp in sorted(observed.items()):
        if key not in state and key in baseline:
            state[key] = {"seen": fp, "fired": fp, "at": None, "baseline": True}
            continue
        entry = state.setdefault(key, {})
        entry["seen"] = fp
        if entry.get("fired") == fp:
            continue
        last = entry.get("at")
        wait = 0.0 if last is None else float(last) + cooldown_s - now
        if wait <= 0:
            out.fire[key] = fp
            entry.update(fired=fp, at=now)
        else:
            out.pending[key] = wait
    out.cursor = dump_cursor(state)
    return out
