"""The writer lock of a local knowledge base: two processes that sync the same new table at the same moment.

Without the lock both see no table and both create it; the loser fails with "Table ... already exists" (what
tests/faults/test_kb_writer_pool.py hit in CI when Dagster's SQLite storage let two run workers claim the
one-slot ``kb_writer`` pool). With it the two syncs run one after the other and both versions are tagged.
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from retrieval.store import KBLocation, local_root, writer_lock

REPO = Path(__file__).resolve().parents[2]
# one writer: wait for the shared start time, then sync its own sources into table "t" under the lock
WRITER = """
import sys, time
import numpy as np, polars as pl
from retrieval.store import KBLocation, sync_table, writer_lock
root, source, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
ids = [f"{source}:{i}" for i in range(30)]
frame = pl.DataFrame({"id": ids, "source": [source] * 30, "text": ids, "content_hash": ids})
rng = np.random.default_rng(abs(hash(source)) % 2**32)
embed = lambda rows: rng.standard_normal((rows.height, 8)).astype("float32")
loc = KBLocation(root)
while time.time() < start:
    pass
with writer_lock(loc, log=print):
    sync_table(loc, "t", frame, embed, {"kind": "test", "model_id": "random-8", "dim": 8},
               run_id=source, sources=[source], fts_column=None)
    time.sleep(2)  # hold it a little longer, so the other writer's attempt surely falls inside it
"""
HELD = re.compile(r"held from ([0-9.]+) to ([0-9.]+) \(waited ([0-9.]+) s\)")


@pytest.mark.timeout(300)
def test_two_writers_of_a_new_table_take_turns(tmp_path):
    root = tmp_path / "kb"
    start = time.time() + 10  # both interpreters have imported lancedb by then
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), source, str(start)],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for source in ("a", "b")
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    windows = sorted(tuple(map(float, HELD.search(out).groups())) for out, _ in outs)
    (_, end_1, _), (start_2, _, waited_2) = windows
    assert end_1 <= start_2, f"the two writers held the lock at the same time: {windows}"
    assert start_2 - waited_2 < end_1, f"the second writer never had to wait: {windows}"
    conn = KBLocation(str(root)).connect()
    tbl = conn.open_table(next(n for n in conn.table_names() if n.startswith("t__")))
    assert tbl.count_rows() == 60
    assert {"run-a", "run-b"} <= set(tbl.tags.list())


def test_a_held_lock_times_out_with_the_file_named(tmp_path):
    loc = KBLocation(str(tmp_path / "kb"))
    with writer_lock(loc) as path:
        assert path == tmp_path / "kb" / ".kb_writer.lock"
        with pytest.raises(TimeoutError, match=r"\.kb_writer\.lock.*held its lock") as err:
            with writer_lock(loc, timeout_s=0.2):
                pass
        assert "lsof" in str(err.value)
    with writer_lock(loc, timeout_s=0.2):  # released on exit: the next writer gets it at once
        pass


def test_object_store_databases_are_not_locked_here():
    """An ``s3://`` database has no local folder: the pool on a Postgres-backed instance is its guard."""
    assert local_root(KBLocation("s3://bucket/lancedb/kb")) is None
    assert local_root(KBLocation("file:///data/kb")) == Path("/data/kb")
    assert local_root(KBLocation("relative/kb")) == Path("relative/kb")
    with writer_lock(KBLocation("s3://bucket/lancedb/kb")) as path:
        assert path is None
