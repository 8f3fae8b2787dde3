"""PubMedVision and ROCO readers on small fixtures in the published layouts, and in the knowledge asset."""

import json

import polars as pl
from dagster import DagsterInstance

from assets.common.images import ImageIngestor
from assets.knowledge.image_cases import IMAGE_CASE_SCHEMA, read_pubmedvision, read_roco
from storage.sources import SourceDir
from tests.ingest.layouts import image_bytes


def write_pubmedvision(root):
    (root / "images").mkdir(parents=True)
    recs = []
    for i in range(3):
        name = f"images/pmc_{i}.jpg"
        (root / name).write_bytes(image_bytes(80 + i))
        recs.append(
            {
                "id": f"pmv{i}",
                "image": [name],
                "modality": "CT",
                "body_part": "Chest",
                "conversations": [
                    {"from": "human", "value": "<image>\\nDescribe."},
                    {"from": "gpt", "value": f"Axial CT shows a mass in case {i}."},
                ],
            }
        )
    recs.append({"id": "bad", "image": ["images/none.jpg"], "conversations": [{"from": "gpt", "value": "x"}]})
    recs.append({"id": "noanswer", "image": ["images/pmc_0.jpg"], "conversations": []})
    (root / "PubMedVision_Alignment_VQA.json").write_text(json.dumps(recs))
    return root


def write_roco(root):
    folder = root / "data" / "train" / "radiology"
    (folder / "images").mkdir(parents=True)
    lines = []
    for i in range(3):
        (folder / "images" / f"ROCO_{i:05d}.jpg").write_bytes(image_bytes(90 + i))
        lines.append(f"ROCO_{i:05d}\t Chest X-ray showing finding {i}. ")
    lines += ["ROCO_99999\t missing image", "ROCO_00004 no tab here"]
    (folder / "captions.txt").write_text("\n".join(lines) + "\n")
    return root


def test_pubmedvision_reader(tmp_path, storage):
    df, result = read_pubmedvision(
        SourceDir(str(write_pubmedvision(tmp_path / "pmv"))), ImageIngestor(storage)
    )
    assert df.schema == pl.Schema(IMAGE_CASE_SCHEMA) and df.height == 3
    assert df.row(0, named=True)["description"].startswith("Axial CT") and set(df["modality"]) == {"CT"}
    reasons = sorted(r.reason.split(":")[0] for r in result.rejected)
    assert reasons == ["malformed record", "missing image file"]
    assert storage.existing_images(set(df["image_ref"])) == set(df["image_ref"])


def test_roco_reader(tmp_path, storage):
    df, result = read_roco(SourceDir(str(write_roco(tmp_path / "roco"))), ImageIngestor(storage))
    assert df.height == 3 and df["id"].to_list() == ["roco:ROCO_00000", "roco:ROCO_00001", "roco:ROCO_00002"]
    assert df.row(1, named=True)["description"] == "Chest X-ray showing finding 1."
    assert sorted(r.row for r in result.rejected) == ["line 4", "line 5"]


def test_kb_image_cases_includes_configured_corpora(tmp_path, monkeypatch):
    from assets.knowledge.assets import kb_image_cases
    from orchestration.definitions import build_defs
    from storage.root import Storage

    monkeypatch.setenv("MEDRWR_SOURCE_ROCO", str(write_roco(tmp_path / "roco")))
    defs = build_defs()
    instance = DagsterInstance.ephemeral()
    assert (
        defs.resolve_job_def("vqa_ingest_job")
        .execute_in_process(partition_key="slake", instance=instance)
        .success
    )
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection={kb_image_cases.key})
    result = job.execute_in_process(
        instance=instance, run_config={"ops": {"kb_image_cases": {"config": {"external_corpora": ["roco"]}}}}
    )
    assert result.success and all(c.passed for c in result.get_asset_check_evaluations())
    cases = Storage().read_table("kb_image_cases")
    assert set(cases["source"]) == {"slake", "roco"} and (cases["source"] == "roco").sum() == 3
