"""Driving the real Dagster UI in Debian's headless Chromium (selenium + the system chromedriver).

Small helpers for the browser tests: start the browser, wait for something with a bound, launch one partition
from an asset's Materialize dialog, follow the run, read a materialization's metadata, open a report file.
Every wait raises ``TimeoutError`` naming what it waited for; nothing here waits without a bound.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

from selenium import webdriver
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    ElementNotInteractableException,
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement

T = TypeVar("T")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1600,1000",
)
RUN_DONE = ("Success", "Failure", "Canceled")
RECORDED_AT = re.compile(r"^[A-Z][a-z]{2} \d{1,2}, \d{1,2}:\d{2} [AP]M$")  # "Nov 22, 6:36 AM" in the overview


def chromium(user_data_dir: Path) -> WebDriver:
    """Debian's Chromium, headless, with a fresh profile in ``user_data_dir``; raises if it is not
    installed."""
    binary = shutil.which("chromium") or "/usr/bin/chromium"
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    missing = [p for p in (binary, driver_path) if not Path(p).exists()]
    if missing:
        raise RuntimeError(
            f"{', '.join(missing)} not found: install Debian's chromium and chromium-driver "
            "(`make browser-deps`, which `make test` runs)"
        )
    options = Options()
    options.binary_location = binary
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    return driver


def wait_for(condition: Callable[[], T | None], timeout_s: float, what: str, every_s: float = 0.5) -> T:
    """Poll ``condition`` until it returns a truthy value (returned); ``TimeoutError`` naming ``what`` after
    ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s:.0f} s for {what}")
        time.sleep(every_s)


def click(find: Callable[[], WebElement | None], what: str, timeout_s: float = 30) -> WebElement:
    """Find and click an element, retrying while it is missing, stale or covered.

    Blueprint dialogs and popovers animate in; a click that lands while another element still covers the
    target raises ``ElementClickInterceptedException``. Retrying the find-and-click until ``timeout_s`` is
    what a person does (click again once the dialog has settled), and the timeout names ``what`` if it never
    works.
    """

    def attempt() -> WebElement | None:
        try:
            element = find()
            if element is None:
                return None
            element.click()
            return element
        except (
            ElementClickInterceptedException,
            ElementNotInteractableException,
            StaleElementReferenceException,
            NoSuchElementException,
        ):
            return None

    return wait_for(attempt, timeout_s, f"a click on {what}")


def visible_text(driver: WebDriver) -> str:
    return driver.find_element(By.TAG_NAME, "body").text


def open_page(driver: WebDriver, url: str, ready_text: str, timeout_s: float = 60) -> None:
    """Open ``url`` and wait until ``ready_text`` is visible on the page."""
    driver.get(url)
    wait_for(lambda: ready_text in visible_text(driver), timeout_s, f"{ready_text!r} on {url}")


def asset_url(base_url: str, asset: str, **query: str) -> str:
    params = "&".join(f"{k}={quote(v)}" for k, v in query.items())
    return f"{base_url}/assets/{quote(asset)}" + (f"?{params}" if params else "")


def _popover_item(driver: WebDriver, text: str) -> WebElement | None:
    for item in driver.find_elements(By.CSS_SELECTOR, ".dagster-popover [role=menuitem]"):
        if item.text.strip() == text:
            return item
    return None


def launch_partition(driver: WebDriver, base_url: str, asset: str, partition: str) -> str:
    """Launch a run of ``asset[partition]`` the way a person does and return the run id.

    Partitions tab -> Materialize… -> Custom partition selection -> pick ``partition`` -> "Launch 1 run" ->
    the "Launched run" toast -> View. Returns the run id from the run page's URL.
    """
    open_page(driver, asset_url(base_url, asset, view="partitions"), partition)
    click(
        lambda: driver.find_element(By.XPATH, "//button[starts-with(normalize-space(), 'Materialize')]"),
        "the Materialize button",
    )
    dialog = wait_for(
        lambda: driver.find_elements(By.CSS_SELECTOR, ".bp5-dialog"), 30, "the Materialize dialog"
    )[0]
    click(
        lambda: dialog.find_element(By.XPATH, ".//div[normalize-space()='Select a partition or create one']"),
        "the partition selector",
    )
    click(lambda: _popover_item(driver, partition), f"partition {partition!r} in the selector")
    click(
        lambda: dialog.find_element(
            By.XPATH, f".//div[normalize-space()='Launch runs to materialize {asset}']"
        ),
        "the dialog title (closing the selector)",
    )
    click(
        lambda: next(
            (
                b
                for b in dialog.find_elements(By.XPATH, ".//button")
                if b.text.strip() == "Launch 1 run" and b.is_enabled()
            ),
            None,
        ),
        "'Launch 1 run'",
    )
    click(
        lambda: next(
            iter(
                driver.find_elements(By.XPATH, "//a[starts-with(@href, '/runs/')][normalize-space()='View']")
            ),
            None,
        ),
        "'View' in the 'Launched run' toast",
        timeout_s=60,
    )
    match = wait_for(lambda: re.search(r"/runs/([0-9a-f-]{36})", driver.current_url), 30, "the run page")
    return match.group(1)


