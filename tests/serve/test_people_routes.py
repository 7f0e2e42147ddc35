"""The people routes over real HTTP against a real service process: photos added without names (the library's
faces and groups), reading, corrections, crops, keys and problem+json errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ghostfacenets.gallery import open_store
from ghostfacenets.people import GroupingSettings, PeopleLibrary
from tests.helpers.photos import photo

from .conftest import Served

GALLERY = "library"
PHOTOS = ("img1.jpg", "img2.jpg", "img4.jpg", "img3.jpg", "img12.jpg", "img13.jpg", "img14.jpg", "img15.jpg")


def _files(*names: str) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("image", (name, photo(name).read_bytes(), "image/jpeg")) for name in names]


@pytest.fixture(scope="module")
def recognizer(model_file):  # type: ignore[no-untyped-def]
    from ghostfacenets.pipeline import FaceRecognizer

    return FaceRecognizer(model_file, device="cpu")


def _library(served: Served, store):  # type: ignore[no-untyped-def]
    info = store.gallery(GALLERY)
    return PeopleLibrary(store, GALLERY, model=info.model)


def test_photos_people_and_corrections(served: Served, recognizer) -> None:  # type: ignore[no-untyped-def]
    # this random-weight test model's faces pass no quality gate and link at no threshold: the gallery's stored
    # settings (which the service uses) group every face, one face per photo in each person
    with open_store(served.db) as store:
        settings = {"link": -1.0, "join": -1.0, "min_faces": 2, "join_links": 1, "min_quality": 0.0}
        store.set_people_settings(GALLERY, {**GroupingSettings().to_dict(), **settings})
    with served.service.client(served.admin) as http:
        added = http.post(f"/v1/galleries/{GALLERY}/photos", files=_files(*PHOTOS), params={"reference": list(PHOTOS)})
        assert added.status_code == 201, added.text
        body = added.json()
        detected = sum(len(recognizer.detect(photo(n))) for n in PHOTOS)  # every face of every photo
        assert body["photos_added"] == len(PHOTOS) and body["faces_added"] == detected
        assert body["summary"]["faces"] == detected and body["summary"]["pending"] == 0
        again = http.post(f"/v1/galleries/{GALLERY}/photos", files=_files("img1.jpg"))
        assert again.json()["photos_skipped"] == 1 and again.json()["faces_added"] == 0

        listing = http.get(f"/v1/galleries/{GALLERY}/people", params={"limit": 500}).json()
        with open_store(served.db) as store:
            library = _library(served, store)
            expected = {p.id: p.faces for p in library.people(limit=500)}
            unsorted = [f.id for f in library.faces(None, limit=1000)]
        assert {p["id"]: p["faces"] for p in listing["people"]} == expected
        assert sum(expected.values()) + len(unsorted) == detected
        unsorted_route = http.get(f"/v1/galleries/{GALLERY}/unsorted").json()["faces"]
        assert [f["id"] for f in unsorted_route] == unsorted
        assert all(f["reference"] in PHOTOS and len(f["box"]) == 4 for f in unsorted_route)

        # a face's crop: the aligned 112x112 PNG of that face (this service keeps crops)
        some_face = added.json()["face_ids"]["img1.jpg"][0]
        crop = http.get(f"/v1/galleries/{GALLERY}/faces/{some_face}/crop")
        assert crop.status_code == 200 and crop.headers["content-type"] == "image/png"
        assert cv2.imdecode(np.frombuffer(crop.content, np.uint8), cv2.IMREAD_COLOR).shape == (112, 112, 3)

        # name the largest person: identify finds that name for its photos
        assert listing["people"] and len(unsorted) == 0
        person = listing["people"][0]
        faces = http.get(f"/v1/galleries/{GALLERY}/people/{person['id']}/faces").json()["faces"]
        assert len(faces) == person["faces"]
        named = http.patch(f"/v1/galleries/{GALLERY}/people/{person['id']}", json={"name": "Ada"})
        assert named.status_code == 200 and named.json()["name"] == "Ada" and named.json()["pinned"] == person["faces"]
        reference = faces[0]["reference"]
        found = http.post(f"/v1/galleries/{GALLERY}/identify", files=_files(reference), params={"top_k": 20}).json()
        assert any(c["name"] == "Ada" and c["similarity"] > 0.999 for f in found["faces"] for c in f["candidates"])
        taken = http.patch(f"/v1/galleries/{GALLERY}/people/{person['id'] + 10_000}", json={"name": "Ada"})
        assert taken.status_code == 404 and taken.json()["code"] == "NOT_FOUND"

        # not this person: the face leaves and never comes back, even after a full re-run
        rejected = faces[-1]["id"]
        after = http.post(f"/v1/galleries/{GALLERY}/faces/{rejected}/reject")
        assert after.status_code == 200 and after.json()["person_id"] != person["id"]
        full = http.post(f"/v1/galleries/{GALLERY}/people/cluster", json={"full": True})
        assert full.status_code == 200 and full.json()["summary"]["pending"] == 0
        with open_store(served.db) as store:
            assert _library(served, store).face(rejected).person_id != person["id"]
            assert _library(served, store).person(person["id"]).name == "Ada"

        if person["faces"] > 2:
            keep = [f["id"] for f in faces[:-1]]
            split = http.post(f"/v1/galleries/{GALLERY}/people/{person['id']}/split", json={"faces": keep[:1]})
            assert split.status_code == 201 and split.json()["faces"] == 1
            merged = http.post(f"/v1/galleries/{GALLERY}/people/{person['id']}/merge",
                               json={"people": [split.json()["id"]]})  # fmt: skip
            assert merged.status_code == 200 and merged.json()["faces"] == person["faces"] - 1
        same = http.post(f"/v1/galleries/{GALLERY}/people/{person['id']}/merge", json={"people": [person["id"]]})
        assert same.status_code == 422 and same.json()["code"] == "VALIDATION"


def test_people_routes_need_the_right_key(served: Served) -> None:
    with served.service.client(served.reader) as http:  # an identify key learns whom a face matched, no more
        refused = http.post(f"/v1/galleries/{GALLERY}/photos", files=_files("img2.jpg"))
        assert refused.status_code == 403 and refused.headers["content-type"] == "application/problem+json"
        assert "list-subjects" in http.get(f"/v1/galleries/{GALLERY}/people").json()["detail"]
        assert http.get(f"/v1/galleries/{GALLERY}/unsorted").status_code == 403
        assert http.post(f"/v1/galleries/{GALLERY}/people/cluster").status_code == 403
        assert http.post(f"/v1/galleries/{GALLERY}/faces/ignore", json={"faces": [1]}).status_code == 403
    with served.service.client(served.scoped) as http:
        other = http.get(f"/v1/galleries/{GALLERY}/people")
        assert other.status_code == 403 and other.json()["code"] == "FORBIDDEN"
    with served.service.client() as http:
        assert http.get(f"/v1/galleries/{GALLERY}/people").json()["code"] == "UNAUTHORIZED"


def test_people_route_errors_are_problem_json(served: Served) -> None:
    with served.service.client(served.admin) as http:
        missing = http.get("/v1/galleries/nobody-here/people")
        assert missing.status_code == 404 and missing.json()["code"] == "NOT_FOUND"
        bad = http.post(f"/v1/galleries/{GALLERY}/faces/move", json={"faces": [], "person": 1})
        assert bad.status_code == 422 and bad.json()["code"] == "VALIDATION"
        too_many = http.post(f"/v1/galleries/{GALLERY}/faces/ignore", json={"faces": list(range(1, 2002))})
        assert too_many.status_code == 422
        count = http.post(f"/v1/galleries/{GALLERY}/photos", files=_files("img2.jpg"), params={"reference": ["a", "b"]})
        assert count.status_code == 422 and "references" in count.json()["detail"]
        unknown = http.get(f"/v1/galleries/{GALLERY}/faces/999999/crop")
        assert unknown.status_code == 404 and unknown.headers["content-type"] == "application/problem+json"
