"""A real headless browser for tests: Debian's chromium driven by playwright (its driver only: no
browser download). Records every request a page makes, and measures how colourful a screenshot is.

    with chromium_page() as (page, requests):
        page.goto("file:///tmp/report.html")
        page.screenshot(path="shot.png", full_page=True)
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# No sandbox (tests run as root in containers); nothing that phones home on its own, so every
# request a test sees is one the page made.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@contextlib.contextmanager
def chromium_page(width: int = 1280, height: int = 900):
    """(page, requested URLs) in a fresh headless chromium; skips the test without chromium."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (`make system-deps` installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            requested: list[str] = []
            page.on("request", lambda request: requested.append(request.url))
            yield page, requested
        finally:
            browser.close()


def distinct_colours(png: Path) -> int:
    """How many distinct RGB colours a screenshot has: a blank or broken page has a handful."""
    from PIL import Image

    with Image.open(png) as image:
        return len(image.convert("RGB").getcolors(maxcolors=1 << 24))


def blank_share(png: Path) -> float:
    """The share of pixels that are (near) the page background: white or the light grey of #fafafa."""
    import numpy as np
    from PIL import Image

    with Image.open(png) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    return float((pixels.min(axis=2) >= 245).mean())
