"""The Gradio demo (`medrg demo`) driven in headless Chromium: upload the example X-ray, paste its report (with a
finding the model was never trained to box), submit, and check that the page shows the same findings (phrases,
scores, boxes) as the package's prediction path, the overlay image, and the finding read but not grounded. The
demo's outputs themselves (what the page shows) are checked without a browser too.

Needs the `demo` extra (gradio), selenium, Debian's `chromium` and `chromium-driver`; skipped with the missing
piece named otherwise. The screenshot goes to a temporary folder, or to the path in `$MEDRG_DEMO_SCREENSHOT`
(the committed one: `MEDRG_DEMO_SCREENSHOT=docs/demo_screenshot.png`), shrunk to a small PNG (< 200 KB).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "docs" / "example_cxr.png"
REPORT = ROOT / "docs" / "example_report.txt"
# a stated finding outside the ten the default model boxes: read and listed, never boxed
NOT_GROUNDED_SENTENCE = " Calcified granuloma in the right upper lobe."
START_TIMEOUT_S = 240  # app start: gradio + torch import and the model load, on a loaded 2-core machine
RESULT_TIMEOUT_S = 120  # one grounding after "Ground" is pressed
MAX_SCREENSHOT_BYTES = 200_000


def _browser() -> tuple[str, str]:
    missing = [name for name in ("gradio", "selenium") if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"demo browser test needs {', '.join(missing)} (pip install 'medrg[demo]' selenium)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None
    )
    if chromium is None or driver is None:
        pytest.skip("no headless browser: apt-get install chromium chromium-driver (Debian) for this test")
    return chromium, driver


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_server(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the demo exited with status {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1.0)
    pytest.fail(f"the demo did not answer at {url} within {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def _small_png(raw: bytes, out: Path) -> None:
    """A browser screenshot -> a PNG of at most MAX_SCREENSHOT_BYTES (downscaled, 64-colour palette)."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(raw)).convert("RGB")
    width = 1000
    while True:
        scaled = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
        scaled.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
        if out.stat().st_size <= MAX_SCREENSHOT_BYTES or width <= 400:
            return
        width = int(width * 0.8)


def test_not_grounded_table_lists_the_stated_findings_without_a_box():
    from medrg.demo import not_grounded_table, status_line

    read = [
        {"label": "small right effusion", "grounded": True, "uncertain": False},
        {
            "label": "calcified granuloma",
            "grounded": False,
            "reason": "not a finding the model was trained to box",
        },
        {
            "label": "left nodule",
            "grounded": False,
            "uncertain": True,
            "reason": "its box scored below the threshold",
        },
    ]
    rows = not_grounded_table(read)
    assert rows == [
        ["calcified granuloma", "not a finding the model was trained to box"],
        ["left nodule (uncertain)", "its box scored below the threshold"],
    ]
    assert status_line([], rows) == (
        "No finding grounded. 2 finding(s) read, not grounded: calcified granuloma; left nodule (uncertain)"
    )
    assert status_line([{"label": "x"}], []) == "1 finding(s) grounded."


