"""The whole pipeline as device files (``export --pipeline``), run by the reference runner as an app runs them, in
each runtime (ExecuTorch, LiteRT, onnxruntime), against the package's own pipeline on every shared photo (none of them
went through training): the same faces, boxes and landmarks, and embeddings of the float32 files at cosine >= 0.999 on
every face. Slow: writing the files lowers or converts RetinaFace and a GhostFaceNet once per runtime (about a minute
each on two cores); it is the check that the files an app ships compute what the package computes."""

from __future__ import annotations

import numpy as np
import pytest

from ghostfacenets.data.images import load_image
from ghostfacenets.mobile import MobilePipeline
from ghostfacenets.mobile.runner import MobileFace, window
from ghostfacenets.models.retinaface import anchor_grid
from ghostfacenets.pipeline import FaceRecognizer
from tests.helpers import require_module, shared_path
from tests.helpers.photos import photo

PHOTOS = [f"img{i}.jpg" for i in range(1, 26)]
RUNTIMES = {"onnx": ("onnx", "onnx"), "executorch": ("executorch", "mobile"), "litert": ("litert_torch", "mobile")}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory):
    from ghostfacenets.model_io import convert_keras, load_model

    h5 = shared_path("fixtures", "keras_reference", "v1_w1_s2", "model.h5")
    model = load_model(convert_keras(h5, tmp_path_factory.mktemp("model") / "v1_w1_s2.safetensors"))
    model.metadata = {**model.metadata, "thresholds": [{"far": 1e-3, "threshold": 0.31, "flip": True}]}
    return model


@pytest.fixture(scope="module")
def reference(model) -> FaceRecognizer:
    """The package's pipeline as verify and embed run it, but detecting every face at full size."""
    return FaceRecognizer(model, device="cpu", backend="eager", detector_backend="onnxruntime", fast_size=None)


@pytest.fixture(scope="module", params=list(RUNTIMES))
def pipeline(request: pytest.FixtureRequest, model, tmp_path_factory: pytest.TempPathFactory) -> MobilePipeline:
    module, extra = RUNTIMES[request.param]
    require_module(module, extra)
    require_module("onnx", "onnx")  # RetinaFace's weights are read from its ONNX file
    from ghostfacenets.export.pipeline import export_pipeline

    files = export_pipeline(model, tmp_path_factory.mktemp(request.param) / "gfn", request.param)
    return MobilePipeline(files.detector, files.align_embed)


@pytest.mark.slow
def test_same_faces_and_embeddings_as_the_package(pipeline: MobilePipeline, reference: FaceRecognizer) -> None:
    cosines = []
    for name in PHOTOS:
        image = load_image(photo(name))
        expected = sorted(reference.detect(image), key=lambda f: -f.score)
        found = pipeline.detect(image)
        assert len(found) == len(expected), name
        for face, ref in zip(found, expected):
            np.testing.assert_allclose(face.box, ref.box, atol=0.01, err_msg=name)
            np.testing.assert_allclose(face.landmarks, ref.landmarks, atol=0.01, err_msg=name)
            assert abs(face.score - ref.score) < 1e-4
            embedding = pipeline.embed(image, face)
            cosines.append(float(embedding @ reference.embed_faces(image)[0].embedding))
            assert np.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-5)
    assert min(cosines) >= 0.999, sorted(cosines)[:3]


@pytest.mark.slow
def test_files_state_their_contract(pipeline: MobilePipeline) -> None:
    contract = pipeline.contract
    assert contract["contract_version"] == 1 and pipeline.detector.role == "detector"
    detector, align = contract["detector"], contract["align_embed"]
    assert detector["inputs"][0]["shape"] == [1, 640, 640, 3] and detector["inputs"][0]["mean_rgb"] == [123, 117, 104]
    assert [o["name"] for o in detector["outputs"]] == ["scores", "boxes", "landmarks"]
    assert detector["outputs"][0]["shape"] == [1, 16800]
    assert align["inputs"][0] == {**align["inputs"][0], "shape": [1, 2048, 2048, 3], "dtype": "uint8"}
    assert align["flip"] is True and align["window"]["face_margin"] == 2.0
    assert pipeline.threshold(1e-3) == 0.31 and pipeline.metadata["license"]
    scores, boxes, landmarks = pipeline.detector.run(
        [np.zeros((1, 640, 640, 3), np.float32), np.array([[480, 640]], np.float32)]
    )
    assert scores.shape == (1, 16800) and boxes.shape == (1, 16800, 4) and landmarks.shape == (1, 16800, 10)
    # anchors whose centre lies below the photo's 480 rows score 0: 20 rows of 80 cells at stride 8, 10 of 40 at 16,
    # 5 of 20 at 32, two anchors a cell
    beyond = anchor_grid(640, 640)[:, 1] >= 480
    assert beyond.sum() == 2 * (20 * 80 + 10 * 40 + 5 * 20)
    assert scores[0, beyond].max() == 0 and scores[0, ~beyond].max() > 0


def test_window_cuts_the_photo_around_the_face() -> None:
    image = load_image(photo("img5.jpg"))  # 330 wide, 512 high
    landmarks = np.array([[30.0, 60.0], [90.0, 60.0], [60.0, 100.0], [35.0, 130.0], [85.0, 130.0]])
    face = MobileFace(np.array([10.0, 20.0, 110.0, 170.0]), 0.99, landmarks)
    canvas, points = window(image, face, 320, 2.0)  # box 150 <= 320 / 2: the photo as it is
    assert canvas.shape == (1, 320, 320, 3) and canvas.dtype == np.uint8
    x0, y0 = 60 - 160, 95 - 160  # floor(box centre) - side // 2: the window starts above and left of the photo
    np.testing.assert_allclose(points[0], landmarks - [x0, y0])
    np.testing.assert_array_equal(canvas[0, -y0:, -x0:], image[: 320 + y0, : 320 + x0])
    assert canvas[0, :-y0].max() == 0 and canvas[0, :, :-x0].max() == 0  # beyond the photo
    _, points = window(image, face, 200, 2.0)  # box 150 > 200 / 2: the photo is shrunk by 2/3 first
    scale = np.array([220 / 330, 341 / 512])
    np.testing.assert_allclose(
        points[0], landmarks * scale - (np.floor([60 * scale[0], 95 * scale[1]]) - 100), atol=1e-4
    )
