"""The Dagster UI in a real browser: the asset graph, a partition materialized from the UI, its preview.

The UI is started exactly as ``make ui`` starts it (``orchestration.ui``: ``dagster dev``, i.e. the web server
and the daemon that takes runs off the instance's queue), with an isolated DAGSTER_HOME and storage root, and
driven by Debian's headless Chromium through selenium. Screenshots go to the ``artifacts`` folder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest
from dagster import DagsterInstance
from selenium.webdriver.remote.webdriver import WebDriver

from orchestration import ui
from orchestration.definitions import build_defs
from orchestration.instance import ensure_dagster_home
from storage.pointers import ModelPointer
from storage.root import Storage
from tests.evaluation.results_fixtures import IMAGE_TAG, KB_TAG, report_results
from tests.ops.browser import (
    launch_partition,
    metadata_value,
    open_evaluation_report,
    open_markdown_metadata,
    open_page,
    table_cells,
    visible_text,
    wait_for,
    wait_for_run,
)
from tests.ops.ui_server import asset_keys, dagster_ui, graphql

# a cell holding a long hash or content id (what the previews put last), possibly cut with an ellipsis
HASHLIKE_CELL = re.compile(r"^([a-z_]+_)?[0-9a-f]{16,}")


def _shot(driver: WebDriver, folder: Path, name: str, full_page: bool = False) -> Path:
    if full_page:
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1600, min(int(height) + 100, 12000))
    path = folder / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"screenshot {path} not written"
    return path


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ui_materializes_a_partition_and_shows_it(tmp_path, monkeypatch, browser, artifacts):
    monkeypatch.setenv("MEDRWR_RESTRICTED_ROOT", str(tmp_path / "restricted"))
    monkeypatch.setenv("MEDRWR_PROFILE", "smoke")
    home = ensure_dagster_home()
    settings = ui.run_settings("smoke")
    ui.record_run_settings(home, settings)  # what the main command records before its runs
    root = Path(settings["MEDRWR_STORAGE_ROOT"])
    table = root / "tables" / "text_qa_items" / "pubmedqa.parquet"

    with dagster_ui(home, artifacts / "dagster_dev.log") as base_url:
        # the first-visit community dialog would cover the Materialize dialog; the instance turns it off
        assert graphql(base_url, "{ shouldShowNux }") == {"shouldShowNux": False}
        # the asset graph: the ingest group's nodes, and every asset of the code location in the catalog
        keys = asset_keys(base_url)
        assert {"text_qa_items", "vqa_items", "kb_text_index"} <= set(keys)
        open_page(browser, f"{base_url}/locations/medrwr/asset-groups/ingest", "text_qa_items")
        wait_for(lambda: "vqa_items" in visible_text(browser), 30, "vqa_items in the ingest graph")
        _shot(browser, artifacts, "01_asset_graph_ingest")
        open_page(browser, f"{base_url}/assets", keys[0])
        wait_for(lambda: all(k in visible_text(browser) for k in keys), 60, f"all of {keys} in the catalog")
        _shot(browser, artifacts, "02_catalog")

        # one partition of each ingest asset launched from its Materialize dialog; the daemon dequeues them
        text_run = launch_partition(browser, base_url, "text_qa_items", "pubmedqa")
        _shot(browser, artifacts, "03_run_launched")
        vqa_run = launch_partition(browser, base_url, "vqa_items", "vqa_rad")
        for n, run_id in enumerate((text_run, vqa_run)):
            status = wait_for_run(browser, base_url, run_id, timeout_s=360)
            _shot(browser, artifacts, f"04_run_finished_{n}")
            assert status == "Success", f"run {run_id} ended {status}; see {artifacts / 'dagster_dev.log'}"

        # the run wrote under the recorded storage root, and the UI shows that path in its metadata
        path = metadata_value(browser, base_url, "text_qa_items", "path", partition="pubmedqa")
        _shot(browser, artifacts, "05_partition_metadata")
        assert path == str(table) and table.exists()

        # previews keep the question readable: among the first columns, before every hash-like column
        for asset, partition in (("text_qa_items", "pubmedqa"), ("vqa_items", "vqa_rad")):
            metadata_value(browser, base_url, asset, "preview", partition=partition)
            dialog = open_markdown_metadata(browser, "preview")
            _shot(browser, artifacts, f"06_preview_{asset}")
            header, rows = table_cells(dialog)
            written = pl.read_parquet(root / "tables" / asset / f"{partition}.parquet")
            assert rows and len(rows) <= 5 and set(header) <= set(written.columns), header
            q = header.index("question")
            hash_columns = [c for i, c in enumerate(header) if any(HASHLIKE_CELL.match(r[i]) for r in rows)]
            assert q <= 3 and all(q < header.index(c) for c in hash_columns), (header, hash_columns)
            shown = rows[0][header.index("item_id")]
            question = written.filter(pl.col("item_id") == shown)["question"][0]
            assert question.startswith(rows[0][q].rstrip("…"))
            if asset == "vqa_items":  # its image references are content hashes: shown, and shown last
                assert "image_refs" in hash_columns and header[-len(hash_columns) :] == hash_columns


def _seed_evaluation_inputs(store: Storage) -> None:
    """What ``eval_report`` reads, written where the real assets publish it: ``eval_results`` partitions
    (hand-made rows, :func:`tests.evaluation.results_fixtures.report_results`), the three checkpoint pointers
    and the two KB index pointers (the report's lineage names them)."""
    results = report_results()
    for bench in results["benchmark"].unique().to_list():
        store.write_table(results.filter(pl.col("benchmark") == bench), "eval_results", bench)
    for role, asset in (
        ("base", "base_model"),
        ("stage1", "stage1_checkpoint"),
        ("stage2", "stage2_checkpoint"),
    ):
        manifest = {"stage": asset, "kb_tag": KB_TAG, "git_commit": "0" * 40}
        pointer = ModelPointer.of(role, "ref", store.uri("models", asset), "0" * 64, manifest)
        store.write_table(pointer.to_row(), asset)
    for asset, table, tag, model in (
        ("kb_text_index", "kb_text", KB_TAG, "all-MiniLM-L6-v2"),
        ("kb_image_index", "kb_image", IMAGE_TAG, "ViT-S-32"),
    ):
        store.write_table(
            pl.DataFrame(
                [
                    {
                        "db": "kb",
                        "table": table,
                        "physical_table": f"{table}__0",
                        "tag": tag,
                        "version": 1,
                        "uri": store.lancedb_uri("kb"),
                        "embedder_fingerprint": "0",
                        "embedder": json.dumps({"model_id": model}),
                    }
                ]
            ),
            asset,
        )


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_evaluation_report_opens_from_its_asset_page(tmp_path, monkeypatch, browser, artifacts):
    """The auditor's path: ``eval_report`` materialized into the UI's instance -> its asset page in the UI ->
    the ``report_html`` metadata entry -> the report itself, every plot decoded."""
    monkeypatch.setenv("MEDRWR_RESTRICTED_ROOT", str(tmp_path / "restricted"))
    monkeypatch.setenv("MEDRWR_PROFILE", "smoke")
    home = ensure_dagster_home()
    settings = ui.run_settings("smoke")
    ui.record_run_settings(home, settings)
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    store = Storage(root=settings["MEDRWR_STORAGE_ROOT"])
    _seed_evaluation_inputs(store)
    result = (
        build_defs()
        .resolve_job_def("eval_report_job")
        .execute_in_process(instance=DagsterInstance.get(), raise_on_error=False)
    )
    assert result.success, [e.message for e in result.all_events if e.is_failure]

    with dagster_ui(home, artifacts / "dagster_dev.log") as base_url:
        shown = open_evaluation_report(browser, base_url, "Med-RwR evaluation report")
        _shot(browser, artifacts, "eval_report_top")
        _shot(browser, artifacts, "eval_report_full_page", full_page=True)
    assert shown >= 4
    assert browser.current_url.startswith("file://") and "/reports/" in browser.current_url


@pytest.mark.timeout(120)
def test_a_ui_that_cannot_start_fails_the_test_instead_of_hanging(tmp_path):
    home = ensure_dagster_home()
    (home / "dagster.yaml").write_text("run_retries:\n  max_retry: 2\n")  # refused by Dagster's validation
    ui.record_run_settings(home, ui.run_settings("smoke"))
    with (
        pytest.raises(RuntimeError, match="dagster dev exited") as err,
        dagster_ui(home, tmp_path / "dagster_dev.log", start_timeout_s=90),
    ):
        pass
    assert "max_retry" in str(err.value)  # the log tail names the problem
