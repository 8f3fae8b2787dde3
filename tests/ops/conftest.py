"""Fixtures of the operations tests: a headless Chromium and a folder for screenshots."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.ops.browser import chromium


@pytest.fixture
def artifacts(request, tmp_path) -> Path:
    """Where a test saves its screenshots and logs: ``$MEDRWR_ARTIFACTS_DIR/ui/<test>`` when set, else under
    ``tmp_path``; the folder is printed after the test."""
    root = os.environ.get("MEDRWR_ARTIFACTS_DIR")
    folder = Path(root) / "ui" / request.node.name if root else tmp_path / "artifacts"
    folder.mkdir(parents=True, exist_ok=True)
    yield folder
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"{request.node.nodeid}: artefacts in {folder}")


@pytest.fixture
def browser(request, tmp_path, artifacts):
    """Debian's headless Chromium with a fresh profile, quit after the test (which, when it failed, leaves a
    screenshot and the page's HTML as ``failure.png`` / ``failure.html`` in its artefacts)."""
    driver = chromium(tmp_path / "chromium-profile")
    yield driver
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        driver.save_screenshot(str(artifacts / "failure.png"))
        (artifacts / "failure.html").write_text(driver.page_source)
    driver.quit()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so fixtures can tell whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report
