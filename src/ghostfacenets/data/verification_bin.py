"""insightface verification ``.bin`` files (LFW, CFP-FP, AgeDB-30, ...): read safely, write atomically.

A ``.bin`` is a pickle of ``(bins, issame_list)``: ``bins`` holds 2P encoded images (pair p = images 2p and 2p+1)
and ``issame_list`` P booleans. Files come from Python 2 (``str`` images) and Python 3 (``bytes`` images). They are
read with a restricted unpickler that builds only lists, tuples, byte strings, booleans and integers, so a crafted
file cannot run code; anything else is refused with :class:`VerificationBinError`.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GhostFaceNetsError
from ..files import atomic_write
from .images import ImageError, decode_image

PICKLE_PROTOCOL = 4


class VerificationBinError(GhostFaceNetsError):
    """A ``.bin`` file that is not a readable verification set."""


class _Refused(pickle.UnpicklingError):
    """Something the restricted unpickler does not build."""


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """What ``_codecs.encode`` does for bytes that Python 3 pickled with protocol < 3, and nothing more."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("_codecs.encode is admitted only to rebuild bytes from latin-1 text")
    return text.encode("latin1")


def _empty_bytes(*args: Any) -> bytes:
    """``bytes()`` as Python 3 pickles ``b''`` with protocol < 3; any argument is refused."""
    if args:
        raise _Refused("bytes(...) with arguments is not admitted in a verification .bin")
    return b""


_ADMITTED_GLOBALS = {
    ("_codecs", "encode"): _latin1_encode,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds only containers, strings, numbers and booleans; every other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ADMITTED_GLOBALS[(module, name)]
        except KeyError:
            raise _Refused(f"global {module}.{name} refused") from None


def _unpickle(path: Path) -> Any:
    data = path.read_bytes()
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except _Refused as exc:
        raise VerificationBinError(
            f"{path}: refused: the pickle holds something other than images and labels ({exc}); "
            "a verification .bin holds only (list of encoded images, list of booleans)"
        ) from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        IndexError,
        KeyError,
        AttributeError,
        MemoryError,
    ) as exc:
        raise VerificationBinError(f"{path}: not a verification .bin (damaged or not a pickle: {exc})") from None


def read_verification_bin(path: str | Path) -> tuple[list[bytes], np.ndarray]:
    """The encoded images (2P byte strings) and ``issame`` (bool, P) of a ``.bin``, without decoding the images."""
    path = Path(path)
    if not path.is_file():
        raise VerificationBinError(f"{path}: no such file")
    obj = _unpickle(path)
    if not isinstance(obj, (tuple, list)) or len(obj) != 2 or not all(isinstance(x, (list, tuple)) for x in obj):
        raise VerificationBinError(
            f"{path}: expected a pickled (images, issame) pair of lists, got {type(obj).__name__}"
        )
    bins, issame = obj
    if not all(isinstance(b, (bytes, bytearray)) for b in bins):
        raise VerificationBinError(f"{path}: the image list holds something other than encoded image bytes")
    if not all(isinstance(s, (bool, int)) and int(s) in (0, 1) for s in issame):
        raise VerificationBinError(f"{path}: the same/different list holds something other than booleans")
    if not issame:
        raise VerificationBinError(f"{path}: holds no pairs")
    if len(bins) != 2 * len(issame):
        raise VerificationBinError(f"{path}: {len(bins)} images for {len(issame)} pairs (expected {2 * len(issame)})")
    return [bytes(b) for b in bins], np.asarray([bool(s) for s in issame], dtype=bool)


def decode_images(encoded: Sequence[bytes], name: str = "images", workers: int | None = None) -> np.ndarray:
    """Decode same-sized encoded images in parallel -> uint8 RGB (N, H, W, 3)."""
    workers = workers or min(8, os.cpu_count() or 1)

    def decode(item: tuple[int, bytes]) -> np.ndarray:
        index, data = item
        return decode_image(data, f"{name}: image {index}")

    with ThreadPoolExecutor(max_workers=workers) as pool:  # OpenCV releases the GIL while decoding
        images = list(pool.map(decode, enumerate(encoded)))
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        raise ImageError(f"{name}: images of different sizes {sorted(shapes)}; expected aligned crops of one size")
    if not images:
        raise ImageError(f"{name}: no images")
    return np.stack(images)


def load_verification_bin(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 RGB (2P, H, W, 3) and issame bool (P,) of an insightface verification ``.bin``.

    Pair p is ``images[2p]``, ``images[2p + 1]``. Python 2 and Python 3 files load; code in the file never runs.
    """
    bins, issame = read_verification_bin(path)
    return decode_images(bins, str(path)), issame


def encode_image(image: np.ndarray, image_format: str = ".png", jpeg_quality: int = 95) -> bytes:
    """uint8 RGB (H, W, 3) or grey (H, W) -> encoded bytes (PNG by default: lossless)."""
    import cv2

    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] != 3):
        raise ImageError(f"expected a uint8 RGB image (H, W, 3) or grey (H, W), got {array.dtype} {array.shape}")
    bgr = array if array.ndim == 2 else np.ascontiguousarray(array[..., ::-1])
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if image_format.lower() in (".jpg", ".jpeg") else []
    ok, buffer = cv2.imencode(image_format, bgr, params)
    if not ok:
        raise ImageError(f"OpenCV could not encode an image as {image_format}")
    return buffer.tobytes()


def write_verification_bin(
    path: str | Path,
    images: Sequence[np.ndarray | bytes],
    issame: Sequence[bool] | np.ndarray,
    image_format: str = ".png",
    jpeg_quality: int = 95,
) -> Path:
    """Write a ``.bin`` atomically: ``images`` (2P uint8 RGB arrays or encoded bytes), ``issame`` (P booleans).

    Arrays are encoded as ``image_format`` (PNG, lossless, by default; ".jpg" as insightface's own files); encoded
    bytes are stored as they are after checking that they decode. Pickle protocol 4 (Python 3, as insightface's
    Python 3 tools write).
    """
    path = Path(path)
    images = list(images)  # rows of a 4-D array become views that stay alive, so their ids below stay unique
    flags = [bool(s) for s in np.asarray(issame, dtype=bool).reshape(-1)]
    if not flags:
        raise VerificationBinError("no pairs to write")
    if len(images) != 2 * len(flags):
        raise VerificationBinError(f"{len(images)} images for {len(flags)} pairs (expected {2 * len(flags)})")
    encoded: list[bytes] = []
    checked: set[bytes] = set()
    encoded_arrays: dict[int, bytes] = {}  # an array repeated in several pairs is encoded and stored once
    for index, image in enumerate(images):
        if isinstance(image, (bytes, bytearray, memoryview)):
            data = bytes(image)
            if data not in checked:
                decode_image(data, f"image {index}")
                checked.add(data)
        else:
            if id(image) not in encoded_arrays:
                encoded_arrays[id(image)] = encode_image(image, image_format, jpeg_quality)
            data = encoded_arrays[id(image)]
        encoded.append(data)
    with atomic_write(path) as f:
        pickle.dump((encoded, flags), f, protocol=PICKLE_PROTOCOL)
    return path