def test_demo_output_lists_a_finding_read_but_not_grounded():
    """What the page shows for the example X-ray and a report stating a granuloma: the boxed findings, and the
    granuloma listed as read, not grounded (never a silent "no finding")."""
    from medrg.demo import findings_table, make_grounder, not_grounded_table, status_line

    report = REPORT.read_text(encoding="utf-8").strip() + NOT_GROUNDED_SENTENCE
    overlay, records, read = make_grounder("default")(str(IMAGE), report)
    assert findings_table(records), "the example report's effusion and nodule are boxed"
    rows = not_grounded_table(read)
    assert [
        "calcified granuloma in the right upper lobe",
        "not a finding the model was trained to box",
    ] in rows
    status = status_line(records, rows)
    assert "read, not grounded:" in status and "calcified granuloma in the right upper lobe" in status
    assert not any("granuloma" in record["label"] for record in records)


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory):
    _browser()
    port = _free_port()
    log = tmp_path_factory.mktemp("demo") / "demo.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "medrg.demo", "--host", "127.0.0.1", "--port", str(port)],
            stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT),
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_for_server(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def _chrome(chromium: str, chromedriver: str):
    """A headless Chromium session (no sandbox, no GPU, a 1280 x 1150 window)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1150",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)


def _submit(driver, url: str, report: str) -> None:
    """Open the demo, upload the example X-ray, type `report`, wait for the upload to finish and press Ground."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    wait = WebDriverWait(driver, 60)
    upload = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#medrg-image input[type=file]")))
    upload.send_keys(str(IMAGE))
    text_area = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#medrg-report textarea")))
    text_area.send_keys(report)
    # the upload is finished when the file component lists the file
    wait.until(lambda d: IMAGE.stem in d.find_element(By.ID, "medrg-image").text)
    driver.find_element(By.ID, "medrg-ground").click()


def _findings_rows(driver, expected: int) -> list[list[str]] | bool:
    """The non-empty rows of the page's findings table (cell texts), or False while it has fewer than `expected`."""
    from selenium.webdriver.common.by import By

    # Gradio >= 6 renders a virtual grid (div role=gridcell data-row/data-col), older ones <tbody>
    cells = driver.find_elements(By.CSS_SELECTOR, "#medrg-findings [role=gridcell][data-row]")
    by_row: dict[int, list[str]] = {}
    for cell in cells:
        by_row.setdefault(int(cell.get_attribute("data-row")), []).append(cell.text.strip())
    rows = [by_row[i] for i in sorted(by_row)]
    if not rows:
        rows = [
            [c.text.strip() for c in r.find_elements(By.CSS_SELECTOR, "td")]
            for r in driver.find_elements(By.CSS_SELECTOR, "#medrg-findings tbody tr")
        ]
    rows = [r for r in rows if any(r)]
    return rows if len(rows) >= expected else False


def _overlay_size(driver):
    """The natural [width, height] of the page's overlay image, once it has loaded (waits up to 60 s)."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, 60).until(
        lambda d: d.execute_script(
            "const i = document.querySelector('#medrg-overlay img');"
            "return i && i.complete && i.naturalWidth > 0 ? [i.naturalWidth, i.naturalHeight] : null;"
        )
    )


def test_demo_in_headless_chromium_shows_the_findings_and_the_overlay(demo_url, tmp_path):
    chromium, chromedriver = _browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from medrg.demo import findings_table, make_grounder, not_grounded_table

    report = REPORT.read_text(encoding="utf-8").strip() + NOT_GROUNDED_SENTENCE
    # what the package's prediction path gives for the same input: the page must show exactly this
    overlay, records, read = make_grounder("default")(str(IMAGE), report)
    expected_rows = findings_table(records)
    not_grounded = not_grounded_table(read)
    assert not_grounded, "the granuloma is read, not grounded (test precondition)"
    assert records, "the default model grounds the example report (test precondition)"

    driver = _chrome(chromium, chromedriver)
    try:
        _submit(driver, demo_url, report)
        rows = WebDriverWait(driver, RESULT_TIMEOUT_S).until(lambda d: _findings_rows(d, len(expected_rows)))
        shown = [[cell for cell in row if cell] for row in rows]
        for (label, score, box), row in zip(expected_rows, shown):
            assert label in row, (label, row)
            assert box in row, (box, row)
            assert any(abs(float(cell) - score) < 1e-3 for cell in row if cell.replace(".", "", 1).isdigit())
        assert len(shown) == len(expected_rows)
        status = driver.find_element(By.ID, "medrg-status").text
        assert f"{len(records)} finding(s) grounded." in status
        assert "read, not grounded" in status
        listed = driver.find_element(By.ID, "medrg-not-grounded").text
        for label, reason in not_grounded:
            assert label in listed and reason in listed, (label, listed)
        image_width = _overlay_size(driver)
        assert tuple(image_width) == overlay.size  # the drawn overlay, not the raw upload
        out = Path(os.environ.get("MEDRG_DEMO_SCREENSHOT") or tmp_path / "demo_screenshot.png")
        _small_png(driver.get_screenshot_as_png(), out)
    finally:
        driver.quit()
    from PIL import Image

    assert out.stat().st_size <= MAX_SCREENSHOT_BYTES
    with Image.open(out) as saved:
        assert saved.format == "PNG" and saved.width >= 400
