"""The knowledge group materialized in-process, locally and on the moto S3 server, with checks passing;
a second run after one source file changed re-embeds only that file's changed passages."""

import json
import shutil

import pytest
from dagster import DagsterInstance, materialize

from assets.common.resources import KnowledgeModelsResource
from assets.ingest.assets import vqa_items
from assets.knowledge.assets import kb_image_cases, kb_image_index, kb_passages, kb_text_index
from orchestration.definitions import build_resources
from retrieval.embedders import ImageEmbedder
from retrieval.search import ImageRetriever
from storage.root import Storage

SOURCES = ["pubmedqa", "slake_kg", "medquad", "medmcqa_exp"]
ASSETS = [vqa_items, kb_passages, kb_text_index, kb_image_cases, kb_image_index]


def resources():
    return build_resources()


def passages_config(limit: int | None):
    return {"ops": {"kb_passages": {"config": {"max_records": limit}}}} if limit else None


def run_graph(instance, limit: int | None = None):
    for ds in ("slake", "vqa_rad"):
        assert materialize(
            ASSETS, selection=[vqa_items], partition_key=ds, instance=instance, resources=resources()
        ).success
    for source in SOURCES:
        assert materialize(
            ASSETS,
            selection=[kb_passages],
            partition_key=source,
            instance=instance,
            resources=resources(),
            run_config=passages_config(limit),
        ).success
    result = materialize(
        ASSETS,
        selection=[kb_text_index, kb_image_cases, kb_image_index],
        instance=instance,
        resources=resources(),
    )
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks), [c.check_name for c in checks if not c.passed]
    return result


def index_metadata(result, asset: str) -> dict:
    mats = [m for m in result.get_asset_materialization_events() if m.asset_key.path[-1] == asset]
    return {k: v.value for k, v in mats[0].materialization.metadata.items()}


def _graph_with_incremental_change(tmp_path, monkeypatch, sample_data, root: str):
    src = tmp_path / "pubmedqa"
    shutil.copytree(sample_data / "pubmedqa", src)
    monkeypatch.setenv("MEDRWR_SOURCE_PUBMEDQA", str(src))
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("kb_sources", SOURCES)
    first = index_metadata(run_graph(instance, limit=25), "kb_text_index")
    assert first["embedded"] == first["dagster/row_count"] > 50 and first["inserted"] == first["embedded"]
    assert first["lancedb_tag"].startswith("run-") and first["recall_at_10_vs_exact"] == 1.0

    data = json.loads((src / "ori_pqal.json").read_text())
    pmid = next(iter(data))
    data[pmid]["CONTEXTS"] = ["A rewritten abstract about helicopter intubation success rates."]
    (src / "ori_pqal.json").write_text(json.dumps(data))
    assert materialize(
        ASSETS,
        selection=[kb_passages],
        partition_key="pubmedqa",
        instance=instance,
        resources=resources(),
        run_config=passages_config(25),
    ).success
    second_run = materialize(
        ASSETS,
        selection=[kb_text_index, kb_image_cases, kb_image_index],
        instance=instance,
        resources=resources(),
    )
    assert second_run.success and all(c.passed for c in second_run.get_asset_check_evaluations())
    second = index_metadata(second_run, "kb_text_index")
    assert (second["embedded"], second["updated"], second["inserted"], second["deleted"]) == (1, 1, 0, 0)
    assert second["lancedb_version"] > first["lancedb_version"]
    images = index_metadata(second_run, "kb_image_index")
    assert images["embedded"] == 0 and images["dagster/row_count"] > 0

    # CDIR: a stored case image retrieves its own case first
    store = Storage(root=root)
    embedder = ImageEmbedder()
    retriever = ImageRetriever(store.kb_location(), embedder)
    ref = retriever.pinned.tbl.search().select(["image_ref"]).limit(1).to_arrow()["image_ref"][0].as_py()
    assert retriever.search_images([store.get_image(ref)], k=1)[0][0].image_ref == ref
    assert images["embedder"]["random_weights"] is True


@pytest.mark.slow
def test_knowledge_group_local(tmp_path, monkeypatch, sample_data, storage):
    _graph_with_incremental_change(tmp_path, monkeypatch, sample_data, storage.root)


@pytest.mark.slow
@pytest.mark.s3
def test_knowledge_group_on_s3(tmp_path, monkeypatch, sample_data, s3_env):
    _graph_with_incremental_change(tmp_path, monkeypatch, sample_data, s3_env)
    store = Storage(root=s3_env)
    text_table = f"kb_text__{KnowledgeModelsResource().text_embedder().fingerprint()}"
    assert store.exists("lancedb", "kb", f"{text_table}.lance")
