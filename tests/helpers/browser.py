"""Debian's Chromium driven by Playwright (its own browser download cannot work where the tests run)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.helpers import missing, require_module

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (skips with the reason where Playwright or the browser is missing)."""
    sync_api = require_module("playwright.sync_api", "test")
    if not Path(CHROMIUM).exists():
        missing(f"{CHROMIUM} not found: apt-get install chromium")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 360, "height": 760}


def screenshot(page: Any, name: str) -> None:
    """Save a full-page screenshot under ``GHOSTFACENETS_SCREENSHOTS`` when it is set (the docs' pictures)."""
    folder = os.environ.get("GHOSTFACENETS_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name), full_page=True, quality=85)
