"""End to end in real headless Chromium (Debian's /usr/bin/chromium driven by Playwright):
a reader opens their link, zooms, pans, windows, answers 4 images + 1 unannounced retest
with mouse and keyboard, closes the browser mid-study, comes back, finishes; the answers are
in SQLite. With MAMMOSYNTH_UPDATE_DOCS=1 the reader page is saved to docs/study_reader.png.
Never runs `playwright install`: the browser comes from `make browser` (apt chromium)."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from mammosynth.study import db
from mammosynth.study.create import create_study
from mammosynth.synth.writer import Lesion, SyntheticSetWriter
from test_study_server import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
DOCS_SHOT = Path(__file__).resolve().parents[1] / "docs" / "study_reader.png"

pytestmark = pytest.mark.browser


def lesion_patch(rng: np.random.Generator, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """A mammography-like patch: correlated tissue texture plus a soft, slightly spiculated mass."""
    tissue = sum(ndimage.gaussian_filter(rng.standard_normal((size, size)), s) * w for s, w in ((1, 0.3), (4, 1.5), (12, 4.0)))
    tissue = 0.35 + 0.08 * tissue / np.abs(tissue).max()
    yy, xx = np.mgrid[:size, :size] - size / 2 + rng.normal(0, 4, 2)[:, None, None]
    angle = np.arctan2(yy, xx)
    radius = size * rng.uniform(0.14, 0.2) * (1 + 0.12 * np.sin(5 * angle + rng.uniform(0, 6)) + 0.06 * np.sin(13 * angle))
    dist = np.hypot(yy, xx) / radius
    mass = 1 / (1 + np.exp((dist - 1) * 8))
    img = tissue + 0.3 * mass + 0.01 * rng.standard_normal((size, size))
    return np.clip(img, 0, 1), dist < 1


@pytest.fixture
def browser_study(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("real", "synth"):
        with SyntheticSetWriter(tmp_path / name, method=name) as w:
            for _ in range(3):
                img, mask = lesion_patch(rng)
                w.add(img, [Lesion(mask=mask)])
    port = free_port()
    made = create_study(tmp_path / "real", tmp_path / "synth", tmp_path / "study", readers=1, n_per_class=2,
                        retest=1, seed=1, realism_score=True, base_url=f"http://127.0.0.1:{port}")
    return made, port


@pytest.fixture
def live_server(browser_study):
    import uvicorn

    from mammosynth.study.server import create_app

    made, port = browser_study
    server = uvicorn.Server(uvicorn.Config(create_app(made.path), host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield made
    server.should_exit = True
    thread.join(timeout=10)


def test_reader_completes_study_in_chromium(live_server):
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is not installed (run `make browser` or `apt-get install chromium`)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    made = live_server
    link = made.invitations[0].link
    errors: list[str] = []

    def watch(page):
        page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
        # CSP violations and failed requests show up as console errors (the favicon 404 is expected)
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" and "favicon" not in msg.text
                and "404" not in msg.text else None)

    def wait_next(page, previous: str | None) -> str:
        page.wait_for_function("prev => document.body.dataset.presentation && document.body.dataset.presentation !== prev",
                               arg=previous, timeout=15000)
        return page.evaluate("document.body.dataset.presentation")

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 760})
            watch(page)
            page.goto(link)
            shown = wait_next(page, None)
            assert page.text_content("#progress-text").strip() == "0 / 5"
            # zoom with the wheel, pan by dragging, window/level by right-dragging, then reset
            box = page.locator("#canvas").bounding_box()
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(cx, cy)
            page.mouse.wheel(0, -400)
            page.mouse.down()
            page.mouse.move(cx + 60, cy + 30, steps=4)
            page.mouse.up()
            page.mouse.down(button="right")
            page.mouse.move(cx - 80, cy - 60, steps=4)
            page.mouse.up(button="right")
            page.wait_for_timeout(100)
            readout = page.text_content("#readout")
            assert "Zoom 100%" not in readout and "W 100%" not in readout, readout
            page.keyboard.press("r")
            page.wait_for_timeout(100)
            assert page.text_content("#readout").startswith("Zoom 100%") and "L 50%  W 100%" in page.text_content("#readout")
            # the canvas shows the image (not a blank screen)
            lit = page.evaluate("""() => { const c = document.getElementById('canvas');
                const d = c.getContext('2d').getImageData(c.width/2 - 5, c.height/2 - 5, 10, 10).data;
                let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i]; return s / (d.length / 4); }""")
            assert 20 < lit < 250
            # image 1 with the mouse: Save stays disabled until both questions are answered
            page.click("[data-level='2']")
            assert page.is_disabled("#submit")
            page.click("[data-realism='4']")
            page.click("#submit")
            shown = wait_next(page, shown)
            assert page.text_content("#progress-text").strip() == "1 / 5"
            # image 2 with the keyboard: 5 (level) then 2 (realism, row switched automatically), Enter
            page.keyboard.press("5")
            page.keyboard.press("2")
            page.keyboard.press("Enter")
            shown = wait_next(page, shown)
            # close the browser window mid-study; the server keeps the position
            page.close()
            page = browser.new_page(viewport={"width": 1280, "height": 760})
            watch(page)
            page.goto(link)
            resumed = wait_next(page, None)
            assert resumed == shown and page.text_content("#progress-text").strip() == "2 / 5"
            for i, (level, realism) in enumerate(((1, 5), (6, 1), (3, 3))):
                page.keyboard.press(str(level))
                page.keyboard.press(str(realism))
                if i == 0:
                    page.wait_for_timeout(150)
                    page.screenshot(path=str(DOCS_SHOT if os.environ.get("MAMMOSYNTH_UPDATE_DOCS") == "1"
                                             else made.path.parent / "reader.png"))
                page.keyboard.press("Enter")
                if i < 2:
                    shown = wait_next(page, shown)
            page.wait_for_selector("#done:not(.hidden)", timeout=15000)
            assert "All 5 images are answered" in page.text_content("#done-text")
        finally:
            browser.close()
    assert not errors, errors

    con = sqlite3.connect(made.path / db.DB_NAME)
    rows = con.execute("SELECT a.position, a.level, a.realism, a.elapsed_ms, p.is_retest FROM answers a "
                       "JOIN presentations p ON p.presentation_id = a.presentation_id ORDER BY a.position").fetchall()
    con.close()
    assert [(r[0], r[1], r[2]) for r in rows] == [(0, 2, 4), (1, 5, 2), (2, 1, 5), (3, 6, 1), (4, 3, 3)]
    assert sum(r[4] for r in rows) == 1 and all(r[3] is not None and r[3] >= 0 for r in rows)
