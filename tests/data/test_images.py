"""Image loading: size limits read from the header (no decoding), decoder errors and odd arrays as ImageError."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

from ghostfacenets.cli import main
from ghostfacenets.data.images import MAX_PIXELS, ImageError, decode_image, load_image


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height RGB pixels, with one tiny IDAT: a few dozen bytes, built by hand."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + _chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "width, height",
    [
        (10_000, 10_000),  # 100 MP: above the limit, under Pillow's decompression-bomb error (warning only)
        (14_000, 14_000),  # 196 MP: above Pillow's decompression-bomb error (179 MP)
        (40_000, 40_000),  # 1.6 GP: above OpenCV's own limit (1 GP), where cv2.imdecode raises cv2.error
        (70_000, 70_000),
    ],
)
def test_too_large_images_are_refused_from_the_header(width: int, height: int) -> None:
    data = png_header(width, height)
    assert len(data) < 100
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning escapes either
        with pytest.raises(ImageError, match="larger than the limit") as info:
            decode_image(data, "crafted.png")
    assert "crafted.png" in str(info.value) and "\n" not in str(info.value)


def test_the_limit_is_a_parameter() -> None:
    with pytest.raises(ImageError, match="larger than the limit of 100 pixels"):
        decode_image(png_header(11, 10), "small.png", max_pixels=100)
    with pytest.raises(ImageError, match="larger than the limit of 200,000,000 pixels"):
        decode_image(png_header(20_000, 20_000), "big.png", max_pixels=200_000_000)  # above Pillow's limit too
    assert MAX_PIXELS < 2 * 89_478_485  # the default is below Pillow's decompression-bomb limit


def test_opencv_errors_become_image_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    import cv2

    def failing(*args: object) -> None:
        raise cv2.error("OpenCV(5.0.0) imdecode_: overflow")

    monkeypatch.setattr(cv2, "imdecode", failing)
    with pytest.raises(ImageError, match="x.pgm: not an image .*overflow"):
        decode_image(b"P5 2 2 255 \x00\x00\x00\x00", "x.pgm")


def test_odd_arrays_are_image_errors() -> None:
    for array in (
        np.array(5, np.uint8),
        np.zeros(7, np.uint8),
        np.zeros((0, 0, 3), np.uint8),
        np.zeros((4, 0), np.uint8),
    ):
        with pytest.raises(ImageError):
            load_image(array)
    assert load_image(np.zeros((2, 3), np.uint8)).shape == (2, 3, 3)


def test_detect_refuses_a_huge_png_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header(70_000, 70_000))
    assert main(["detect", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "larger than the limit" in err and "bomb.png" in err
