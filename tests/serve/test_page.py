"""The web page in a real browser (Playwright driving Debian's Chromium) against the real service.

``GHOSTFACENETS_SCREENSHOTS=DIR`` also saves the screenshots of docs/service.md there."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.browser import DESKTOP, PHONE, chromium
from tests.helpers.browser import screenshot as _screenshot
from tests.helpers.photos import photo

from .conftest import Served


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def _open(browser: Any, served: Served, key: str, viewport: dict[str, int]) -> Any:
    page = browser.new_page(viewport=viewport)
    page.goto(served.service.url + "/")
    page.get_by_test_id("api-key").fill(key)
    page.get_by_test_id("api-key").press("Enter")
    page.wait_for_selector("#key-status:has-text('Key accepted')")
    return page


def test_verify_two_photos(browser: Any, served: Served) -> None:
    with served.service.client(served.reader) as http:
        files = [("image_a", photo("img1.jpg").read_bytes()), ("image_b", photo("img2.jpg").read_bytes())]
        expected = http.post("/v1/verify", files=files).json()
    page = _open(browser, served, served.reader, DESKTOP)
    page.get_by_test_id("verify-a").set_input_files(str(photo("img1.jpg")))
    page.get_by_test_id("verify-b").set_input_files(str(photo("img2.jpg")))
    page.get_by_test_id("verify-submit").click()
    result = page.get_by_test_id("verify-result")
    result.filter(has_text="threshold").wait_for()
    text = result.inner_text()
    shown = re.search(r"similarity (-?\d+\.\d{3,})", text)
    assert shown, text
    assert float(shown.group(1)) == pytest.approx(expected["similarity"], abs=1e-4)
    assert f"threshold {expected['threshold']:.4f}" in text
    assert ("Same person" in text) is expected["is_same"]
    assert page.locator("fieldset.photo canvas:visible").count() == 2  # each photo with its face boxed
    _screenshot(page, "service-verify-desktop.jpg")
    page.reload()  # the key is kept for the browser session
    page.wait_for_selector("#key-status:has-text('Key accepted')")
    page.close()


def test_enroll_identify_browse_and_delete(browser: Any, served: Served) -> None:
    with served.service.client(served.admin) as http:
        http.post("/v1/galleries", json={"name": "page"})
    page = _open(browser, served, served.admin, DESKTOP)
    page.select_option("#gallery", "page")
    page.click("#tab-enroll")
    page.get_by_test_id("enroll-name").fill("Page Person")
    page.get_by_test_id("enroll-photos").set_input_files([str(photo("img13.jpg")), str(photo("img14.jpg"))])
    page.get_by_test_id("enroll-submit").click()
    page.get_by_test_id("enroll-result").filter(has_text="Enrolled").wait_for()
    assert "2 face(s)" in page.get_by_test_id("enroll-result").inner_text()

    page.click("#tab-identify")
    page.get_by_test_id("identify-photo").set_input_files(str(photo("img13.jpg")))
    page.get_by_test_id("identify-submit").click()
    page.get_by_test_id("identify-result").locator("table").wait_for()
    assert "Page Person" in page.get_by_test_id("identify-result").inner_text()
    assert page.locator("#identify-preview").is_visible()
    _screenshot(page, "service-identify-desktop.jpg")

    page.click("#tab-subjects")
    item = page.get_by_test_id("subjects").locator("li", has_text="Page Person")
    item.wait_for()
    assert "2 face(s)" in item.inner_text()
    page.once("dialog", lambda dialog: dialog.accept())
    item.get_by_role("button", name="Delete").click()
    page.locator("#subjects-status", has_text="Deleted Page Person").wait_for()
    with served.service.client(served.admin) as http:
        assert http.get("/v1/galleries/page/subjects").json()["subjects"] == []
    page.close()


def test_failed_enrolment_leaves_nobody(browser: Any, served: Served, tmp_path: Path) -> None:
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 200), (120, 120, 120)).save(blank)
    with served.service.client(served.admin) as http:
        http.post("/v1/galleries", json={"name": "page-failed"})
    page = _open(browser, served, served.admin, DESKTOP)
    page.select_option("#gallery", "page-failed")
    page.click("#tab-enroll")
    page.get_by_test_id("enroll-name").fill("Nobody")
    page.get_by_test_id("enroll-photos").set_input_files([str(photo("img1.jpg")), str(blank)])
    page.get_by_test_id("enroll-submit").click()
    page.get_by_test_id("enroll-result").filter(has_text="NO_FACE").wait_for()
    page.wait_for_timeout(300)  # the page removes the subject it created
    with served.service.client(served.admin) as http:
        assert http.get("/v1/galleries/page-failed/subjects").json()["subjects"] == []
    page.close()


def test_keyboard_only_on_a_phone_screen(browser: Any, served: Served) -> None:
    page = browser.new_page(viewport=PHONE)
    page.goto(served.service.url + "/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.dataset.testid") == "api-key"
    page.keyboard.type(served.reader)
    page.keyboard.press("Enter")
    page.wait_for_selector("#key-status:has-text('Key accepted')")
    # Enter on a photo slot opens its file chooser (the slot clicks its file input; the chooser itself is the
    # browser's, and headless Chromium shows it unreliably, so the click is what is checked)
    page.evaluate("window.clicked = []")
    page.evaluate(
        "for (const i of document.querySelectorAll('input[type=file]'))"
        " i.addEventListener('click', e => { window.clicked.push(i.id); e.preventDefault(); })"
    )
    for slot in ("verify-a", "verify-b"):
        page.focus(f"label[for='{slot}']")
        page.keyboard.press("Enter")
    assert page.evaluate("window.clicked") == ["verify-a", "verify-b"]
    page.get_by_test_id("verify-a").set_input_files(str(photo("img3.jpg")))
    page.get_by_test_id("verify-b").set_input_files(str(photo("img12.jpg")))
    page.focus("[data-testid='verify-submit']")
    page.keyboard.press("Enter")
    page.get_by_test_id("verify-result").filter(has_text="threshold").wait_for()
    assert re.search(r"\d\.\d{3,}", page.get_by_test_id("verify-result").inner_text())
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page is {width} px wide on a {PHONE['width']} px screen"
    _screenshot(page, "service-verify-phone.jpg")
    # tabs follow the arrow keys
    page.focus("#tab-verify")
    page.keyboard.press("ArrowRight")
    assert page.get_attribute("#tab-enroll", "aria-selected") == "true"
    assert page.locator("#panel-enroll").is_visible() and not page.locator("#panel-verify").is_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.close()


def test_wrong_key_is_refused_on_the_page(browser: Any, served: Served) -> None:
    page = browser.new_page(viewport=DESKTOP)
    page.goto(served.service.url + "/")
    page.get_by_test_id("api-key").fill("gfn_wrong")
    page.get_by_test_id("api-key").press("Enter")
    page.wait_for_selector("#key-status:has-text('Key refused')")
    assert page.evaluate("sessionStorage.length") == 0
    page.close()


def test_api_docs_render_offline(browser: Any, served: Served) -> None:
    """/docs is Swagger UI from this server's own files (no CDN): in a browser it lists the routes, and no request
    leaves the server's origin."""
    page = browser.new_page(viewport=DESKTOP)
    origins: list[str] = []
    page.on("request", lambda request: origins.append(request.url.split("/")[2]))
    page.goto(served.service.url + "/docs")
    page.wait_for_selector(".opblock-summary-path:has-text('/v1/verify')")
    assert page.locator(".opblock").count() >= 10
    assert set(origins) == {served.service.url.split("/")[2]}
    page.close()


