"""The audit command on a real materialized graph: the chain of a checkpoint reaches raw-file hashes, the KB
tag and embedder, the git commit and the training config; a raw file changed after the fact is CHANGED, a
deleted one MISSING, and the command exits non-zero."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize

from assets.common.audit import CHANGED, MISSING, OK, Auditor, audit, render
from assets.common.resources import KnowledgeModelsResource, SourcesResource
from orchestration.audit import main
from orchestration.definitions import build_defs
from orchestration.instance import ensure_dagster_home
from storage.root import Storage
from tests.audit.chain import copy_sample_data, materialize_chain

REPO = Path(__file__).resolve().parents[2]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sources() -> SourcesResource:
    return SourcesResource(profile="smoke", data_dir=os.environ.get("MEDRWR_DATA_DIR"))


def _nodes(result) -> dict:
    return {n.label: n for n in result.root.walk() if not n.shown_above}


def _raw(node, name: str):
    [check] = [c for c in node.checks if c.kind == "raw file" and c.name == name]
    return check


@pytest.mark.timeout(300)
def test_root_table_raw_files_verified_then_changed(tmp_path, monkeypatch):
    """Fast: one ingest partition, its input manifest and its raw file, re-verified after an edit."""
    data = tmp_path / "data"
    (data / "medqa_us").mkdir(parents=True)
    src = REPO / "assets" / "sample_data" / "medqa_us" / "phrases_no_exclude_test.jsonl"
    raw = data / "medqa_us" / src.name
    raw.write_bytes(src.read_bytes())
    monkeypatch.setenv("MEDRWR_DATA_DIR", str(data))
    from assets.ingest.assets import text_qa_items
    from orchestration.definitions import build_resources

    instance = DagsterInstance.ephemeral()
    assert materialize(
        [text_qa_items], partition_key="medqa", instance=instance, resources=build_resources()
    ).success
    graph = build_defs().resolve_asset_graph()
    store = Storage()
    [record] = Auditor(store, _sources(), instance, graph)._records("text_qa_items", "medqa")

    node = Auditor(store, _sources(), instance, graph).node("text_qa_items", "medqa", record)
    check = _raw(node, str(raw))
    assert (check.status, check.recorded["sha256"], check.recorded["size"]) == (
        OK,
        _sha256(raw),
        raw.stat().st_size,
    )
    assert [c.status for c in node.checks if c.kind == "input manifest"] == [OK]
    assert node.code_version == "text_qa_items.v2" and node.data_version

    raw.write_bytes(raw.read_bytes() + b"\n")
    check = _raw(Auditor(store, _sources(), instance, graph).node("text_qa_items", "medqa", record), str(raw))
    assert check.status == CHANGED and check.found["sha256"] == _sha256(raw)

    # a tampered input manifest no longer matches the digest Dagster recorded
    manifest = node.facts["input_manifest"]
    Path(manifest).write_text(Path(manifest).read_text().replace(check.recorded["sha256"], "0" * 64))
    node = Auditor(store, _sources(), instance, graph).node("text_qa_items", "medqa", record)
    assert [c.status for c in node.checks if c.kind == "input manifest"] == [CHANGED]


@pytest.mark.s3
@pytest.mark.timeout(300)
def test_raw_files_on_s3_are_verified_by_etag(s3_env):
    """Sources on S3: the manifest records the ETag; the audit compares it (ok, CHANGED, MISSING)."""
    import s3fs

    from assets.common.audit import Node
    from storage.root import S3Settings

    s3 = S3Settings.from_env()
    fs = s3fs.S3FileSystem(**s3.s3fs_kwargs())
    bucket = s3_env.removeprefix("s3://").split("/")[0]
    fs.pipe(
        {
            f"{bucket}/raw/medqa_us/test.jsonl": b'{"q": 1}\n',
            f"{bucket}/raw/medqa_us/dev.jsonl": b'{"q": 2}\n',
        }
    )
    sources = SourcesResource(profile="full", data_dir=f"s3://{bucket}/raw", s3_endpoint_url=s3.endpoint_url)
    src = sources.source("medqa")
    for rel in ("test.jsonl", "dev.jsonl"):
        src.read_bytes(rel)
    manifest = src.input_manifest()
    assert all(e["etag"] and "sha256" not in e for e in manifest)

    def verdicts() -> dict[str, str]:
        fs.invalidate_cache()
        auditor, node = Auditor(Storage(root=s3_env, s3=s3), sources), Node("text_qa_items", "medqa")
        return {e["path_key"]: auditor._raw_file(node, e).status for e in manifest}

    assert verdicts() == {"test.jsonl": OK, "dev.jsonl": OK}
    fs.pipe({f"{bucket}/raw/medqa_us/test.jsonl": b'{"q": 3}\n'})
    fs.rm(f"{bucket}/raw/medqa_us/dev.jsonl")
    assert verdicts() == {"test.jsonl": CHANGED, "dev.jsonl": MISSING}


@pytest.mark.timeout(120)
def test_unknown_target_exits_2(capsys):
    assert main(["checkpoint:stage1", "--no-instance"]) == 2
    assert "not published" in capsys.readouterr().err
    assert main(["nonsense:x", "--no-instance"]) == 2


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_audit_of_a_materialized_checkpoint(tmp_path, monkeypatch, capsys):
    data = copy_sample_data(tmp_path / "data")
    monkeypatch.setenv("MEDRWR_DATA_DIR", str(data))
    monkeypatch.setenv("MEDRWR_WORK_DIR", str(tmp_path / "work"))
    ensure_dagster_home()
    instance = DagsterInstance.get()
    materialize_chain(instance, log=lambda _: None)
    store, graph = Storage(), build_defs().resolve_asset_graph()

    result = audit("checkpoint:stage1", store, _sources(), instance, graph)
    assert result.ok, render(result)
    nodes = _nodes(result)
    assert {
        "stage1_checkpoint",
        "stage1_items",
        "base_model",
        "kb_text_index",
        "kb_passages[pubmedqa]",
        "text_qa_items[medqa]",
        "text_qa_items[medmcqa]",
        "vqa_items[vqa_rad]",
        "ecbench",
        "echo_studies[synthetic]",
    } <= set(nodes)
    # down to raw file hashes (path key and sha256 computed here)
    medqa = data / "medqa_us" / "phrases_no_exclude_test.jsonl"
    check = _raw(nodes["text_qa_items[medqa]"], str(medqa))
    assert check.status == OK and check.recorded == {"size": medqa.stat().st_size, "sha256": _sha256(medqa)}
    manifest = json.loads(Path(nodes["text_qa_items[medqa]"].facts["input_manifest"]).read_text())
    assert manifest["files"] == [
        {"path_key": "phrases_no_exclude_test.jsonl", "size": medqa.stat().st_size, "sha256": _sha256(medqa)}
    ]
    # the KB tag (still in LanceDB at its version) and the embedder
    kb, pointer = nodes["kb_text_index"], store.read_table("kb_text_index").row(0, named=True)
    assert kb.facts["kb_tag"] == pointer["tag"] == result.root.facts["kb_tag"]
    assert kb.facts["embedder"] == KnowledgeModelsResource().text_model == result.root.facts["text_embedder"]
    assert kb.facts["kb_embedder_fingerprint"] == pointer["embedder_fingerprint"]
    assert [c.status for c in kb.checks if c.kind == "kb tag"] == [OK]
    # git commit, training config, Dagster run config, code versions, data versions agree down the chain
    root = result.root
    assert root.facts["git_commit"] and root.facts["git_commit"] != "unknown"
    assert root.facts["config_hash"] and root.facts["run_config"]["max_steps"] == 1
    assert (
        root.code_version == "stage1_checkpoint.v1"
        and nodes["stage1_items"].code_version == "stage1_items.v1"
    )
    assert {c.kind: c.status for c in root.checks} == {
        "items file": OK,
        "weights": OK,
        "items data version": OK,
        "kb tag used": OK,
    }
    echo = [c for c in nodes["echo_studies[synthetic]"].checks if c.kind == "raw file"]
    assert echo and all(c.status == OK for c in echo)  # through the restricted key map (labels.csv too)

    capsys.readouterr()
    assert main(["checkpoint:stage1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["summary"]["raw file"]["ok"] >= 30

    # a report whose Dagster record is gone: its lineage file, cited manifest digest checked
    run = "report-run-1"
    store.write_bytes(
        json.dumps(
            {
                "run_id": run,
                "kb_tag": pointer["tag"],
                "checkpoint_manifests": {
                    "stage1": f"{root.facts['path']} (manifest {root.facts['manifest_digest']})"
                },
            }
        ).encode(),
        "reports",
        run,
        "lineage.json",
    )
    target = f"report:{store.uri('reports', run, 'report.md')}"
    # a report from before artefact hashes cannot be re-hashed: unverified, a failure unless accepted
    strict = audit(target, store, _sources(), None, graph)
    assert not strict.ok and {(c.status, c.kind) for c in strict.failures} == {("unverified", "report files")}
    report = audit(target, store, _sources(), None, graph, allow_unverified=True)
    assert report.ok and [c.status for c in report.root.checks if c.kind == "manifest digest"] == [OK]
    assert "text_qa_items[medqa]" in _nodes(report)

    # a raw file changed after the fact
    medmcqa = data / "medmcqa" / "dev.json"
    medmcqa.write_bytes(medmcqa.read_bytes().replace(b"a", b"b", 1))
    changed = audit("checkpoint:stage1", store, _sources(), instance, graph)
    assert [(c.status, c.name) for c in changed.failures] == [(CHANGED, str(medmcqa))]
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestration.audit",
            "checkpoint:stage1",
            "--profile",
            "smoke",
            "--max-files",
            "3",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=300,
    )
    assert cli.returncode == 1, cli.stderr
    assert f"CHANGED  ] raw file: {medmcqa}" in cli.stdout and "RESULT: 1 problem(s)" in cli.stdout

    # and one deleted
    image = sorted((data / "vqa_rad" / "VQA_RAD Image Folder").iterdir())[0]
    image.unlink()
    gone = audit("checkpoint:stage1", store, _sources(), instance, graph)
    assert {(c.status, c.name) for c in gone.failures} == {(CHANGED, str(medmcqa)), (MISSING, str(image))}
    assert main(["checkpoint:stage1"]) == 1
    assert f"MISSING  ] raw file: {image}" in capsys.readouterr().out


@pytest.mark.timeout(300)
def test_report_has_an_audit_section(tmp_path):
    from tests.evaluation.results_fixtures import lineage, report_results
    from training.evaluation.report import build_report

    cited = {
        **lineage(),
        "run_id": "r1",
        "audit": {
            "command": "python -m orchestration.audit report:r1",
            "checkpoints": {
                "base": {"manifest": "aa11", "input_manifests": 0, "raw_files": 0},
                "stage2": {"manifest": "bb22", "input_manifests": 7, "raw_files": 412},
            },
        },
    }
    md = build_report(report_results(), cited, tmp_path, n_resamples=50).markdown
    section = md[md.index("## Audit") :]
    assert "| stage2 | bb22 | 7 | 412 |" in section and "`python -m orchestration.audit report:r1`" in section
    assert "'command'" not in md[: md.index("## Audit")]  # not repeated raw in the lineage table


@pytest.mark.timeout(300)
def test_eval_report_cites_the_audit_and_report_target_resolves(tmp_path, capsys):
    """eval_report materialized on published inputs: its Audit section names each checkpoint's manifest digest
    and raw-file count, it writes reports/<run>/lineage.json, and `audit report:<run>` checks the digests."""
    import polars as pl

    from assets.common.audit import manifest_digest
    from assets.evaluation.assets import eval_report, eval_results
    from assets.knowledge.assets import kb_image_index, kb_text_index
    from assets.training.assets import base_model
    from assets.training.launching import model_row
    from assets.training.stages import stage1_checkpoint, stage2_checkpoint
    from orchestration.definitions import build_resources
    from tests.evaluation.results_fixtures import IMAGE_TAG, KB_TAG, report_results

    store = Storage()
    results = report_results()
    for bench in results["benchmark"].unique().to_list():
        store.write_table(results.filter(pl.col("benchmark") == bench), "eval_results", bench)
    manifests = {}
    for role, asset in (
        ("base", "base_model"),
        ("stage1", "stage1_checkpoint"),
        ("stage2", "stage2_checkpoint"),
    ):
        row = model_row(
            role, "ref", store.uri("models", role, "r"), "w" * 64, {"git_commit": "c0ffee", "role": role}
        )
        store.write_table(row, asset)
        store.write_gate_record(asset, None, {"status": "passed", "run_id": f"run-{role}"})
        manifests[role] = manifest_digest(row["manifest"][0])
    for asset, tag in (("kb_text_index", KB_TAG), ("kb_image_index", IMAGE_TAG)):
        store.write_table(
            pl.DataFrame(
                [
                    {
                        "db": "kb",
                        "table": asset[:-6],
                        "physical_table": f"{asset[:-6]}__x",
                        "tag": tag,
                        "version": 1,
                        "uri": store.lancedb_uri(),
                        "embedder_fingerprint": "x",
                        "embedder": json.dumps({"model_id": "m"}),
                    }
                ]
            ),
            asset,
        )
    sources = [
        a.to_source_asset()
        for a in (
            eval_results,
            base_model,
            stage1_checkpoint,
            stage2_checkpoint,
            kb_text_index,
            kb_image_index,
        )
    ]
    instance = DagsterInstance.ephemeral()
    result = materialize([eval_report, *sources], instance=instance, resources=build_resources())
    assert result.success
    run = result.run_id
    md = Path(store.uri("reports", run, "report.md")).read_text()
    section = md[md.index("## Audit") :]
    assert (
        f"| base | {manifests['base']} | 0 | 0 |" in section
        and f"| stage2 | {manifests['stage2']} |" in section
    )
    assert f"`python -m orchestration.audit report:{run}`" in section
    assert json.loads(store.read_bytes("reports", run, "lineage.json"))["run_id"] == run

    report = audit(f"report:{run}", store, _sources(), instance, build_defs().resolve_asset_graph())
    assert {c.name: c.status for c in report.root.checks if c.kind == "manifest digest"} == {
        "base": OK,
        "stage2": OK,
    }
    # fixture pointers: no LanceDB behind the KB tags and no weights in the model folders; the audit says so
    assert {(c.kind, c.status) for c in report.failures} == {("kb tag", MISSING), ("weights", MISSING)}
    store.write_table(
        model_row("stage2", "ref", "elsewhere", "w" * 64, {"git_commit": "other"}), "stage2_checkpoint"
    )
    report = audit(
        f"report:{store.uri('reports', run)}", store, _sources(), instance, build_defs().resolve_asset_graph()
    )
    assert {c.name: c.status for c in report.root.checks if c.kind == "manifest digest"} == {
        "base": OK,
        "stage2": CHANGED,
    }
    # the report vouches for its files and the result rows: all verified, then each tampering is caught
    vouched = [c for c in report.root.checks if c.kind.startswith(("report", "result"))]
    fresh = {(c.kind, c.name): c.status for c in vouched}
    assert fresh[("report file", "report.html")] == OK and fresh[("report file", "report.md")] == OK
    assert fresh[("result rows", "medqa")] == OK and fresh[("result scores", "medqa")] == OK
    html = Path(store.uri("reports", run, "report.html"))
    html.write_text(html.read_text().replace("60.0", "99.9", 1))
    rows = store.read_table("eval_results", "medqa")
    store.write_table(rows.with_columns(pl.lit(True).alias("correct")), "eval_results", "medqa")
    tampered = audit(f"report:{run}", store, _sources(), instance, build_defs().resolve_asset_graph())
    found = {(c.kind, c.name): c.status for c in tampered.failures}
    assert found[("report file", "report.html")] == CHANGED and ("report file", "report.md") not in found
    assert found[("result rows", "medqa")] == CHANGED and found[("result scores", "medqa")] == CHANGED
    assert ("result rows", "vqa_rad") not in found and not tampered.ok


@pytest.mark.timeout(300)
def test_the_echo_label_manifest_is_verifiable_and_a_changed_ef_fails_the_audit():
    """Seen: the echo label manifest sat in the input manifest under a key missing from the restricted key
    map, so an EF changed from 61.5 to 11 passed as "1 unverified". Every listed input resolves through the
    key map now, the changed EF is CHANGED, and an unverified input fails unless the auditor accepts it."""
    import csv
    import io

    from dagster import AssetKey

    from assets.common.audit import UNVERIFIED, AuditResult
    from assets.echo.assets import echo_studies
    from orchestration.definitions import build_resources

    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("echo_sources", ["synthetic"])
    assert materialize(
        [echo_studies], partition_key="synthetic", instance=instance, resources=build_resources()
    ).success
    store, graph = Storage(), build_defs().resolve_asset_graph()

    def audit_echo(allow_unverified: bool = False, auditor: Auditor | None = None) -> AuditResult:
        [record] = instance.fetch_materializations(AssetKey("echo_studies"), limit=1).records
        auditor = auditor or Auditor(store, _sources(), instance, graph)
        node = auditor.node("echo_studies", "synthetic", record)
        return AuditResult("echo_studies[synthetic]", node, store.describe(), True, "now", allow_unverified)

    result = audit_echo()
    raw = [c for c in result.root.checks if c.kind == "raw file"]
    [labels] = [c for c in raw if c.name.endswith("labels.csv")]
    assert labels.status == OK and all(c.status == OK for c in raw) and len(raw) > 1
    assert result.ok, render(result)

    # the EF of the first clip changed in the label manifest (the reviewer's 61.5 -> 11)
    path = Path(labels.name)
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    rows[0]["ef_percent"] = "11"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buf.getvalue())
    changed = audit_echo()
    assert [(c.status, c.name) for c in changed.failures] == [(CHANGED, str(path))]
    assert not changed.ok

    # an auditor without access to the restricted key map cannot verify the files: a failure, unless accepted
    def blind() -> Auditor:
        auditor = Auditor(store, _sources(), instance, graph)
        auditor.restricted = Storage(root=str(Path(store.root).parent / "no-access"))
        return auditor

    unverified = audit_echo(auditor=blind())
    assert unverified.failures and {c.status for c in unverified.failures} == {UNVERIFIED}
    accepted = audit_echo(allow_unverified=True, auditor=blind())
    assert accepted.ok and "unverified checks accepted" in render(accepted)


@pytest.mark.timeout(120)
def test_an_eval_results_table_replaced_after_publication_fails_the_report_audit(storage, capsys):
    """The audit reads a published table only as its gate record commits it: eval_results[medqa] rewritten
    after publication (the same rows, other bytes: the row digest the report cites still matches, so the old
    audit passed) is a CHANGED ``published table`` check naming it and what to do, and the command exits 1."""
    import polars as pl

    from tests.evaluation.results_fixtures import report_results
    from training.evaluation.results import results_digest

    results = report_results()
    digests = {}
    for bench in sorted(results["benchmark"].unique().to_list()):
        rows = results.filter(pl.col("benchmark") == bench)
        storage.publish_table(rows, "eval_results", bench, {"status": "passed", "run_id": f"eval-{bench}"})
        digests[bench] = results_digest(rows)
    lineage = {"run_id": "r1", "checkpoint_manifests": {}, "artefacts": {"results_sha256": digests}}
    storage.write_bytes(json.dumps(lineage).encode(), "reports", "r1", "lineage.json")
    assert main(["report:r1", "--no-instance"]) == 0, capsys.readouterr().out
    capsys.readouterr()

    # replaced behind the gate: same rows (reversed, uncompressed), other bytes; the gate record is unchanged
    gate = storage.read_gate_record("eval_results", "medqa")
    rows = storage.read_table("eval_results", "medqa").reverse()
    path = Path(storage.uri(*storage.table_parts("eval_results", "medqa")))
    rows.write_parquet(path, compression="uncompressed")
    assert results_digest(rows) == digests["medqa"]
    assert storage.read_gate_record("eval_results", "medqa") == gate

    assert main(["report:r1", "--no-instance"]) == 1
    out = capsys.readouterr().out
    [line] = [x for x in out.splitlines() if "published table: eval_results[medqa]" in x]
    assert "CHANGED" in line and "the file changed after publication" in line
    assert "Materialize the partition again" in line and "Traceback" not in out
    assert "RESULT: 1 problem(s): CHANGED published table eval_results[medqa]" in out
    result = audit("report:r1", storage, _sources(), None, build_defs().resolve_asset_graph())
    assert [(c.kind, c.name, c.status) for c in result.failures] == [
        ("published table", "eval_results[medqa]", CHANGED)
    ]
