"""Debian's Chromium driven by Playwright for the page tests (Playwright's own browser download cannot work here)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import missing, require_module

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]  # fmt: skip
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 360, "height": 760}


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (skips, or fails in CI, without Playwright or Debian's chromium)."""
    sync_api = require_module("playwright.sync_api", "test")
    if not Path(CHROMIUM).exists():
        missing(f"{CHROMIUM} not found: apt-get install chromium")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: Any, name: str) -> None:
    """Save a full-page screenshot under ``GHOSTFACENETS_SCREENSHOTS`` when it is set (docs' pictures)."""
    folder = os.environ.get("GHOSTFACENETS_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name), full_page=True, quality=85)
