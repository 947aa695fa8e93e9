"""Fill a real study form in headless Chromium, save its CSV through the page's own JavaScript, analyze it.

Needs chromium and chromedriver (Debian: `apt-get install -y chromium chromium-driver`) and selenium;
skipped with the reason otherwise.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from tests.test_study_helpers import make_images, make_manifest, read_key_rows
from tlora_bench.study.commands import study
from tlora_bench.study.questions import QUESTIONS

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="chromium and chromedriver not found on PATH "
                                       "(apt-get install -y chromium chromium-driver)")


@pytest.fixture
def browser(tmp_path: Path):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    # An explicit driver path: selenium-manager would otherwise try to download one.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    yield driver
    driver.quit()


def _wait_for_file(folder: Path, name: str, timeout: float = 20.0) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = folder / name
        if path.is_file() and not list(folder.glob("*.crdownload")):
            return path
        time.sleep(0.1)
    raise AssertionError(f"{name} was not downloaded into {folder}: {sorted(p.name for p in folder.iterdir())}")


@pytest.mark.slow
def test_fill_form_save_csv_and_analyze(tmp_path: Path, browser) -> None:
    from selenium.webdriver.common.by import By

    manifest = make_manifest(tmp_path)
    make_images(tmp_path / "gen")
    out = tmp_path / "study"
    result = CliRunner().invoke(study, ["make", str(tmp_path / "gen"), "--pairs", "alpha-a:beta-b,alpha-a:gamma-c",
                                        "--n", "3", "--raters", "2", "--manifest", str(manifest),
                                        "--image-size", "32", "--out", str(out)])
    assert result.exit_code == 0, result.output
    browser.get((out / "rater-01.html").as_uri())
    trials = [s.get_attribute("data-trial") for s in browser.find_elements(By.CSS_SELECTOR, "section.trial")]
    assert len(trials) == 6
    # Always pick the left image: every answer is then known from the key.
    for trial_id in trials:
        for q in QUESTIONS:
            radio = browser.find_element(By.CSS_SELECTOR, f'input[name="{trial_id}_q{q.number}"][value="left"]')
            browser.execute_script("arguments[0].scrollIntoView();", radio)
            radio.click()
    browser.find_element(By.ID, "save").click()
    saved = _wait_for_file(browser.downloads, "answers-rater-01.csv")
    answers = pd.read_csv(saved)
    assert list(answers.columns) == ["study_id", "rater", "trial_id", "question", "answer"]
    assert set(answers["study_id"]) == {read_key_rows(out / "key.csv")[0]["study_id"]}
    assert len(answers) == 6 * len(QUESTIONS) and set(answers["answer"]) == {"left"}
    assert set(answers["rater"]) == {"rater-01"}
    assert "Saved 18 answers" in browser.find_element(By.ID, "status").text

    result = CliRunner().invoke(study, ["analyze", str(saved), "--key", str(out / "key.csv"), "--out",
                                        str(tmp_path / "analysis"), "--bootstrap", "50"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "analysis" / "analysis.csv")
    key = read_key_rows(out / "key.csv")
    for pair in ("alpha-a:beta-b", "alpha-a:gamma-c"):
        expected = sum(r["left"] == r["method_a"] for r in key if r["pair"] == pair)
        rows = table[table["pair"] == pair]
        assert list(rows["n"]) == [3] * 3 and list(rows["wins_a"]) == [expected] * 3
    assert (tmp_path / "analysis" / "bradley_terry.csv").is_file()


@pytest.mark.slow
def test_incomplete_trials_are_left_out_after_confirmation(tmp_path: Path, browser) -> None:
    from selenium.webdriver.common.by import By

    manifest = make_manifest(tmp_path)
    make_images(tmp_path / "gen")
    out = tmp_path / "study"
    result = CliRunner().invoke(study, ["make", str(tmp_path / "gen"), "--pairs", "alpha-a:beta-b", "--n", "2",
                                        "--raters", "1", "--manifest", str(manifest), "--image-size", "32",
                                        "--out", str(out)])
    assert result.exit_code == 0, result.output
    browser.get((out / "rater-01.html").as_uri())
    first, second = [s.get_attribute("data-trial") for s in browser.find_elements(By.CSS_SELECTOR, "section.trial")]
    for q in QUESTIONS:
        browser.find_element(By.CSS_SELECTOR, f'input[name="{first}_q{q.number}"][value="right"]').click()
    browser.find_element(By.CSS_SELECTOR, f'input[name="{second}_q1"][value="left"]').click()
    browser.find_element(By.ID, "save").click()
    alert = browser.switch_to.alert
    assert "1 trial(s) are not fully answered" in alert.text
    alert.accept()
    saved = _wait_for_file(browser.downloads, "answers-rater-01.csv")
    answers = pd.read_csv(saved)
    assert set(answers["trial_id"]) == {first} and len(answers) == len(QUESTIONS)
    result = CliRunner().invoke(study, ["analyze", str(saved), "--key", str(out / "key.csv")])
    assert result.exit_code == 0, result.output
