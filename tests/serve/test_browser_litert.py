"""The browser module on LiteRT.js (a service whose model the package converts: here a .safetensors file), in
Chromium, against the Python pipeline: faces and landmarks of the package's detector, embeddings of Python running
the very .tflite files the browser got, the verify answer of the API, and the files and bytes of a first visit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import require_module
from tests.helpers.browser import chromium
from tests.helpers.photos import photo
from tests.helpers.service import RunningService

from .conftest import LiteRtService
from .test_browser import PARITY_PHOTOS, _browser_faces, assert_same_faces


@pytest.fixture(scope="module", autouse=True)
def _mobile_extra() -> None:
    require_module("litert_torch", "mobile")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def _served_files(service: RunningService, folder: Path) -> tuple[dict[str, Any], Path, Path]:
    """The manifest, and the detector and embedder files as the browser gets them."""
    with service.client() as http:
        manifest = http.get("/web/manifest.json", timeout=600).json()
        files = []
        for part in ("detector", "embedder"):
            files.append(folder / f"{part}.tflite")
            files[-1].write_bytes(http.get(f"/web/{manifest[part]['url']}").content)
    return manifest, files[0], files[1]


@pytest.mark.slow  # 8 photos through both pipelines, and the service converts the model (20-60 s on 2 cores)
def test_litert_pipeline_equals_python(browser: Any, litert_device: LiteRtService, tmp_path: Path) -> None:
    """LiteRT.js with the served files: the faces of the package's detector (boxes and landmarks within 0.5 px,
    scores within 1e-3) and the embeddings of Python with the same .tflite (cosine >= 0.9999); two threads in the
    cross-origin isolated page."""
    from ghostfacenets import FaceRecognizer

    manifest, _, embedder = _served_files(litert_device.service, tmp_path)
    assert manifest["runtime"]["name"] == "litert.js" and manifest["embedder"]["weights"] == "as served"
    same_file = FaceRecognizer(str(embedder), threshold=0.3)
    page = browser.new_page()
    page.goto(litert_device.service.url + "/")
    found = _browser_faces(page, PARITY_PHOTOS)
    page.close()
    assert found["isolated"] and found["threads"] == 2
    assert_same_faces(found["faces"], same_file)


def test_litert_files_are_served_for_browsers(litert_device: LiteRtService, tmp_path: Path) -> None:
    """LiteRT.js's module finds its builds by their names beside it: they are served from a folder named by their
    content, immutable, the WebAssembly gzip-compressed, with the headers its worker threads need; the manifest
    names the detector's inputs (one signature each) and both files are the ones it describes."""
    from ai_edge_litert.interpreter import Interpreter

    manifest, detector, embedder = _served_files(litert_device.service, tmp_path)
    module = manifest["runtime"]["module"]
    folder = module.rsplit("/", 1)[0]
    with litert_device.service.client() as http:
        gz = {"Accept-Encoding": "gzip"}
        for name, media in [
            ("litert.mjs", "text/javascript"),
            ("wasm-utils.mjs", "text/javascript"),
            ("litert_wasm_threaded_internal.js", "text/javascript"),
            ("litert_wasm_threaded_internal.wasm", "application/wasm"),
            ("litert_wasm_compat_internal.wasm", "application/wasm"),
        ]:
            answer = http.get(f"/web/{folder}/{name}", headers=gz)
            assert answer.status_code == 200, name
            assert answer.headers["content-type"].startswith(media), name
            assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
            assert "'wasm-unsafe-eval'" in answer.headers["content-security-policy"]  # its workers run this script
            assert answer.headers["cross-origin-embedder-policy"] == "require-corp"
        assert answer.headers["content-encoding"] == "gzip" and answer.content[:4] == b"\0asm"
        assert int(answer.headers["content-length"]) < len(answer.content) / 3
        assert http.get(f"/web/{folder}/nothing.js").json()["code"] == "NOT_FOUND"
        assert http.get("/web/files/litertjs-0/litert.mjs").json()["code"] == "NOT_FOUND"
    signatures = Interpreter(model_path=str(detector)).get_signature_list()
    assert sorted(signatures) == sorted(f"{h}x{w}" for h, w in manifest["detector"]["inputs"])
    assert all(max(shape) in (320, 640) for shape in manifest["detector"]["inputs"])  # the fast path and the full size
    assert manifest["embedder"]["bytes"] == embedder.stat().st_size
    assert Interpreter(model_path=str(embedder)).get_input_details()[0]["shape"].tolist() == [1, 112, 112, 3]


def test_litert_verify_equals_the_api(browser: Any, litert_device: LiteRtService, tmp_path: Path) -> None:
    """The module's verify of two photos (LiteRT.js, float32 files) gives the API's similarity (within 2e-4) and
    decision. The photos are shrunk to 1200 pixels first: the service decodes larger JPEGs at a reduced size."""
    import base64

    import cv2

    pair = []
    for name in ("img1.jpg", "img2.jpg"):
        image = cv2.imread(str(photo(name)))
        assert image is not None
        scale = 1200 / max(image.shape[:2])
        pair.append(cv2.imencode(".jpg", cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))[1])
    with litert_device.service.client(litert_device.admin) as http:
        expected = http.post("/v1/verify", files=[("image_a", pair[0].tobytes()), ("image_b", pair[1].tobytes())])
    page = browser.new_page()
    page.goto(litert_device.service.url + "/")
    got = page.evaluate(
        """async (photos) => {
          const g = await import("/web/ghostfacenets.mjs");
          const model = await g.load();
          const blob = (b64) => new Blob([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], {type: "image/jpeg"});
          const [a, b] = [await model.largestFace(blob(photos[0]), {singleFace: false}),
                          await model.largestFace(blob(photos[1]), {singleFace: false})];
          return {...model.verify(a.embedding, b.embedding), runtime: model.runtime.name};
        }""",
        [base64.b64encode(p.tobytes()).decode() for p in pair],
    )
    page.close()
    answer = expected.json()
    assert got["runtime"] == "litert.js"
    assert got["similarity"] == pytest.approx(answer["similarity"], abs=2e-4)
    assert got["is_same"] is answer["is_same"] and got["threshold"] == pytest.approx(answer["threshold"])
