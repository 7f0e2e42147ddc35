"""The page's Groups view in a real browser (Playwright driving Debian's Chromium) against the real service: the
groups with their crops, naming, "not this person" and merging, on a desktop and on a 360-pixel phone screen."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest

from ghostfacenets.gallery import open_store
from ghostfacenets.people import GroupingSettings
from tests.helpers.browser import DESKTOP, PHONE, chromium, screenshot
from tests.helpers.photos import photo

from .conftest import Served

GALLERY = "page-groups"
PHOTOS = ("img1.jpg", "img2.jpg", "img4.jpg", "img5.jpg", "img3.jpg", "img12.jpg")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as opened:
        yield opened


def side_by_side(*names: str) -> bytes:
    """One photo of several people: deepface photos next to one another (JPEG)."""
    images = [cv2.imread(str(photo(name))) for name in names]
    height = min(image.shape[0] for image in images)
    row = np.hstack([cv2.resize(i, (round(i.shape[1] * height / i.shape[0]), height)) for i in images])
    return cv2.imencode(".jpg", row)[1].tobytes()


@pytest.fixture(scope="module")
def library(served: Served) -> Served:
    """Photos added without names to GALLERY, every face grouped: this random test model passes no quality gate
    and links at no threshold, so the gallery's stored settings link everything, and the two photos of two faces
    make a second person (two faces of one photo are never one person)."""
    with open_store(served.db) as store:
        settings = {"link": -1.0, "join": -1.0, "min_faces": 2, "join_links": 1, "min_quality": 0.0}
        store.set_people_settings(GALLERY, {**GroupingSettings().to_dict(), **settings})
    with served.service.client(served.admin) as http:
        http.post("/v1/galleries", json={"name": "aaa-other"})  # not the page's first choice: the test picks its own
        files = [("image", (name, photo(name).read_bytes(), "image/jpeg")) for name in PHOTOS]
        files += [("image", ("pair1.jpg", side_by_side("img13.jpg", "img16.jpg"), "image/jpeg")),
                  ("image", ("pair2.jpg", side_by_side("img18.jpg", "img20.jpg"), "image/jpeg"))]  # fmt: skip
        references = [*PHOTOS, "pair1.jpg", "pair2.jpg"]
        added = http.post(f"/v1/galleries/{GALLERY}/photos", files=files, params={"reference": references})
        assert added.status_code == 201, added.text
        assert [len(added.json()["face_ids"][name]) for name in ("pair1.jpg", "pair2.jpg")] == [2, 2]
    return served


def _open(browser: Any, served: Served, viewport: dict[str, int]) -> Any:
    page = browser.new_page(viewport=viewport)
    page.goto(served.service.url + "/")
    page.get_by_test_id("api-key").fill(served.admin)
    page.get_by_test_id("api-key").press("Enter")
    page.wait_for_selector("#key-status:has-text('Key accepted')")
    page.select_option("#gallery", GALLERY)
    page.click("#tab-groups")
    page.locator("#groups li.group").first.wait_for()
    return page


def _people(served: Served) -> list[dict[str, Any]]:
    with served.service.client(served.admin) as http:
        return http.get(f"/v1/galleries/{GALLERY}/people", params={"limit": 500}).json()["people"]


def test_groups_are_shown_named_corrected_and_merged(browser: Any, library: Served) -> None:
    people = _people(library)
    assert len(people) >= 2
    page = _open(browser, library, DESKTOP)
    cards = page.locator("#groups li.group")
    assert cards.count() == len(people)
    first = cards.first
    assert first.get_attribute("data-person") == str(people[0]["id"])
    first.locator("figure.face img").first.wait_for()  # the crops the service keeps, fetched with the key
    assert first.locator("figure.face").count() == people[0]["faces"]
    assert "face(s)" in page.locator("#groups-summary").inner_text()
    screenshot(page, "service-groups-desktop.jpg")

    first.get_by_role("textbox").fill("Ada Lovelace")
    first.get_by_role("button", name="Name").click()
    page.locator("#groups-status", has_text="Named Ada Lovelace").wait_for()
    assert "Ada Lovelace" in first.locator(".group-head").inner_text()
    assert _people(library)[0]["name"] == "Ada Lovelace"

    tile = first.locator("figure.face").first
    face = int(tile.get_attribute("data-face"))
    tile.get_by_role("button", name="Not this person").click()
    page.locator("#groups-status", has_text=f"Face {face} is not Ada Lovelace").wait_for()
    with library.service.client(library.admin) as http:
        assert http.get(f"/v1/galleries/{GALLERY}/people/{people[0]['id']}/faces").json()["faces"][0]["id"] != face

    page.close()
    page = _open(browser, library, DESKTOP)  # a new visit: the groups as the service now has them
    before = _people(library)
    first, second = page.locator("#groups li.group").nth(0), page.locator("#groups li.group").nth(1)
    first.locator("input.pick").check()
    second.locator("input.pick").check()
    page.click("#groups-merge")
    page.locator("#groups-status", has_text="Merged 2 groups: Ada Lovelace").wait_for()
    after = _people(library)
    assert len(after) == len(before) - 1 and after[0]["name"] == "Ada Lovelace"
    assert after[0]["faces"] == before[0]["faces"] + before[1]["faces"]
    page.close()


def test_groups_on_a_phone_screen(browser: Any, library: Served) -> None:
    page = _open(browser, library, PHONE)
    page.locator("#groups li.group figure.face img").first.wait_for()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page is {width} px wide on a {PHONE['width']} px screen"
    screenshot(page, "service-groups-phone.jpg")
    page.close()
