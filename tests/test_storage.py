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
