"""The storage root: one code path for a local folder and an S3 API server."""

import polars as pl
import pytest

from storage.root import Storage, image_id_for


def _roundtrip(st: Storage):
    df = pl.DataFrame({"id": ["a", "b"], "tags": [["x"], []]})
    uri = st.write_table(df, "t", "p1")
    assert uri.endswith("tables/t/p1.parquet")
    assert st.read_table("t", "p1").equals(df)
    assert st.table_partitions("t") == ["p1"]
    data = b"\x89PNG fake bytes"
    image_id = st.put_image(data, "PNG")
    assert image_id == image_id_for(data, "png") and image_id.endswith(".png")
    assert st.put_image(data, "png") == image_id  # stored once
    assert st.get_image(image_id) == data
    assert st.existing_images({image_id, "ff" + "0" * 62 + ".jpg"}) == {image_id}
    with pytest.raises(FileNotFoundError, match="materialize it first"):
        st.read_table("t", "missing")


def test_local_roundtrip(storage):
    assert not storage.is_s3
    _roundtrip(storage)


@pytest.mark.s3
def test_s3_roundtrip(s3_storage):
    assert s3_storage.is_s3
    _roundtrip(s3_storage)
    opts = s3_storage.lancedb_storage_options()
    assert opts["aws_endpoint"].startswith("http://127.0.0.1") and opts["allow_http"] == "true"
    assert s3_storage.polars_storage_options()["aws_endpoint_url"] == opts["aws_endpoint"]


def test_a_full_disk_names_the_write_the_folder_and_the_size(tmp_path, monkeypatch):
    """Seen: a nearly full disk raised a bare "OSError: [Errno 28]" naming no path."""
    import errno
    import os

    import pytest

    from storage.root import Storage

    store = Storage(root=str(tmp_path / "root"))
    store.write_bytes(b"old", "tables", "t", "x.parquet")
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode)))
    with pytest.raises(OSError) as err:
        store.write_bytes(b"x" * 1234, "tables", "t", "x.parquet")
    message = str(err.value)
    assert err.value.errno == errno.ENOSPC and "writing x.parquet (1,234 bytes) into" in message
    assert str(tmp_path / "root" / "tables" / "t") in message and "bytes free" in message
    monkeypatch.setattr(os, "fdopen", real_fdopen)
    assert store.read_bytes("tables", "t", "x.parquet") == b"old"  # the old file intact
    assert not [n for n in os.listdir(tmp_path / "root" / "tables" / "t") if n.endswith(".tmp")]


def test_orphaned_staging_areas_are_swept_after_a_day(tmp_path):
    """Seen: staging left behind when a step failed with an exception (full disk, S3 errors)."""
    import os
    import time

    from storage.root import Storage

    store = Storage(root=str(tmp_path / "root"))
    orphan = store.staging("dead-run-kb_passages")
    orphan.write_bytes(b"x" * 10, "tables", "t", "a.parquet")
    live = store.staging("live-run-eval_report")
    live.write_bytes(b"y", "reports", "r", "report.md")
    old = time.time() - 2 * 24 * 3600
    for path in (tmp_path / "root" / "_staging" / "dead-run-kb_passages").rglob("*"):
        os.utime(path, (old, old))
    store.staging("next-run-x")  # every new staging area sweeps the orphans first
    assert sorted(store.list("_staging")) == ["live-run-eval_report"]
    assert live.read_bytes("reports", "r", "report.md") == b"y"
