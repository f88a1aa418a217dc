"""The leaderboard page: HTML, Markdown and CSV from run records; the HTML loaded in headless
Chromium (tables and their rows, sorting, per-class plots, no console error, a screenshot)."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest

from matbench.leaderboard.page import write_leaderboard
from matbench.report import published_rows

CLASSES = ["fabric", "foliage", "glass"]
ARTIFACTS = Path(__file__).parents[2] / "test-artifacts"


def _record(out: Path, model: str, benchmark: str, protocol: str, status: str, **extra) -> None:
    key = f"{model.replace(':', '_')}__{benchmark}__{protocol}"
    record = {
        "key": key,
        "model": {"name": model, "kind": "timm", "arch": model, "weights": None, "task": ""},
        "benchmark": benchmark,
        "protocol": protocol,
        "status": status,
        "headline": {"fmd": "mean_class_accuracy", "matseg": "all_by_point"}[benchmark],
        "metrics": {},
        "versions": {},
        **extra,
    }
    run_dir = out / "runs" / key
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text("model: {}\n")
    record.setdefault("config", f"runs/{key}/config.yaml")
    (out / "runs" / f"{key}.json").write_text(json.dumps(record))


@pytest.fixture
def board(tmp_path: Path) -> Path:
    out = tmp_path / "board"
    data = {"class_names": CLASSES, "num_samples": 30}
    for model, score in (("model-a", 0.5), ("model-b", 0.8), ("model-c", 0.65)):
        _record(
            out, model, "fmd", "linear_probe", "ok", data=data, images_per_second=40.0,
            metrics={"mean_class_accuracy": score, "accuracy": score + 0.01,
                     "per_class_accuracy": [score, score / 2, 1.0], "weight_decay": 1e-4},
        )  # fmt: skip
    _record(out, "model-a", "fmd", "zero_shot", "skipped", reason="no text tower </script>")
    _record(out, "model-b", "fmd", "zero_shot", "failed", error="DatasetNotFoundError: <x>")
    _record(out, "model-a", "matseg", "dense", "ok", metrics={"all_by_point": 0.61})
    write_leaderboard(out, title="Test board")
    return out


def test_markdown_and_csv(board: Path) -> None:
    md = (board / "leaderboard.md").read_text()
    assert "## FMD (Flickr Material Database), 10 classes" in md
    # measured rows sorted by the headline metric, published rows after them
    assert md.index("| model-b |") < md.index("| model-c |") < md.index("| model-a | linear")
    assert md.index("| model-a | linear") < md.index("*(published)*")
    rows = list(csv.DictReader((board / "leaderboard.csv").open()))
    fmd_published = published_rows({"fmd"})
    assert sum(r["status"] == "published" and r["benchmark"] == "fmd" for r in rows) == len(
        fmd_published
    )
    measured = [r for r in rows if r["source"] == "measured"]
    assert len(measured) == 6
    assert {r["status"] for r in measured} == {"ok", "skipped", "failed"}
    assert next(r for r in measured if r["status"] == "failed")["note"].startswith("Dataset")


def test_html_is_self_contained(board: Path) -> None:
    page = (board / "leaderboard.html").read_text()
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page and "<link" not in page and " src=" not in page
    assert page.count("<table") == 2
    assert page.count('<tr class="published">') == len(published_rows({"fmd", "matseg"}))
    assert "no text tower &lt;/script&gt;" in page  # escaped, not a closing tag
    assert 'href="runs/model-a__matseg__dense.json"' in page
    assert 'href="runs/model-a__matseg__dense/config.yaml"' in page


# -- headless Chromium ---------------------------------------------------------------------------------
CHROME_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1800",
)


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        message = "Debian's chromium and chromium-driver are needed (.ci/run installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not download anything
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in CHROME_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    yield driver
    driver.quit()


def _console_errors(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _load(driver, path: Path) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(path.resolve().as_uri())
    WebDriverWait(driver, 20).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )


def test_page_in_headless_chromium(board: Path, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    _load(browser, board / "leaderboard.html")
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1"
    tables = browser.find_elements(By.CSS_SELECTOR, "table.leaderboard")
    assert [t.get_attribute("data-benchmark") for t in tables] == ["fmd", "matseg"]
    fmd, matseg = tables
    fmd_rows = fmd.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(fmd_rows) == 5 + len(published_rows({"fmd"}))
    assert fmd_rows[0].find_elements(By.TAG_NAME, "td")[0].text == "model-b"
    assert len(fmd.find_elements(By.CSS_SELECTOR, "tr.published .badge")) == len(
        published_rows({"fmd"})
    )
    assert len(matseg.find_elements(By.CSS_SELECTOR, "tbody tr")) == 1 + len(
        published_rows({"matseg"})
    )

    # the whole page, as first shown, as a test artifact
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, min(int(height) + 40, 6000))
    shot = tmp_path / "leaderboard.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "leaderboard.png")

    # sorting: ascending on the second click of a metric column, blanks last
    headers = [th.text.strip() for th in fmd.find_elements(By.CSS_SELECTOR, "thead th")]
    column = headers.index("mean_class_accuracy")
    header = fmd.find_elements(By.CSS_SELECTOR, "thead th")[column]
    header.click()
    header.click()
    assert header.get_attribute("aria-sort") == "ascending"
    values = [
        row.find_elements(By.TAG_NAME, "td")[column].get_attribute("data-value")
        for row in fmd.find_elements(By.CSS_SELECTOR, "tbody tr")
    ]
    numbers = [float(v) for v in values if v]
    assert numbers == sorted(numbers) and 0.5 in numbers and values[-1] == ""

    # the per-class plot: one bar per (class, model) with a finite value
    bars = browser.find_elements(By.CSS_SELECTOR, "#plot-0-linear_probe svg rect")
    assert len(bars) == len(CLASSES) * 3
    assert _console_errors(browser) == []


def test_console_errors_are_caught(browser, tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><body><script>undefinedFunction();</script></body></html>"
    )
    _load(browser, page)
    errors = _console_errors(browser)
    assert errors and "undefinedFunction" in errors[0]["message"]
