"""report.html in headless Chromium: it renders (not blank) and no request leaves the page."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from tests.report_helpers import make_evaluated_folder
from tlora_bench.report import make_report

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install selenium)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium and chromedriver not found "
                                "(apt-get install -y chromium chromium-driver)")


def test_report_renders_offline(tmp_path: Path) -> None:
    from selenium.webdriver.chrome.service import Service

    page = make_report(make_evaluated_folder(tmp_path / "eval")) / "report.html"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,2000", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
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
