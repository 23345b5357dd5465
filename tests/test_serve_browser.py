"""The page at ``/`` in a real headless Chromium (Debian's, driven by Playwright) against a real
uvicorn server: a radiograph chosen or dropped, the bone age read off the page.

Skips, saying why, without the serve extra, Playwright, or a Chromium binary (``apt-get install -y
chromium``; or set BONEAGE_CHROMIUM). Playwright's own browser download is never used. With
BONEAGE_SCREENSHOTS=DIR the screenshots are also written there (docs/img/serve-*.png come from it).
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'boneage[serve]'")
uvicorn = pytest.importorskip("uvicorn", reason="needs the serve extra: pip install 'boneage[serve]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="needs Playwright: pip install playwright")

from boneage.estimator import BoneAgeEstimator  # noqa: E402
from boneage.serve.app import create_app  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
TIMEOUT_MS = 90_000  # a loaded 2-core machine: the heatmap is about 150 model runs


def chromium() -> str:
    found = os.environ.get("BONEAGE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("no Chromium binary: apt-get install -y chromium, or set BONEAGE_CHROMIUM (the browser test did not run)")
    return found


@pytest.fixture(scope="module")
def estimator() -> BoneAgeEstimator:
    return BoneAgeEstimator()


@pytest.fixture(scope="module")
def server(estimator: BoneAgeEstimator) -> Iterator[str]:
    """A real uvicorn on a free loopback port, in a thread of this process."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(create_app(load=lambda: estimator), host="127.0.0.1", port=port, log_level="warning")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url + "readyz", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    yield url
    running.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = chromium()
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=path, headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        yield launched
        launched.close()


def page_at(browser: Any, url: str, width: int, height: int) -> Any:
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(TIMEOUT_MS)
    outside: list[str] = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith((url, "blob:", "data:")) else None)
    page.outside = outside
    page.goto(url)
    page.wait_for_function("document.getElementById('model').textContent.includes('boneage-')")
    return page


def screenshot(page: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    keep = os.environ.get("BONEAGE_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / name)
    assert path.stat().st_size > 10_000
    return path


def test_choose_a_radiograph_and_read_the_result(browser: Any, server: str, estimator: BoneAgeEstimator,
                                                 tmp_path: Path) -> None:
    expected = estimator.predict(SAMPLES / "1377.png", False, 180.0)
    page = page_at(browser, server, 1280, 900)
    page.set_input_files("#file", str(SAMPLES / "1377.png"))
    page.check("#sex-female")
    page.fill("#age", "15y")
    page.click("#submit")
    page.wait_for_selector("#result:not([hidden])")
    assert page.text_content("#bone-age-months") == f"({expected.bone_age_months:.1f} months)"
    assert expected.interval is not None and expected.comparison is not None
    interval = page.text_content("#interval") or ""
    assert f"{expected.interval.low_months:.0f}–{expected.interval.high_months:.0f} months" in interval
    assert page.text_content("#age-shown") == "180.0 months (15y 0m)"
    assert page.text_content("#category") == expected.comparison.category
    # both figures drawn (the chart needs matplotlib: installed with the test extras here)
    for figure in ("#heatmap", "#chart"):
        page.wait_for_function(f"document.querySelector('{figure}').naturalWidth > 0")
    page.wait_for_function("document.getElementById('status').textContent === 'Done.'")
    assert page.is_hidden("#error")
    assert page.outside == []  # nothing fetched from anywhere but this server
    screenshot(page, tmp_path, "serve-page-laptop.png")
    page.close()


def test_tablet_drop_and_an_error(browser: Any, server: str, estimator: BoneAgeEstimator, tmp_path: Path) -> None:
    """An upright tablet: one column, no sideways scrolling; a dropped file; a bad file's JSON error shown."""
    page = page_at(browser, server, 820, 1180)
    data = base64.b64encode((SAMPLES / "3020.png").read_bytes()).decode()
    transfer = page.evaluate_handle("""(b64) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const t = new DataTransfer();
        t.items.add(new File([bytes], "dropped.png", { type: "image/png" }));
        return t;
    }""", data)
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    page.check("#sex-female")
    page.click("#submit")
    page.wait_for_selector("#result:not([hidden])")
    expected = estimator.predict(SAMPLES / "3020.png", False)
    assert page.text_content("#bone-age-months") == f"({expected.bone_age_months:.1f} months)"
    assert page.is_hidden("#comparison")
    page.wait_for_function("document.getElementById('status').textContent === 'Done.'")
    assert "Give the age" in (page.text_content("#figure-note") or "")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(page, tmp_path, "serve-page-tablet.png")

    page.set_input_files("#file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not an image"}])
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])")
    assert page.text_content("#error-code") == "unsupported_media_type"
    assert page.is_hidden("#result")
    page.close()
