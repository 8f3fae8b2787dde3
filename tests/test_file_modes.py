"""File modes: published tables, quarantine and gate files follow the umask; restricted data stays 0600.

Every write goes through ``tempfile.mkstemp``, which always creates ``0600``: seen, published tables that
no other user of the machine could read whatever the umask.
"""

import os
import stat

import polars as pl
import pytest

from assets.common.resources import DeidResource
from assets.echo.keymap import write_key_map
from storage.root import Storage


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_published_outputs_follow_the_umask(tmp_path, umask_022):
    store = Storage(root=str(tmp_path / "pub"))
    df = pl.DataFrame({"id": ["a"]})
    table = store.write_table(df, "t", "p")
    quarantine = store.write_quarantine(df, "t", "p")
    gate = store.write_gate_record("t", "p", {"status": "passed"})
    for path in (table, quarantine, gate):
        assert _mode(path) == 0o644, path
    os.umask(0o027)
    assert _mode(store.write_table(df, "t", "q")) == 0o640


def test_restricted_data_stays_private(tmp_path, umask_022):
    store = Storage(root=str(tmp_path / "pub"))
    restricted = DeidResource(restricted_root=str(tmp_path / "restricted")).restricted(store)
    assert restricted.private
    assert _mode(restricted.write_bytes(b"raw clip", "sources", "echo", "a.avi")) == 0o600
    keymap = write_key_map(
        {"k1": "p/a.dcm"},
        str(tmp_path / "restricted" / "keymaps"),
        source="s",
        salt_fingerprint="f",
        published_root=str(tmp_path / "pub"),
    )
    assert _mode(keymap) == 0o600


def test_private_staging_is_promoted_with_the_published_mode(tmp_path, umask_022):
    store = Storage(root=str(tmp_path / "pub"))
    stage = store.staging("run-echo", staging_root=str(tmp_path / "restricted" / "staging"))
    stage.write_bytes(b"de-identified frame", "echo", "f.png")
    staged = stage.area.uri("echo", "f.png")
    assert _mode(staged) == 0o600  # patient data until the audit passes
    stage.promote()
    assert _mode(store.uri("echo", "f.png")) == 0o644
    public = store.staging("run-report")
    public.write_bytes(b"report", "reports", "r.html")
    assert _mode(public.area.uri("reports", "r.html")) == 0o644
