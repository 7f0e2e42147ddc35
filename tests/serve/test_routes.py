"""The service's routes over real HTTP against a real process: health, info, detection, embeddings, verification
(the same numbers as the CLI), galleries, subjects, faces and identification, checked against the library."""

from __future__ import annotations

import base64
import io
import json

import cv2
import httpx
import numpy as np
import pytest

from tests.helpers.photos import photo
from tests.helpers.service import cli

from .conftest import Served


def _files(**images: object) -> list[tuple[str, tuple[str, bytes, str]]]:
    out = []
    for field, value in images.items():
        for i, path in enumerate(value if isinstance(value, list) else [value]):
            data = path if isinstance(path, bytes) else path.read_bytes()  # type: ignore[union-attr]
            out.append((field, (f"{field}{i}.jpg", data, "application/octet-stream")))
    return out


def _png(pixels: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", pixels[..., ::-1])
    assert ok
    return data.tobytes()


@pytest.fixture(scope="module")
def recognizer(model_file):
    from ghostfacenets.pipeline import FaceRecognizer

    return FaceRecognizer(model_file, device="cpu")


def test_health_and_page_need_no_key(served: Served) -> None:
    with served.service.client() as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        page = http.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        for hook in ("api-key", "verify-a", "verify-b", "verify-submit", "verify-result"):
            assert f'data-testid="{hook}"' in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert http.get("/static/app.js").status_code == 200
        assert "/v1/verify" in http.get("/openapi.json").json()["paths"]
        assert http.get("/docs").status_code == 200


def test_info(served: Served, recognizer) -> None:
    with served.service.client(served.reader) as http:
        info = http.get("/v1/info").json()
    from ghostfacenets import __version__

    assert info["embedding_dim"] == 512 and info["flip"] is True
    assert info["model_sha256"] == recognizer.model_id.sha256
    assert info["threshold"]["value"] == recognizer.threshold().value
    assert info["threshold"]["source"] == "fallback"
    assert info["version"] == __version__


def test_detect_matches_the_library(served: Served, recognizer) -> None:
    image = photo("img1.jpg")
    with served.service.client(served.reader) as http:
        r = http.post("/v1/detect", files=_files(image=image))
    assert r.status_code == 200, r.text
    body = r.json()
    expected = recognizer.detect(image)
    assert body["image"] == {"width": 1382, "height": 1868}
    assert len(body["faces"]) == len(expected) >= 1
    for got, want in zip(body["faces"], expected):
        np.testing.assert_allclose(got["box"], want.box, atol=0.01)
        np.testing.assert_allclose(got["landmarks"], want.landmarks, atol=0.01)
        assert got["score"] == pytest.approx(want.score, abs=1e-4)


def test_embed_matches_the_library_in_multipart_and_base64(served: Served, recognizer) -> None:
    image = photo("img3.jpg")
    expected = recognizer.embed(image)
    with served.service.client(served.reader) as http:
        multipart = http.post("/v1/embed", files=_files(image=image)).json()
        as_json = http.post("/v1/embed", json={"image": base64.b64encode(image.read_bytes()).decode()}).json()
        data_url = "data:image/jpeg;base64," + base64.b64encode(image.read_bytes()).decode()
        as_data_url = http.post("/v1/embed", json={"image": data_url}).json()
    for body in (multipart, as_json, as_data_url):
        assert "faces" in body, body
        embedding = np.array(body["faces"][0]["embedding"])
        assert embedding.shape == (512,)
        assert np.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(embedding, expected, atol=1e-5)


@pytest.mark.parametrize(("a", "b"), [("img1.jpg", "img2.jpg"), ("img1.jpg", "img3.jpg")])
def test_verify_gives_the_numbers_of_the_cli(served: Served, model_file, a: str, b: str) -> None:
    expected = json.loads(cli("verify", str(photo(a)), str(photo(b)), "--model", str(model_file), "--json").stdout)
    with served.service.client(served.reader) as http:
        r = http.post("/v1/verify", files=_files(image_a=photo(a), image_b=photo(b)))
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["similarity"] == pytest.approx(expected["similarity"], abs=2e-6)
    assert got["threshold"] == expected["threshold"]
    assert got["threshold_source"] == expected["threshold_source"]
    assert got["is_same"] == expected["is_same"]
    for key in ("face_a", "face_b"):
        np.testing.assert_allclose(got[key]["box"], expected[key]["box"], atol=0.01)
    with served.service.client(served.reader) as http:
        strict = http.post("/v1/verify", params={"threshold": 0.99}, files=_files(image_a=photo(a), image_b=photo(b)))
    assert strict.json()["threshold"] == 0.99 and strict.json()["threshold_source"] == "user"
    assert strict.json()["is_same"] is (got["similarity"] > 0.99)


def test_keys_roles_and_galleries(served: Served) -> None:
    with served.service.client() as http:
        missing = http.get("/v1/info")
        assert missing.status_code == 401 and missing.json()["code"] == "UNAUTHORIZED"
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert missing.headers["content-type"] == "application/problem+json"
        wrong = http.get("/v1/info", headers={"Authorization": "Bearer gfn_not-a-key"})
        assert wrong.status_code == 401 and wrong.json()["code"] == "UNAUTHORIZED"
        basic = http.get("/v1/info", headers={"Authorization": "Basic dXNlcjpwYXNz"})
        assert basic.status_code == 401
    with served.service.client(served.reader) as http:
        refused = http.post("/v1/galleries", json={"name": "readers-cannot"})
        assert refused.status_code == 403 and refused.json()["code"] == "FORBIDDEN"
    with served.service.client(served.scoped) as http:
        assert http.post("/v1/galleries", json={"name": "scoped"}).json()["code"] == "CONFLICT"  # keys create made it
        other = http.post("/v1/galleries", json={"name": "elsewhere"})
        assert other.status_code == 403 and other.json()["code"] == "FORBIDDEN"
        assert [g["name"] for g in http.get("/v1/galleries").json()["galleries"]] == ["scoped"]
        assert http.get("/v1/galleries/default/subjects").status_code == 403
    # a revoked key stops working at once
    extra = json.loads(cli("keys", "create", "--db", str(served.db), "--role", "identify", "--json").stdout)
    with served.service.client(extra["key"]) as http:
        assert http.get("/v1/info").status_code == 200
        cli("keys", "revoke", "--db", str(served.db), str(extra["id"]))
        assert http.get("/v1/info").status_code == 401


def test_gallery_subjects_faces_and_identify(served: Served, recognizer) -> None:
    with served.service.client(served.admin) as http:
        assert http.post("/v1/galleries", json={"name": "people"}).status_code == 201
        again = http.post("/v1/galleries", json={"name": "people"})
        assert again.status_code == 409 and again.json()["code"] == "CONFLICT"
        bad = http.post("/v1/galleries", json={"name": "../etc"})
        assert bad.status_code == 422 and bad.json()["code"] == "VALIDATION"

        alice = http.post("/v1/galleries/people/subjects", json={"name": "Alice", "metadata": {"team": "a"}})
        assert alice.status_code == 201
        alice_id = alice.json()["id"]
        assert alice.json()["name"] == "Alice"
        dup = http.post("/v1/galleries/people/subjects", json={"name": "Alice"})
        assert dup.status_code == 409 and dup.json()["code"] == "CONFLICT"
        bob_id = http.post("/v1/galleries/people/subjects", json={"name": "Bob"}).json()["id"]

        added = http.post(
            f"/v1/galleries/people/subjects/{alice_id}/faces",
            files=_files(image=[photo("img1.jpg"), photo("img2.jpg")]),
        )
        assert added.status_code == 201, added.text
        faces = added.json()["faces"]
        assert len(faces) == 2 and all(f["face_id"] > 0 and 0.9 <= f["det_score"] <= 1 for f in faces)
        assert (
            http.post(
                f"/v1/galleries/people/subjects/{bob_id}/faces", files=_files(image=photo("img3.jpg"))
            ).status_code
            == 201
        )
        taken = http.post(f"/v1/galleries/people/subjects/{bob_id}/faces", files=_files(image=photo("img1.jpg")))
        assert taken.status_code == 409 and taken.json()["code"] == "CONFLICT"  # img1 is Alice's

        listed = http.get(f"/v1/galleries/people/subjects/{alice_id}/faces").json()["faces"]
        assert sorted(f["face_id"] for f in listed) == sorted(f["face_id"] for f in faces)
        assert all(f["has_crop"] for f in listed)  # this service keeps crops (--store-crops)
        import hashlib

        assert {f["image_sha256"] for f in listed} == {
            hashlib.sha256(photo(n).read_bytes()).hexdigest() for n in ("img1.jpg", "img2.jpg")
        }

        renamed = http.patch(
            f"/v1/galleries/people/subjects/{alice_id}", json={"name": "Alice B", "metadata": {"x": 1}}
        )
        assert renamed.json()["name"] == "Alice B" and renamed.json()["metadata"] == {"x": 1}
        assert http.get(f"/v1/galleries/people/subjects/{alice_id}").json()["faces"] == 2

        r = http.post("/v1/galleries/people/identify", params={"top_k": 2}, files=_files(image=photo("img2.jpg")))
        assert r.status_code == 200, r.text
        (face,) = r.json()["faces"]
        # brute force with the library: best cosine similarity over each subject's enrolled faces
        query = recognizer.embed(photo("img2.jpg"))
        alice_best = max(float(query @ recognizer.embed(photo(n))) for n in ("img1.jpg", "img2.jpg"))
        bob_best = float(query @ recognizer.embed(photo("img3.jpg")))
        expected = sorted([(alice_best, alice_id), (bob_best, bob_id)], reverse=True)
        assert [c["subject_id"] for c in face["candidates"]] == [s for _, s in expected]
        np.testing.assert_allclose([c["similarity"] for c in face["candidates"]], [v for v, _ in expected], atol=2e-5)
        assert face["match"] == alice_id  # img2 itself is enrolled: similarity 1
        strict = http.post(
            "/v1/galleries/people/identify", params={"threshold": 1.0}, files=_files(image=photo("img2.jpg"))
        )
        assert strict.json()["faces"][0]["match"] is None

        # one face deleted, then the whole subject
        assert http.delete(f"/v1/galleries/people/faces/{faces[0]['face_id']}").status_code == 204
        assert http.get(f"/v1/galleries/people/subjects/{alice_id}").json()["faces"] == 1
        assert http.delete(f"/v1/galleries/people/subjects/{alice_id}").status_code == 204
        gone = http.get(f"/v1/galleries/people/subjects/{alice_id}")
        assert gone.status_code == 404 and gone.json()["code"] == "NOT_FOUND"
        assert served.db.name not in gone.json()["detail"]  # no server paths in answers
        r = http.post("/v1/galleries/people/identify", files=_files(image=photo("img2.jpg")))
        assert [c["subject_id"] for c in r.json()["faces"][0]["candidates"]] == [bob_id]

    from ghostfacenets.gallery import open_store

    with open_store(served.db) as store:  # nothing of Alice is left
        assert store.find_subject("people", "Alice B") is None
        assert all(f.subject != "Alice B" for f in store.export_faces("people"))
        assert dict(store.crops("people")).keys() == {f.id for f in store.faces("people", bob_id)}


def test_subject_pages(served: Served) -> None:
    with served.service.client(served.admin) as http:
        http.post("/v1/galleries", json={"name": "paged"})
        ids = [http.post("/v1/galleries/paged/subjects", json={"name": f"p{i}"}).json()["id"] for i in range(7)]
        seen, cursor = [], None
        while True:
            params = {"limit": 3, **({"cursor": cursor} if cursor is not None else {})}
            page = http.get("/v1/galleries/paged/subjects", params=params).json()
            assert len(page["subjects"]) <= 3
            seen += [s["id"] for s in page["subjects"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == ids
        assert http.delete("/v1/galleries/paged").status_code == 204
        assert http.get("/v1/galleries/paged/subjects").status_code == 404


def test_faces_errors(served: Served, blank_png: bytes) -> None:
    group = np.hstack([cv2.resize(cv2.imread(str(photo(n)))[..., ::-1], (600, 800)) for n in ("img1.jpg", "img3.jpg")])
    with served.service.client(served.admin) as http:
        http.post("/v1/galleries", json={"name": "errors"})
        sid = http.post("/v1/galleries/errors/subjects", json={"name": "Someone"}).json()["id"]
        url = f"/v1/galleries/errors/subjects/{sid}/faces"
        several = http.post(url, params={"on_multiple": "error"}, files=_files(image=_png(np.ascontiguousarray(group))))
        assert several.status_code == 422 and several.json()["code"] == "MULTIPLE_FACES"
        largest = http.post(url, files=_files(image=_png(np.ascontiguousarray(group))))
        assert largest.status_code == 201
        none = http.post(url, files=_files(image=[photo("img5.jpg"), blank_png]))
        assert none.status_code == 422 and none.json()["code"] == "NO_FACE"
        assert http.get(f"/v1/galleries/errors/subjects/{sid}").json()["faces"] == 1  # all or nothing
        verify = http.post("/v1/verify", files=_files(image_a=photo("img1.jpg"), image_b=blank_png))
        assert verify.status_code == 422 and verify.json()["code"] == "NO_FACE"
        detect = http.post("/v1/detect", files=_files(image=blank_png)).json()
        assert detect["faces"] == [] and detect["faces_in_image"] == 0
        found = http.post("/v1/detect", files=_files(image=_png(np.ascontiguousarray(group)))).json()
        assert found["faces_in_image"] == 2
        missing = http.get("/v1/galleries/errors/subjects/999999")
        assert missing.status_code == 404 and missing.json()["code"] == "NOT_FOUND"
        assert (
            http.post("/v1/galleries/nope/identify", files=_files(image=photo("img1.jpg"))).json()["code"]
            == "NOT_FOUND"
        )
        for bad in (
            http.post("/v1/galleries/errors/identify", params={"top_k": 0}, files=_files(image=photo("img1.jpg"))),
            http.post("/v1/detect", content=b"{not json", headers={"content-type": "application/json"}),
            http.post("/v1/detect", json={"picture": "abc"}),
            http.post("/v1/verify", files=_files(image_a=photo("img1.jpg"))),
            http.patch(f"/v1/galleries/errors/subjects/{sid}", json={}),
        ):
            assert bad.status_code in (415, 422) and bad.json()["code"] == "VALIDATION", bad.text
            assert "Traceback" not in bad.text


def test_urls_and_paths_are_never_read(served: Served) -> None:
    with served.service.client(served.reader) as http:
        for value in ("https://example.com/a.jpg", "file:///etc/passwd", "/etc/passwd", str(photo("img1.jpg"))):
            r = http.post("/v1/detect", json={"image": value})
            assert r.status_code in (415, 422) and r.json()["code"] == "INVALID_IMAGE", value
            assert "faces" not in r.json()


@pytest.fixture(scope="module")
def blank_png() -> bytes:
    ramp = np.linspace(60, 200, 320, dtype=np.float32)
    pixels = np.repeat(np.add.outer(ramp[:240] * 0.5, ramp * 0.5)[..., None], 3, axis=2).astype(np.uint8)
    return _png(pixels)


def test_crops_kept_with_store_crops_can_be_re_embedded(served: Served, recognizer) -> None:
    """--store-crops keeps the aligned crop: re-embedding it gives the enrolled embedding back."""
    from PIL import Image

    from ghostfacenets.gallery import open_store

    with served.service.client(served.admin) as http:
        http.post("/v1/galleries", json={"name": "crops"})
        sid = http.post("/v1/galleries/crops/subjects", json={"name": "C"}).json()["id"]
        face_id = http.post(f"/v1/galleries/crops/subjects/{sid}/faces", files=_files(image=photo("img4.jpg"))).json()[
            "faces"
        ][0]["face_id"]
    with open_store(served.db) as store:
        crops = dict(store.crops("crops"))
        (exported,) = list(store.export_faces("crops"))
    crop = np.array(Image.open(io.BytesIO(crops[face_id])).convert("RGB"))
    assert crop.shape == (112, 112, 3)
    np.testing.assert_allclose(recognizer.embed_aligned(crop[None])[0], exported.face.embedding, atol=1e-5)
    np.testing.assert_allclose(exported.face.embedding, recognizer.embed(photo("img4.jpg")), atol=1e-5)


def test_served_errors_are_problem_json(served: Served) -> None:
    with httpx.Client(base_url=served.service.url) as http:
        r = http.get("/no/such/route")
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
        assert set(r.json()) >= {"type", "title", "status", "detail", "code"}


def test_gallery_enrolled_through_the_service_moves_to_another_model(served: Served, model_file) -> None:
    """With --store-crops, `ghostfacenets gallery reembed` moves a gallery to another embedding space (here: flip
    off) without the photos; the service, still on the old space, then refuses it with CONFLICT."""
    from ghostfacenets.gallery import open_store
    from ghostfacenets.pipeline import FaceRecognizer

    names = ("img5.jpg", "img6.jpg")
    with served.service.client(served.admin) as http:
        http.post("/v1/galleries", json={"name": "moving"})
        sid = http.post("/v1/galleries/moving/subjects", json={"name": "M"}).json()["id"]
        assert (
            http.post(
                f"/v1/galleries/moving/subjects/{sid}/faces", files=_files(image=[photo(n) for n in names])
            ).status_code
            == 201
        )
    cli("gallery", "--db", str(served.db), "reembed", "--gallery", "moving", "--model", str(model_file), "--no-flip")
    no_flip = FaceRecognizer(model_file, device="cpu", flip=False)
    with open_store(served.db) as store:
        assert store.gallery("moving").model.flip is False  # type: ignore[union-attr]
        moved = {f.face.image_sha256: f.face.embedding for f in store.export_faces("moving")}
    import hashlib

    for name in names:
        key = hashlib.sha256(photo(name).read_bytes()).hexdigest()
        np.testing.assert_allclose(moved[key], no_flip.embed(photo(name)), atol=1e-5)
    with served.service.client(served.reader) as http:
        refused = http.post("/v1/galleries/moving/identify", files=_files(image=photo("img5.jpg")))
        assert refused.status_code == 409 and refused.json()["code"] == "CONFLICT"


def test_no_image_or_embedding_in_the_log(served: Served) -> None:
    """The server's whole output (access log at level info) after the session's requests."""
    import hashlib
    import re

    with served.service.client(served.reader) as http:
        answer = http.post("/v1/embed", json={"image": base64.b64encode(photo("img1.jpg").read_bytes()).decode()})
    assert answer.status_code == 200, answer.text
    log = served.service.log.read_text()
    assert "POST /v1/embed" in log  # the access log is there
    encoded = base64.b64encode(photo("img1.jpg").read_bytes()).decode()
    assert encoded[:40] not in log and "/9j/" not in log
    assert hashlib.sha256(photo("img1.jpg").read_bytes()).hexdigest() not in log
    # no embedding values: neither the numbers the answer carried nor the word outside the request lines' paths
    # (routes such as /v1/verify/embeddings name it)
    values = answer.json()["faces"][0]["embedding"][:8]
    assert not [v for v in values if repr(v)[:10] in log]
    without_paths = re.sub(r'"[A-Z]+ /\S* HTTP/[\d.]+"', "", log)
    assert "embedding" not in without_paths.lower() and "Traceback" not in log
