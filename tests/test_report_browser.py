"""report.html in headless Chromium: it renders (not blank), no request leaves the page, and the leaderboard
sorts by any column."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from tests.report_helpers import make_evaluated_folder
from tlora_bench.metrics.registry import get_metric
from tlora_bench.report import make_report

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install selenium)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium and chromedriver not found "
                                "(apt-get install -y chromium chromium-driver)")


def chromium(tmp_path: Path):
    """A headless Chromium that logs every network request."""
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,2000", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service(DRIVER), options=options)


def test_report_renders_offline(tmp_path: Path) -> None:
    page = make_report(make_evaluated_folder(tmp_path / "eval")) / "report.html"
    driver = chromium(tmp_path)
    try:
        driver.get(page.as_uri())
        text = driver.execute_script("return document.body.innerText")
        png = driver.get_screenshot_as_png()
        (tmp_path / "report.png").write_bytes(png)
        logs = driver.get_log("performance")
        loaded = driver.execute_script("return Array.from(document.images).every(i => i.complete && i.naturalWidth)")
    finally:
        driver.quit()
    assert "Leaderboard" in text and "tlora-64" in text and len(text) > 500
    colors = Image.open(io.BytesIO(png)).convert("RGB").getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 50  # plots and thumbnails drawn, not a blank page
    assert loaded
    sent = [message["params"] for message in (json.loads(entry["message"])["message"] for entry in logs)
            if message["method"] == "Network.requestWillBeSent"]
    ours = [p["request"]["url"] for p in sent if p.get("documentURL") == page.as_uri()]  # not the new-tab page's
    assert ours and all(url.startswith(("file:", "data:")) for url in ours), ours
    assert not [p["request"]["url"] for p in sent if p["request"]["url"].startswith(("http:", "https:", "ws"))]


def test_the_leaderboard_sorts_by_any_column_in_the_browser(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    labels = {"b-lora": ("lora-64", 64), "a-tlora": ("tlora-64", 64), "c-oft": ("oft-32", None)}
    root = make_evaluated_folder(tmp_path / "eval", labels=labels)
    per_method = pd.read_csv(root / "evaluation" / "per_method.csv")
    ts = {"b-lora": 0.31, "a-tlora": 0.12, "c-oft": 0.25}  # an order that is neither the rows' nor the labels'
    per_method.loc[per_method["metric"] == "ts", "mean"] = per_method["method_label"].map(ts)
    per_method.to_csv(root / "evaluation" / "per_method.csv", index=False)
    page = make_report(root) / "report.html"
    driver = chromium(tmp_path)
    try:
        driver.get(page.as_uri())
        table = driver.find_element(By.ID, "leaderboard-table")
        titles = [th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th")]

        def order() -> list[str]:
            rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
            return [row.find_element(By.TAG_NAME, "td").text for row in rows]

        before = order()
        header = table.find_elements(By.CSS_SELECTOR, "thead th")[titles.index(get_metric("ts").label)]
        header.click()
        ascending = order()
        header.click()
        descending = order()
        table.find_elements(By.CSS_SELECTOR, "thead th")[0].click()
        table.find_elements(By.CSS_SELECTOR, "thead th")[0].click()
        by_label = order()
        logs = driver.get_log("performance")
    finally:
        driver.quit()
    assert before == sorted(labels)  # a folder without a run leaderboard lists its labels sorted
    assert ascending == sorted(ts, key=ts.get) and descending == sorted(ts, key=ts.get, reverse=True)
    assert by_label == sorted(labels, reverse=True)  # text columns too, the second click reversing
    urls = [json.loads(entry["message"])["message"].get("params", {}).get("request", {}).get("url", "")
            for entry in logs]
    assert not [url for url in urls if url.startswith(("http:", "https:", "ws"))]
