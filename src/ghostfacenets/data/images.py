"""Reading images from paths, bytes, numpy arrays or PIL images into uint8 RGB arrays."""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from ..errors import GhostFaceNetsError

MAX_PIXELS = 80_000_000  # larger images are refused before decoding (a 12000 x 6600 photo passes)
ResizeMode = Literal["pad", "resize"]
ImageSource = str | Path | bytes | bytearray | memoryview | np.ndarray | Any  # Any: PIL.Image.Image


class ImageError(GhostFaceNetsError):
    """An input that is not a usable image."""


def _check_size(width: int, height: int, max_pixels: int, name: str) -> None:
    if width * height > max_pixels:
        raise ImageError(f"{name}: {width}x{height} pixels is larger than the limit of {max_pixels:,} pixels")


def decode_image(data: bytes | bytearray | memoryview, name: str = "image", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Encoded image bytes (JPEG, PNG, BMP, PGM, WebP, ...) -> uint8 RGB (H, W, 3), whatever the source encoding."""
    from PIL import Image

    buffer = bytes(data)
    if not buffer:
        raise ImageError(f"{name}: empty file")
    try:  # read the header only, to refuse huge images before decoding them
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked here instead
            with Image.open(io.BytesIO(buffer)) as header:
                _check_size(header.width, header.height, max_pixels, name)
    except Image.DecompressionBombError as exc:  # Pillow refuses headers above 2 x Image.MAX_IMAGE_PIXELS
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = int(found.group(1)) if found else 2 * (Image.MAX_IMAGE_PIXELS or 0) + 1  # at least this many
        if pixels > max_pixels:
            raise ImageError(f"{name}: {pixels:,} pixels is larger than the limit of {max_pixels:,} pixels") from None
    except OSError:
        pass  # not a format Pillow knows; OpenCV may still decode it, and its result is checked below
    try:
        array = cv2.imdecode(np.frombuffer(buffer, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:  # e.g. a header above OpenCV's own pixel limit in a format Pillow does not read
        reason = str(exc).strip().splitlines()[-1]
        raise ImageError(f"{name}: not an image OpenCV can decode ({reason})") from None
    if array is None:
        raise ImageError(f"{name}: not an image (or an unsupported or damaged image file)")
    _check_size(array.shape[1], array.shape[0], max_pixels, name)
    return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)


def as_rgb_array(array: np.ndarray, color_order: Literal["RGB", "BGR"] = "RGB", name: str = "array") -> np.ndarray:
    """A uint8 array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) in ``color_order`` -> contiguous RGB (H, W, 3)."""
    if array.dtype != np.uint8:
        raise ImageError(f"{name}: expected uint8 pixels 0-255, got {array.dtype}")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim in (2, 3) and 0 in array.shape[:2]:
        raise ImageError(f"{name}: an empty image ({array.shape[1]}x{array.shape[0]} pixels)")
    if array.ndim == 2:
        return np.ascontiguousarray(np.repeat(array[..., None], 3, axis=-1))
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ImageError(f"{name}: expected an image shaped (H, W), (H, W, 3) or (H, W, 4), got {array.shape}")
    array = array[..., :3]
    if color_order == "BGR":
        array = array[..., ::-1]
    elif color_order != "RGB":
        raise ValueError(f"color_order must be 'RGB' or 'BGR', got {color_order!r}")
    return np.ascontiguousarray(array)


def encode_png(rgb: np.ndarray, name: str = "image") -> bytes:
    """A uint8 RGB array (H, W, 3) as PNG bytes (lossless: :func:`decode_image` gives the same pixels back)."""
    ok, data = cv2.imencode(".png", np.ascontiguousarray(as_rgb_array(rgb, name=name)[..., ::-1]))
    if not ok:
        raise ImageError(f"{name}: OpenCV could not encode it as PNG")
    return data.tobytes()


def load_image(
    source: ImageSource, color_order: Literal["RGB", "BGR"] = "RGB", max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """Any supported image source -> uint8 RGB (H, W, 3).

    ``source``: a file path, encoded bytes, a PIL image, or a uint8 numpy array whose channel order is
    ``color_order`` (RGB by default; pass "BGR" for arrays from OpenCV).
    """
    if isinstance(source, np.ndarray):
        if source.ndim >= 2:
            _check_size(source.shape[1], source.shape[0], max_pixels, "array")
        return as_rgb_array(source, color_order)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode_image(source, "bytes", max_pixels)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise ImageError(f"{path}: no such file")
        if not path.is_file():
            raise ImageError(f"{path}: not a file")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageError(f"{path}: cannot read ({exc.strerror})") from None
        return decode_image(data, str(path), max_pixels)
    from PIL import Image

    if isinstance(source, Image.Image):
        _check_size(source.width, source.height, max_pixels, "PIL image")
        return np.asarray(source.convert("RGB"), dtype=np.uint8).copy()
    raise ImageError(f"unsupported image source of type {type(source).__name__}")


def fit_image(image: np.ndarray, size: int | None = 112, mode: ResizeMode = "pad") -> np.ndarray:
    """uint8 RGB (H, W, 3) -> (size, size, 3): ``pad`` keeps the aspect ratio (longer side = size, centred on
    black), ``resize`` stretches. Images already at the size, and any image when ``size`` is None, are returned
    as they are."""
    height, width = image.shape[:2]
    if size is None or (height == size and width == size):
        return image
    if mode == "resize":
        shrink = max(height, width) > size
        return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    if mode != "pad":
        raise ValueError(f"resize mode must be 'pad' or 'resize', got {mode!r}")
    factor = size / max(height, width)
    new_h, new_w = max(1, round(height * factor)), max(1, round(width * factor))
    if (new_h, new_w) != (height, width):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
    out = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top : top + new_h, left : left + new_w] = image
    return out
