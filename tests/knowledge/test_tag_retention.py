"""Tag retention in the pipeline: every kb_text_index run keeps the tags something published references
(a checkpoint's manifest, an evaluation report, the KB pointer) and the newest ``keep_tags``; the others are
deleted and LanceDB's cleanup removes the versions no tag holds, so the table stops growing with every
refresh (seen: 79 -> 249 MB over 13 versions, every version kept)."""

import json
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize

from assets.knowledge.assets import kb_passages, kb_text_index
from assets.knowledge.retention import referenced_tags
from orchestration.definitions import build_resources
from retrieval.embedders import TextEmbedder
from retrieval.search import Retriever
from storage.pointers import ModelPointer
from storage.root import Storage

ASSETS = [kb_passages, kb_text_index]


def _refresh(instance, records: int, keep_tags: int, hours: float) -> dict:
    assert materialize(
        ASSETS,
        selection=[kb_passages],
        partition_key="pubmedqa",
        instance=instance,
        resources=build_resources(),
        run_config={"ops": {"kb_passages": {"config": {"max_records": records}}}},
    ).success
    result = materialize(
        ASSETS,
        selection=[kb_text_index],
        instance=instance,
        resources=build_resources(),
        run_config={
            "ops": {"kb_text_index": {"config": {"keep_tags": keep_tags, "cleanup_older_than_hours": hours}}}
        },
    )
    assert result.success
    mat = result.get_asset_materialization_events()[0].materialization
    return {k: v.value for k, v in mat.metadata.items()}


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_referenced_tags_survive_unreferenced_ones_expire_and_disk_shrinks(storage):
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("kb_sources", ["pubmedqa"])
    # three refreshes that keep everything (as before retention), then one with the retention rule
    first = _refresh(instance, 10, keep_tags=100, hours=1000)
    # a checkpoint trained against the first tag, a report that evaluated against the second
    checkpoint = ModelPointer.of("stage1", "m", "/ckpt", "ab" * 32, {"kb_tag": first["lancedb_tag"]})
    storage.write_table(checkpoint.to_row(), "stage1_checkpoint")
    second = _refresh(instance, 20, keep_tags=100, hours=1000)
    storage.write_bytes(
        json.dumps({"kb_tag": second["lancedb_tag"]}).encode(), "reports", "r1", "lineage.json"
    )
    third = _refresh(instance, 30, keep_tags=100, hours=1000)
    table = Path(storage.lancedb_uri("kb")) / f"{third['lancedb_table']}.lance"
    before = _size(table)
    fourth = _refresh(instance, 40, keep_tags=1, hours=0)

    assert referenced_tags(Storage(root=storage.root)) >= {first["lancedb_tag"], second["lancedb_tag"]}
    retention = fourth["retention"]
    assert retention["tags_deleted"] == [third["lancedb_tag"]]  # referenced by nothing, not the newest
    kept = {first["lancedb_tag"], second["lancedb_tag"], fourth["lancedb_tag"]}
    assert set(retention["tags_kept"]) == kept
    assert retention["versions_removed"] > 0 and retention["bytes_removed"] > 0
    # the fourth refresh added passages, yet the table on disk is smaller than before it
    assert _size(table) < before
    embedder = TextEmbedder()
    loc = Storage(root=storage.root).kb_location()
    for tag, rows in (
        (first["lancedb_tag"], first["dagster/row_count"]),
        (second["lancedb_tag"], second["dagster/row_count"]),
    ):
        pinned = Retriever(loc, embedder, version=tag)
        assert pinned.pinned.tbl.count_rows() == rows
        assert pinned.search(["helicopter transport"], k=1, mode="hybrid")[0]
    with pytest.raises(ValueError, match=third["lancedb_tag"]):
        Retriever(loc, embedder, version=third["lancedb_tag"])


@pytest.mark.timeout(120)
def test_a_pointer_that_does_not_verify_keeps_every_tag(storage):
    """Retention reads a pointer only as its gate record commits it. A checkpoint pointer rewritten after
    publication (it now names run-c; the committed one named run-a) would have let run-a expire: instead
    retention keeps every tag and version and says which table did not verify. Once the pointer verifies again
    retention applies: run-a (referenced) and run-c (newest) kept, run-b deleted."""
    from datetime import timedelta

    import pyarrow as pa

    from storage.errors import UncommittedTable

    tbl = storage.kb_location().connect().create_table("t", pa.table({"id": ["a"]}))
    for name in ("run-a", "run-b", "run-c"):
        tbl.tags.create(name, tbl.version)
        tbl.add(pa.table({"id": [name]}))
    committed = ModelPointer.of("stage1", "m", "/ckpt", "ab" * 32, {"kb_tag": "run-a"}).to_row()
    storage.publish_table(committed, "stage1_checkpoint", None, {"status": "passed", "run_id": "r1"})
    assert referenced_tags(storage) == {"run-a"}

    changed = ModelPointer.of("stage1", "m", "/ckpt", "ab" * 32, {"kb_tag": "run-c"}).to_row()
    storage.write_table(changed, "stage1_checkpoint")  # behind the gate: its record still names the first
    with pytest.raises(UncommittedTable, match=r"stage1_checkpoint.*the file changed after publication"):
        referenced_tags(storage)

    from assets.knowledge.retention import retain

    def apply() -> dict:
        return retain(storage, tbl, keep_tags=1, cleanup_older_than=timedelta(days=7), pinned=frozenset())

    kept = apply()
    assert kept["tags_deleted"] == [] and kept["versions_removed"] == 0
    assert kept["unverified_tables"] == ["stage1_checkpoint"]
    assert "every tag and version kept" in kept["skipped"] and "stage1_checkpoint" in kept["skipped"]
    assert set(tbl.tags.list()) == {"run-a", "run-b", "run-c"}

    storage.write_table(committed, "stage1_checkpoint")  # the committed bytes again: it verifies
    applied = apply()
    assert "skipped" not in applied and applied["tags_deleted"] == ["run-b"]
    assert set(tbl.tags.list()) == {"run-a", "run-c"}
