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


FIRST_VISIT = """async () => {
  const t = performance.now();
  const g = await import("/web/ghostfacenets.mjs");
  await g.load();
  return performance.now() - t;
}"""


def first_visit(browser: Any, url: str) -> dict[str, Any]:
    """The page at ``url`` loading the browser module's model: time and bytes over the wire (compressed, as Chromium
    received them) in a fresh profile, then again from its caches."""
    context = browser.new_context()
    out = {}
    for visit in ("cold", "cached"):
        page = context.new_page()
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        received: list[float] = []
        cdp.on("Network.loadingFinished", lambda event, into=received: into.append(event["encodedDataLength"]))
        page.goto(url + "/")
        ms = page.evaluate(FIRST_VISIT)
        page.wait_for_timeout(200)
        out[visit] = {"ms": round(ms), "bytes": int(sum(received)), "requests": len(received)}
        page.close()
    context.close()
    return out