def run_status(driver: WebDriver) -> str | None:
    """The final status shown in the run page's header (``Success``, ``Failure``, ``Canceled``), else
    ``None``."""
    lines = visible_text(driver).splitlines()
    return next((line for line in lines[:40] if line.strip() in RUN_DONE), None)


def wait_for_run(driver: WebDriver, base_url: str, run_id: str, timeout_s: float) -> str:
    """Watch the run page of ``run_id`` until it shows a final status; returns it."""
    open_page(driver, f"{base_url}/runs/{run_id}", run_id[:8])
    return wait_for(lambda: run_status(driver), timeout_s, f"run {run_id} to finish", every_s=2)


def metadata_value(
    driver: WebDriver, base_url: str, asset: str, key: str, partition: str | None = None
) -> str:
    """The value of metadata entry ``key`` of the latest materialization of ``asset`` (one partition of it),
    read from the asset's page the way an auditor reads it."""
    query = {"view": "partitions", "partition": partition} if partition else {"view": "overview"}
    open_page(driver, asset_url(base_url, asset, **query), "Metadata")
    row = wait_for(
        lambda: driver.find_elements(By.XPATH, f"//tr[td[normalize-space()='{key}']]"),
        60,
        f"metadata entry {key!r} of {asset}",
    )[0]
    # a partition's row is [key, value]; the overview's is [key, when it was recorded, value]
    cells = [td.text.strip() for td in row.find_elements(By.TAG_NAME, "td")[1:]]
    values = [c for c in cells if c and not RECORDED_AT.match(c)]
    return values[-1] if values else ""


def open_markdown_metadata(driver: WebDriver, key: str) -> WebElement:
    """Open the ``[Show Markdown]`` dialog of metadata entry ``key`` on the current asset page; returns the
    dialog."""
    click(
        lambda: driver.find_element(
            By.XPATH, f"//tr[td[normalize-space()='{key}']]//a[normalize-space()='[Show Markdown]']"
        ),
        f"[Show Markdown] of {key!r}",
    )
    return wait_for(
        lambda: [d for d in driver.find_elements(By.CSS_SELECTOR, ".bp5-dialog") if key in d.text],
        30,
        f"the {key!r} dialog",
    )[0]


def table_cells(dialog: WebElement) -> tuple[list[str], list[list[str]]]:
    """Header and body cells of the (Markdown-rendered) table inside ``dialog``, as the DOM holds them."""
    header = [th.get_attribute("textContent").strip() for th in dialog.find_elements(By.CSS_SELECTOR, "th")]
    rows = [
        [td.get_attribute("textContent").strip() for td in tr.find_elements(By.CSS_SELECTOR, "td")]
        for tr in dialog.find_elements(By.CSS_SELECTOR, "tbody tr")
    ]
    return header, rows


def open_report_file(driver: WebDriver, path: str | Path, heading: str) -> int:
    """Open a local HTML report (``file://``), wait for ``heading`` and for every image to decode.

    Returns the number of images shown; raises if one failed to load (``naturalWidth == 0``).
    """
    driver.get(Path(path).resolve().as_uri())
    wait_for(lambda: heading in visible_text(driver), 30, f"{heading!r} in {path}")
    images = driver.find_elements(By.TAG_NAME, "img")
    wait_for(
        lambda: all(driver.execute_script("return arguments[0].complete", i) for i in images),
        30,
        f"the images of {path} to load",
    )
    broken = [
        i.get_attribute("alt") or str(n)
        for n, i in enumerate(images)
        if not driver.execute_script("return arguments[0].naturalWidth", i)
    ]
    if broken:
        raise AssertionError(f"{path}: images that did not decode: {broken}")
    return len(images)


def open_evaluation_report(
    driver: WebDriver, base_url: str, heading: str, asset: str = "eval_report", key: str = "report_html"
) -> int:
    """The auditor's path to the evaluation report: the ``asset`` page in the UI -> its metadata entry ``key``
    (the report's HTML path) -> the report itself. Returns the number of images shown.

    Hook for the evaluation asset: once it records its HTML path under ``key``, the browser test calls this
    after materializing it (a ``file://`` URL; the browser runs on the machine that wrote the report).
    """
    return open_report_file(driver, metadata_value(driver, base_url, asset, key), heading)
