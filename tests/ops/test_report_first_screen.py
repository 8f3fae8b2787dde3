"""The evaluation report read at a glance: opened in Debian's headless Chromium (1600 x 1000 window), its
first screen shows the headline (strict accuracy of the newest checkpoint by benchmark and mode, the paired
difference to direct) and the headline figure, whole, without scrolling. The screenshot is kept in the
test's artefacts (``$MEDRWR_ARTIFACTS_DIR``)."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By

from tests.evaluation.results_fixtures import lineage, report_results
from tests.ops.browser import open_report_file
from training.evaluation.report import HEADLINE_HEADING, build_report

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def _box(driver, element) -> dict:
    return driver.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "return {top: r.top, bottom: r.bottom, height: window.innerHeight};",
        element,
    )


def test_headline_table_and_figure_are_on_the_first_screen(browser, artifacts, tmp_path):
    report = build_report(report_results(), lineage(), tmp_path / "report", smoke=True, n_resamples=300)
    open_report_file(browser, report.html_path, HEADLINE_HEADING)
    browser.save_screenshot(str(artifacts / "report_first_screen.png"))
    heading = browser.find_element(By.XPATH, f"//h2[text()='{HEADLINE_HEADING}']")
    table = heading.find_element(By.XPATH, "following::table[1]")
    figure = heading.find_element(By.XPATH, "following::img[1]")
    assert "Strict accuracy" in figure.get_attribute("alt")
    for what, element in (("headline heading", heading), ("accuracy table", table), ("figure", figure)):
        box = _box(browser, element)
        assert 0 <= box["top"] and box["bottom"] <= box["height"], (what, box)
    # the first table is the newest checkpoint's strict accuracy, one row per benchmark
    header = [th.text for th in table.find_elements(By.TAG_NAME, "th")]
    assert header[:3] == ["benchmark", "direct", "rwr"]
    assert len(table.find_elements(By.XPATH, ".//tbody/tr")) == 2
