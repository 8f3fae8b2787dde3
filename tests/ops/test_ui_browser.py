"""The Dagster UI in a real browser: the asset graph, a partition materialized from the UI, its preview.

The UI is started exactly as ``make ui`` starts it (``orchestration.ui``: ``dagster dev``, i.e. the web server
and the daemon that takes runs off the instance's queue), with an isolated DAGSTER_HOME and storage root, and
driven by Debian's headless Chromium through selenium. Screenshots go to the ``artifacts`` folder.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from orchestration import ui
from orchestration.main import ensure_dagster_home
from tests.evaluation.results_fixtures import lineage, report_results
from tests.ops.browser import (
    launch_partition,
    metadata_value,
    open_markdown_metadata,
    open_page,
    open_report_file,
    table_cells,
    visible_text,
    wait_for,
    wait_for_run,
)
from tests.ops.ui_server import asset_keys, dagster_ui
from training.report import build_report

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
                assert "image_refs" in hash_columns and header[-len(hash_columns):] == hash_columns


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_evaluation_report_opens_in_the_browser(tmp_path, browser, artifacts):
    """The report file the evaluation asset will point to renders with every plot (the hook
    :func:`tests.ops.browser.open_evaluation_report` reaches it through the asset's metadata)."""
    report = build_report(report_results(), lineage(), tmp_path / "report", smoke=True, n_resamples=200)
    shown = open_report_file(browser, report.html_path, "Med-RwR evaluation report")
    _shot(browser, artifacts, "eval_report_top")
    _shot(browser, artifacts, "eval_report_full_page", full_page=True)
    assert shown == len(report.plot_paths) > 0


@pytest.mark.timeout(120)
def test_a_ui_that_cannot_start_fails_the_test_instead_of_hanging(tmp_path):
    home = ensure_dagster_home()
    (home / "dagster.yaml").write_text("run_retries:\n  max_retry: 2\n")  # refused by Dagster's validation
    ui.record_run_settings(home, ui.run_settings("smoke"))
    with pytest.raises(RuntimeError, match="dagster dev exited") as err, \
            dagster_ui(home, tmp_path / "dagster_dev.log", start_timeout_s=90):
        pass
    assert "max_retry" in str(err.value)  # the log tail names the problem
