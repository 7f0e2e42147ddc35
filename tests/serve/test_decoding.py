"""Decoding as the service does it: JPEG scans counted, reduced decoding that OpenCV agrees with and that maps back
to full-size pixels exactly, crops at least as good as those cut from the full image, and the pixel budget."""

from __future__ import annotations

import asyncio
import io

import cv2
import numpy as np
import pytest

from tests.helpers.hostile import scan_bomb
from tests.helpers.photos import photo

PHOTOS = [f"img{i}.jpg" for i in range(1, 26)]


def test_jpeg_scans_of_real_photos_a_cut_file_and_a_bomb() -> None:
    from PIL import Image

    from ghostfacenets.serve.decode_worker import jpeg_scans

    for name in PHOTOS:
        data = photo(name).read_bytes()
        progressive = bool(Image.open(io.BytesIO(data)).info.get("progressive"))
        assert jpeg_scans(data) == ((10, True) if progressive else (1, True)), name  # libjpeg's progression: 10
        assert not jpeg_scans(data[: len(data) // 2])[1]
    bomb = scan_bomb(200, 150, 3000)
    assert len(bomb) < 100_000
    assert jpeg_scans(bomb) == (3000, True)
    assert jpeg_scans(bomb, stop_after=32)[0] == 33


def _jpeg(pixels: np.ndarray, orientation: int) -> bytes:
    from PIL import Image

    image = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def _centroid(pixels: np.ndarray) -> np.ndarray:
    """The brightness centroid, pixel corners at integers (the detector's coordinates)."""
    weight = pixels[..., 1].astype(np.float64)
    weight = np.where(weight > 40, weight, 0.0)
    ys, xs = np.mgrid[: weight.shape[0], : weight.shape[1]]
    return np.array([((xs + 0.5) * weight).sum(), ((ys + 0.5) * weight).sum()]) / weight.sum()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_reduced_decoding_turns_like_opencv_and_maps_back_exactly(orientation: int) -> None:
    """A stored 1001x603 image (no side a multiple of 8, so flipped axes start with a partial block) with a bright
    spot, in each EXIF orientation: the worker's pixels equal OpenCV's own reduced decoding, and the spot found in
    them lands, mapped to full size, where it is in OpenCV's full-size decoding."""
    from ghostfacenets.serve.decode_worker import decode
    from ghostfacenets.serve.decoding import Frame

    ys, xs = np.mgrid[:603, :1001]
    spot = 250 * np.exp(-((xs - 701.3) ** 2 + (ys - 151.8) ** 2) / (2 * 9.0**2))
    stored = np.repeat(spot[..., None], 3, axis=2).astype(np.uint8)
    data = _jpeg(stored, orientation)
    buffer = np.frombuffer(data, np.uint8)
    full = cv2.imdecode(buffer, cv2.IMREAD_COLOR)[..., ::-1]
    expected = _centroid(full)
    for scale, flag in (
        (2, cv2.IMREAD_REDUCED_COLOR_2),
        (4, cv2.IMREAD_REDUCED_COLOR_4),
        (8, cv2.IMREAD_REDUCED_COLOR_8),
    ):
        pixels, used, decoded = decode(data, scale, orientation, max_scans=32)
        assert used == scale
        np.testing.assert_array_equal(pixels, cv2.imdecode(buffer, flag)[..., ::-1])
        frame = Frame(scale, (1001, 603), decoded, orientation)
        assert frame.full == (full.shape[1], full.shape[0])
        found = frame.to_full(_centroid(pixels)[None])[0]
        assert np.abs(found - expected).max() < 0.1 * scale, (scale, found, expected)
        np.testing.assert_allclose(frame.from_full(frame.to_full(found[None])), found[None], atol=1e-9)


def test_scales() -> None:
    from ghostfacenets.serve.decoding import crop_scale, detection_scale

    assert detection_scale(640, 480, 640) == 1
    assert detection_scale(1278, 900, 640) == 1
    assert detection_scale(1279, 900, 640) == 2  # 640 pixels at half size
    assert detection_scale(1280, 900, 640) == 2
    assert detection_scale(8000, 5000, 640) == 8
    assert detection_scale(4000, 3000, 640) == 4  # 1000 >= 640 > 500
    assert crop_scale(25.0, 8) == 8
    assert crop_scale(25.0, 4) == 4
    assert crop_scale(5.0, 8) == 4
    assert crop_scale(1.9, 8) == 1
    assert crop_scale(0.5, 8) == 1  # a face smaller than its crop: all the pixels there are


@pytest.fixture(scope="module")
def recognizer(model_file):
    from ghostfacenets.pipeline import FaceRecognizer

    return FaceRecognizer(model_file, device="cpu", threads=1)


def _variants() -> dict[str, bytes]:
    """Photos as the service meets them: as they are (progressive and baseline), three times larger (decoded at
    1/4 or 1/8), turned by EXIF, and a small face in a large frame (a second, larger decode for the crop)."""
    out = {name: photo(name).read_bytes() for name in ("img1.jpg", "img3.jpg", "img13.jpg")}
    image = cv2.imread(str(photo("img2.jpg")))
    big = cv2.resize(image, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
    out["img2 x3"] = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    out["img2 turned 6"] = _jpeg(np.rot90(image[..., ::-1], 1), 6)  # stored on its side, shown upright
    out["img2 turned 3"] = _jpeg(image[::-1, ::-1, ::-1], 3)
    canvas = np.full((4000, 6000, 3), 90, np.uint8)
    small = cv2.resize(image, (600, 450), interpolation=cv2.INTER_AREA)
    canvas[1200:1650, 2300:2900] = small
    out["small face in 24 MP"] = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    return out


def _reference_crop(full: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """An antialiased crop: warped at 4x the size, then area-averaged down."""
    from ghostfacenets.data.align import estimate_transform

    big = cv2.warpAffine(full, estimate_transform(landmarks) * 4, (448, 448), flags=cv2.INTER_LINEAR)
    return cv2.resize(big, (112, 112), interpolation=cv2.INTER_AREA)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(error, 1e-12)))


def test_faces_from_reduced_decoding_match_full_size(recognizer, tmp_path) -> None:
    """The service's faces of each variant against the full-size pipeline: the same faces, boxes and landmarks
    within one pixel of the detector's own resolution, and crops at least as close to an antialiased reference as
    crops cut from the full image with the same landmarks."""
    from ghostfacenets.data.align import align_face
    from ghostfacenets.gallery import open_store
    from ghostfacenets.serve.service import FaceService
    from ghostfacenets.serve.settings import ServiceSettings

    settings = ServiceSettings(model="test")
    variants = _variants()

    async def serve() -> dict[str, tuple]:
        with open_store(str(tmp_path / "g.sqlite")) as store:
            async with FaceService(settings, recognizer, store) as service:
                return {name: await service.find_faces(data, "image") for name, data in variants.items()}

    results = asyncio.run(serve())
    gains = []
    for name, data in variants.items():
        image, found, count = results[name]
        full = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1].copy()
        assert image.size == {"width": full.shape[1], "height": full.shape[0]}, name
        expected = recognizer.detect(full)
        assert count == len(expected) >= 1, name
        detector_pixel = max(full.shape[:2]) / settings.det_size
        for got, want in zip(found, expected):
            assert np.abs(got.face.landmarks - want.landmarks).max() < detector_pixel, name
            assert np.abs(got.face.box - want.box).max() < 2 * detector_pixel, name
            reference = _reference_crop(full, got.face.landmarks)
            from_full = align_face(full, got.face.landmarks)
            gains.append(_psnr(got.crop, reference) - _psnr(from_full, reference))
            assert gains[-1] >= -0.5, (name, gains[-1])
    assert np.mean(gains) > 1.0, gains  # decoding smaller first also keeps the bilinear warp from aliasing


def test_pixel_budget_is_never_exceeded_and_serves_in_order() -> None:
    """Holds never pass the budget; waiters are served first come, first served; a waiter whose request is cancelled
    (its deadline passed) just as pixels are freed is passed over, and nothing is lost."""
    from ghostfacenets.serve.decoding import PixelBudget

    budget = PixelBudget(100)
    held, peak, order = [0], [0], []
    tasks: dict[str, asyncio.Task[None]] = {}

    async def job(name: str, pixels: int, seconds: float, cancel: str | None = None) -> None:
        async with budget.hold(pixels):
            order.append(name)
            held[0] += min(pixels, 100)
            peak[0] = max(peak[0], held[0])
            await asyncio.sleep(seconds)
            held[0] -= min(pixels, 100)
            if cancel:
                tasks[cancel].cancel()  # in the same step as the release below

    async def main() -> None:
        tasks["a"] = asyncio.create_task(job("a", 60, 0.05, cancel="e"))
        await asyncio.sleep(0)
        for name, pixels in (("e", 90), ("b", 60), ("c", 30), ("d", 500)):
            tasks[name] = asyncio.create_task(job(name, pixels, 0.01))
        await asyncio.sleep(0.01)
        assert order == ["a"]  # c would fit, but waits its turn
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        assert tasks["e"].cancelled()
        assert budget.free == 100

    asyncio.run(asyncio.wait_for(main(), 30))
    assert order == ["a", "b", "c", "d"] and peak[0] <= 100