def test_liveness_on_verify_and_a_spoof_refused_before_enrolling(browser: Any, served: Served) -> None:
    from tests.helpers.liveness import SAMPLES

    live, poster = SAMPLES / "image_T1.jpg", SAMPLES / "image_F1.jpg"
    with served.service.client(served.admin, timeout=900) as http:  # the first liveness request loads its model
        assert http.post("/v1/liveness", files=[("image", live.read_bytes())]).status_code == 200
        http.post("/v1/galleries", json={"name": "page-liveness"})
    page = _open(browser, served, served.admin, PHONE)
    page.get_by_test_id("verify-liveness").check()
    page.get_by_test_id("verify-a").set_input_files(str(live))
    page.get_by_test_id("verify-b").set_input_files(str(photo("img1.jpg")))
    page.get_by_test_id("verify-submit").click()
    page.get_by_test_id("verify-result").filter(has_text="Photo B: live").wait_for()
    assert re.search(
        r"Photo A: live: liveness 1\.0000 > 0\.9150 \(default\)", page.get_by_test_id("verify-result").inner_text()
    )
    page.get_by_test_id("verify-b").set_input_files(str(poster))
    page.get_by_test_id("verify-submit").click()
    page.get_by_test_id("verify-result").filter(has_text="SPOOF_SUSPECTED").wait_for()

    posted = []
    page.on("request", lambda request: posted.append((request.method, request.url)))
    page.select_option("#gallery", "page-liveness")
    page.click("#tab-enroll")
    page.get_by_test_id("enroll-name").fill("Poster Person")
    page.get_by_test_id("enroll-photos").set_input_files([str(live), str(poster)])
    page.get_by_test_id("enroll-liveness").check()
    page.get_by_test_id("enroll-submit").click()
    result = page.get_by_test_id("enroll-result")
    result.filter(has_text="SPOOF_SUSPECTED").wait_for()
    assert "image_F1.jpg: spoof suspected" in result.inner_text() and "nobody was enrolled" in result.inner_text()
    assert not [url for method, url in posted if method == "POST" and "/subjects" in url]  # refused before any
    _screenshot(page, "service-liveness-phone.jpg")
    page.get_by_test_id("enroll-photos").set_input_files([str(live)])
    page.get_by_test_id("enroll-submit").click()
    result.filter(has_text="Every face judged live").wait_for()
    with served.service.client(served.admin) as http:
        (subject,) = http.get("/v1/galleries/page-liveness/subjects").json()["subjects"]
        assert subject["name"] == "Poster Person" and subject["faces"] == 1
    page.close()
