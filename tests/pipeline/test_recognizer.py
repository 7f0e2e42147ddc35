"""FaceRecognizer: input kinds, the embedding against a hand-built pipeline, thresholds, verify, identify, errors.

The model has random (non-trivial) weights, so these tests check the machinery, not recognition accuracy.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ghostfacenets.data.images import ImageError, load_image
from ghostfacenets.errors import GhostFaceNetsError
from ghostfacenets.gallery import open_store
from ghostfacenets.model_io import weights_fingerprint
from ghostfacenets.pipeline import FaceRecognizer, NoFaceError, RetinaFaceDetector, align_face
from ghostfacenets.pipeline.recognizer import FALLBACK_THRESHOLD
from ghostfacenets.pipeline.results import ThresholdError
from tests.helpers import require_module
from tests.helpers.photos import photo


def _reference_embedding(model_file: Path, image: np.ndarray) -> np.ndarray:
    """Largest face -> ArcFace alignment -> (x - 127.5) / 128 -> model(x) + model(mirror x) -> unit length."""
    from ghostfacenets.model_io import load_model

    model = load_model(model_file)
    face = max(RetinaFaceDetector().detect(image), key=lambda f: f.area)
    crop = torch.from_numpy(align_face(image, face.landmarks).astype(np.float32))
    x = ((crop - 127.5) / 128.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        out = (model(x) + model(x.flip(3)))[0].numpy()
    return out / np.linalg.norm(out)


def test_embedding_matches_the_hand_built_pipeline(recognizer: FaceRecognizer, model_file: Path) -> None:
    path = photo("img6.jpg")
    embedding = recognizer.embed(path)
    assert embedding.shape == (512,) and embedding.dtype == np.float32
    np.testing.assert_allclose(embedding, _reference_embedding(model_file, load_image(path)), atol=1e-5)


def test_every_input_kind_gives_the_same_embedding(recognizer: FaceRecognizer) -> None:
    from PIL import Image

    path = photo("img10.jpg")
    rgb = load_image(path)
    expected = recognizer.embed(path)
    for source, order in (
        (str(path), "RGB"),
        (path.read_bytes(), "RGB"),
        (rgb, "RGB"),
        (np.ascontiguousarray(rgb[..., ::-1]), "BGR"),
        (Image.fromarray(rgb), "RGB"),
    ):
        np.testing.assert_allclose(recognizer.embed(source, color_order=order), expected, atol=1e-6)
    swapped = recognizer.embed(np.ascontiguousarray(rgb[..., ::-1]))  # BGR read as RGB: a different image
    assert float(swapped @ expected) < 0.9999


def test_batches_equal_single_images(recognizer: FaceRecognizer) -> None:
    paths = [photo(f"img{i}.jpg") for i in (5, 10, 16)]
    batch = recognizer.embed(paths)
    assert batch.shape == (3, 512)
    for path, row in zip(paths, batch):
        np.testing.assert_allclose(row, recognizer.embed(path), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-6)


def test_aligned_crops_skip_detection(recognizer: FaceRecognizer) -> None:
    image = load_image(photo("img16.jpg"))
    crop = recognizer.align(image, recognizer.detect(image)[0])
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    np.testing.assert_allclose(recognizer.embed(crop), recognizer.embed(image), atol=1e-6)
    np.testing.assert_allclose(recognizer.embed(crop, aligned=True), recognizer.embed_aligned(crop[None])[0], atol=1e-6)
    with pytest.raises(GhostFaceNetsError, match="must be 112x112"):
        recognizer.embed(image, aligned=True)


def test_several_faces_use_the_largest(recognizer: FaceRecognizer) -> None:
    big = load_image(photo("img5.jpg"))  # 330x512, face about 185 pixels wide
    small = cv2.resize(load_image(photo("img10.jpg")), (204, 297))
    canvas = np.full((512, 600, 3), 255, np.uint8)
    canvas[:, :330], canvas[100:397, 380:584] = big, small
    faces = recognizer.detect(canvas)
    assert len(faces) == 2 and faces[0].area > faces[1].area and faces[0].box[2] <= 330
    records = recognizer.embed_faces(canvas)
    assert [r.faces_in_image for r in records] == [2, 2]
    np.testing.assert_allclose(recognizer.embed(canvas), records[0].embedding, atol=1e-6)
    np.testing.assert_allclose(records[0].embedding, recognizer.embed(big), atol=0.02)  # same face, other pixels


def test_verify_reports_similarity_threshold_and_source(recognizer: FaceRecognizer) -> None:
    a, b = photo("img1.jpg"), photo("img3.jpg")
    result = recognizer.verify(a, b)
    assert result.similarity == pytest.approx(float(recognizer.embed(a) @ recognizer.embed(b)), abs=1e-5)
    assert result.threshold.source == "fallback" and result.threshold.value == FALLBACK_THRESHOLD
    assert result.is_same == (result.similarity > FALLBACK_THRESHOLD)
    record = result.to_dict()
    assert {"similarity", "threshold", "is_same", "threshold_source"} <= record.keys()
    assert record["face_a"]["box"] and record["faces_in_b"] == 1
    below, above = (recognizer.verify(a, b, threshold=result.similarity + d) for d in (-1e-3, 1e-3))
    assert below.is_same and not above.is_same and below.threshold.source == "user"
    same = recognizer.verify(a, a)
    assert same.similarity == pytest.approx(1.0, abs=1e-5) and same.is_same


def test_verify_batches(recognizer: FaceRecognizer) -> None:
    pairs = [(photo("img1.jpg"), photo("img2.jpg")), (photo("img5.jpg"), photo("img6.jpg"))]
    results = recognizer.verify([p[0] for p in pairs], [p[1] for p in pairs])
    assert len(results) == 2
    for (a, b), result in zip(pairs, results):
        assert result.similarity == pytest.approx(recognizer.verify(a, b).similarity, abs=1e-5)
    with pytest.raises(GhostFaceNetsError, match="same length"):
        recognizer.verify([pairs[0][0]], pairs[0][1])


def test_calibrated_thresholds_from_metadata(recognizer: FaceRecognizer, model_file: Path, tmp_path: Path) -> None:
    from ghostfacenets.model_io import load_model, save_model

    model = load_model(model_file)
    entries = [
        {"far": 1e-4, "threshold": 0.41, "set": "setA", "pairs": 9000},
        {"far": 1e-3, "threshold": 0.33, "set": "setA", "pairs": 9000},
    ]
    path = save_model(model, tmp_path / "calibrated.safetensors", {"thresholds": entries})
    calibrated = FaceRecognizer(path, device="cpu")
    default = calibrated.threshold()
    assert (default.value, default.source, default.far, default.set) == (0.33, "calibrated", 1e-3, "setA")
    assert calibrated.threshold(far=1e-4).value == 0.41
    assert (
        FaceRecognizer(path, far=1e-4, device="cpu").verify(photo("img1.jpg"), photo("img2.jpg")).threshold.value
        == 0.41
    )
    with pytest.raises(ThresholdError, match="not at 0.01"):
        calibrated.threshold(far=1e-2)
    with pytest.raises(ThresholdError, match="no calibrated thresholds"):
        recognizer.threshold(far=1e-3)
    same_space = (calibrated.model_id.sha256, calibrated.model_id.dim, calibrated.model_id.flip)
    assert same_space == (recognizer.model_id.sha256, recognizer.model_id.dim, recognizer.model_id.flip)


def test_model_fingerprint_follows_the_weights(model_file: Path) -> None:
    from ghostfacenets.model_io import load_model

    model = load_model(model_file)
    before = weights_fingerprint(model)
    counter = next(b for n, b in model.named_buffers() if n.endswith("num_batches_tracked"))
    counter += 5  # BatchNorm's step counter does not change the output
    assert weights_fingerprint(model) == before
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1e-3
    assert weights_fingerprint(model) != before


def test_identify_in_a_gallery(recognizer: FaceRecognizer, tmp_path: Path) -> None:
    db = tmp_path / "people.sqlite"
    assert len(recognizer.enroll(db, "angelina", [photo("img1.jpg"), photo("img2.jpg")]).added) == 2
    jennifer = recognizer.enroll(db, "jennifer", photo("img3.jpg"), metadata={"staff": 7})
    assert len(jennifer.added) == 1 and jennifer.subject.metadata == {"staff": 7}
    again = recognizer.enroll(db, "angelina", photo("img1.jpg"))
    assert again.added == [] and len(again.skipped) == 1  # already there
    with pytest.raises(GhostFaceNetsError, match="already enrolled as 'angelina'"):
        recognizer.enroll(db, "someone", photo("img2.jpg"))
    result = recognizer.identify(photo("img3.jpg"), db, k=5)
    assert [m.name for m in result.matches][0] == "jennifer" and result.identity == "jennifer"
    assert result.matches[0].subject_id == jennifer.subject.id
    assert result.matches[0].similarity == pytest.approx(1.0, abs=1e-5) and len(result.matches) == 2
    with open_store(db) as store:
        scores = {m.name: m.similarity for m in recognizer.identify(photo("img6.jpg"), store).matches}
        query = recognizer.embed(photo("img6.jpg"))
        expected = max(float(query @ recognizer.embed(photo(n))) for n in ("img1.jpg", "img2.jpg"))
        assert scores["angelina"] == pytest.approx(expected, abs=1e-5)
        every = recognizer.identify_faces(photo("img6.jpg"), store)
        assert len(every) == 1 and every[0].matches[0].similarity == pytest.approx(max(scores.values()), abs=1e-6)
        with pytest.raises(GhostFaceNetsError, match="no gallery named 'staff'"):
            recognizer.identify(photo("img3.jpg"), store, gallery="staff")
    # a user's threshold just above the best similarity: no identity (a photo matched against itself may score
    # exactly 1.0 on some CPUs, so the query is a photo that was not enrolled)
    strict = recognizer.identify(photo("img6.jpg"), db, threshold=max(scores.values()) + 1e-6)
    assert strict.identity is None and not strict.matches[0].is_match and strict.matches[0].name == "angelina"
    with pytest.raises(GhostFaceNetsError, match="no such gallery"):
        recognizer.identify(photo("img3.jpg"), tmp_path / "none.sqlite")


def test_reembed_from_stored_crops(recognizer: FaceRecognizer, model_file: Path, tmp_path: Path) -> None:
    db = tmp_path / "g.sqlite"
    recognizer.enroll(db, "a", [photo("img1.jpg"), photo("img2.jpg")], store_crops=True)
    recognizer.enroll(db, "b", photo("img3.jpg"), store_crops=True)
    no_flip = FaceRecognizer(model_file, flip=False, device="cpu")
    assert no_flip.reembed(db) == 3
    with open_store(db) as store:
        assert store.gallery("default").model == no_flip.model_id
        stored = {f.image_sha256: f for s in store.subjects("default") for f in store.faces("default", s.id)}
        exported = {e.face.image_sha256: e for e in store.export_faces("default")}
    for name in ("img1.jpg", "img2.jpg", "img3.jpg"):
        # the new embedding is the new model's embedding of the same aligned crop as enrolment stored it
        from ghostfacenets.pipeline.recognizer import image_sha256

        digest = image_sha256(photo(name))
        assert stored[digest].model_sha256 == no_flip.model_id.sha256
        np.testing.assert_allclose(exported[digest].face.embedding, no_flip.embed(photo(name)), atol=1e-5)
    assert no_flip.identify(photo("img3.jpg"), db).identity == "b"
    with pytest.raises(GhostFaceNetsError, match="holds embeddings of"):
        recognizer.identify(photo("img3.jpg"), db)
    recognizer.enroll(db, "c", photo("img5.jpg"), gallery="plain")  # without crops
    with pytest.raises(GhostFaceNetsError, match="1 of the 1 faces .* no stored crop"):
        no_flip.reembed(db, "plain")


def test_a_gallery_refuses_another_models_embeddings(
    recognizer: FaceRecognizer, model_file: Path, tmp_path: Path
) -> None:
    db = tmp_path / "g.sqlite"
    recognizer.enroll(db, "a", photo("img5.jpg"))
    no_flip = FaceRecognizer(model_file, flip=False, device="cpu")
    with pytest.raises(GhostFaceNetsError, match="holds embeddings of"):
        no_flip.enroll(db, "b", photo("img8.jpg"))
    with pytest.raises(GhostFaceNetsError, match="holds embeddings of"):
        no_flip.identify(photo("img5.jpg"), db)


def test_bad_inputs_raise_one_clear_error(recognizer: FaceRecognizer, blank_image: np.ndarray, tmp_path: Path) -> None:
    from PIL import Image

    with pytest.raises(NoFaceError, match="no face found"):
        recognizer.embed(blank_image)
    with pytest.raises(NoFaceError, match="image 1"):
        recognizer.embed([load_image(photo("img5.jpg")), blank_image])
    with pytest.raises(ImageError, match="no such file"):
        recognizer.embed(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="not a file"):
        recognizer.embed(tmp_path)
    text = tmp_path / "notes.jpg"
    text.write_text("not an image at all")
    with pytest.raises(ImageError, match="not an image"):
        recognizer.verify(text, photo("img1.jpg"))
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(photo("img1.jpg").read_bytes()[:300])
    with pytest.raises(ImageError):
        recognizer.embed(truncated)
    huge = io.BytesIO()
    Image.new("1", (9_000, 9_000)).save(huge, format="PNG")  # 81 megapixels in a few kilobytes
    with pytest.raises(ImageError, match="larger than the limit"):
        recognizer.embed(huge.getvalue())
    with pytest.raises(ImageError, match="uint8"):
        recognizer.embed(np.zeros((200, 200, 3), np.float32))


def test_an_onnx_model_gives_the_same_embeddings_and_its_metadata_thresholds(
    recognizer: FaceRecognizer, model_file: Path, tmp_path: Path
) -> None:
    onnx = require_module("onnx")
    import json
    import warnings

    from ghostfacenets.model_io import METADATA_KEY, load_model

    path = tmp_path / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about the static TF-SAME padding
        torch.onnx.export(
            load_model(model_file),
            torch.zeros(1, 3, 112, 112),
            str(path),
            input_names=["input"],
            output_names=["embedding"],
            dynamic_axes={"input": {0: "n"}, "embedding": {0: "n"}},
            dynamo=False,
        )
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps({"thresholds": [{"far": 0.01, "threshold": 0.3, "set": "s"}]})
    onnx.save(proto, str(path))
    runtime = FaceRecognizer(path)
    image = photo("img5.jpg")
    assert float(runtime.embed(image) @ recognizer.embed(image)) > 0.99999
    assert runtime.threshold().source == "calibrated" and runtime.threshold().value == 0.3
    assert runtime.model_id.dim == 512


def test_calibrated_thresholds_apply_only_to_their_flip_setting(model_file: Path, tmp_path: Path) -> None:
    from ghostfacenets.model_io import load_model, save_model

    entries = [
        {"far": 1e-3, "threshold": 0.33, "set": "with_flip", "flip": True},
        {"far": 1e-2, "threshold": 0.21, "set": "unlabelled"},  # no flip key: calibrated with flip (default)
        {"far": 1e-3, "threshold": 0.44, "set": "without_flip", "flip": False},
    ]
    path = save_model(load_model(model_file), tmp_path / "calibrated.safetensors", {"thresholds": entries})
    with_flip, without_flip = FaceRecognizer(path, device="cpu"), FaceRecognizer(path, flip=False, device="cpu")
    assert (with_flip.threshold().value, with_flip.threshold().set) == (0.33, "with_flip")
    assert with_flip.threshold(far=1e-2).value == 0.21
    assert (without_flip.threshold().value, without_flip.threshold().set) == (0.44, "without_flip")
    with pytest.raises(ThresholdError, match="not at 0.01"):
        without_flip.threshold(far=1e-2)  # only calibrated with flip
    flip_only = save_model(load_model(model_file), tmp_path / "flip_only.safetensors", {"thresholds": entries[:2]})
    no_flip = FaceRecognizer(flip_only, flip=False, device="cpu")
    assert no_flip.threshold().source == "fallback"
    with pytest.raises(ThresholdError, match="flip on, not with flip off"):
        no_flip.threshold(far=1e-3)
    with pytest.raises(ThresholdError, match="flip on, not with flip off"):
        FaceRecognizer(flip_only, flip=False, far=1e-3, device="cpu")
