"""The work on a request's raw bytes that could run long, done in a worker process the service can end: JSON bodies
with base64 images, the structure of JPEG files, and decoding images (OpenCV, as the CLI decodes).

:class:`~ghostfacenets.serve.decoding.DecoderPool` starts this file as a script (not as part of the package) and
talks to it over its standard input and output in messages of an 8-byte length and that many bytes (:func:`send`,
:func:`receive`): a JSON header, then raw bytes, read straight into their final buffer; never pickle. It imports
only the standard library, numpy and OpenCV, so that it starts in a fraction of a second and a killed worker is
replaced at once. Its answers: ``{"ok": true, ...}`` followed by ``parts`` raw messages, or ``{"ok": false,
"code", "detail"}`` (a problem code of the service).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import struct
import sys
from typing import Any

import numpy as np

# A marker that ends a scan's entropy-coded data: 0xFF followed by anything but a stuffed zero, a restart marker
# or a fill byte (libjpeg stops at exactly these).
_AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_STANDALONE = {0x01, *range(0xD0, 0xD8)}
_NOT_ACCEPTED = re.compile(r"^\s*([a-z][a-z0-9+.-]*://|file:|/|\\\\|[a-z]:[\\/]|\.\.?[\\/])", re.IGNORECASE)
_DATA_URL = re.compile(r"^data:[\w/+.-]*;base64,", re.IGNORECASE)
REDUCED_SCALES = (1, 2, 4, 8)  # libjpeg's DCT scaling, as OpenCV's IMREAD_REDUCED_COLOR_* flags offer it
_LENGTH = struct.Struct(">Q")


def send(fd: int, data: Any) -> None:
    """One message: the length of ``data`` (any buffer), then its bytes, without copying them."""
    view = memoryview(data).cast("B")
    os.write(fd, _LENGTH.pack(view.nbytes))
    while view:
        view = view[os.write(fd, view) :]


def _read_into(fd: int, view: memoryview) -> None:
    while view:
        count = os.readv(fd, [view])
        if count == 0:
            raise EOFError("the other side closed the pipe")
        view = view[count:]


def receive(fd: int, into: memoryview | None = None) -> bytearray | None:
    """One message, into ``into`` (which must be its size) or a new bytearray."""
    length = bytearray(_LENGTH.size)
    _read_into(fd, memoryview(length))
    (size,) = _LENGTH.unpack(length)
    if into is not None:
        if into.nbytes != size:
            raise EOFError(f"expected a message of {into.nbytes} bytes, got {size}")
        _read_into(fd, into.cast("B"))
        return None
    buffer = bytearray(size)
    _read_into(fd, memoryview(buffer))
    return buffer


class Refused(Exception):
    """An input refused with a problem code of the service."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code, self.detail = code, detail


def jpeg_scans(data: bytes | bytearray, stop_after: int | None = None) -> tuple[int, bool]:
    """(scans, complete) of a JPEG: how many start-of-scan segments it has, as libjpeg would read them (segments
    by their lengths, scans to the next marker, stray bytes skipped to the next marker), and whether an end-of-image
    marker follows the last scan (a file cut short has none). Counting stops past ``stop_after`` scans."""
    scans, pos, size = 0, 2, len(data)
    while pos + 1 < size:
        if data[pos] != 0xFF:  # garbage between segments: libjpeg skips to the next marker
            found = _AFTER_SCAN.search(data, pos)
            if found is None:
                break
            pos = found.start()
            continue
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            return scans, scans > 0
        if marker in _STANDALONE:
            pos += 2
            continue
        if pos + 4 > size:
            break
        end = pos + 2 + ((data[pos + 2] << 8) | data[pos + 3])
        if marker == 0xDA:
            scans += 1
            if stop_after is not None and scans > stop_after:
                break
            found = _AFTER_SCAN.search(data, end)
            if found is None:
                break
            pos = found.start()
        else:
            pos = end
    return scans, False


# EXIF orientations (1-8) as array operations on (H, W, C) pixels; OpenCV's decoder applies the same ones.
def orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """``pixels`` as stored, turned as EXIF ``orientation`` says they are to be shown."""
    if orientation == 2:
        return pixels[:, ::-1]
    if orientation == 3:
        return pixels[::-1, ::-1]
    if orientation == 4:
        return pixels[::-1]
    if orientation == 5:
        return pixels.transpose(1, 0, 2)
    if orientation == 6:
        return np.rot90(pixels, -1)
    if orientation == 7:
        return pixels[::-1, ::-1].transpose(1, 0, 2)
    if orientation == 8:
        return np.rot90(pixels, 1)
    return pixels


def decode(
    data: bytes | bytearray, scale: int, orientation: int, max_scans: int
) -> tuple[np.ndarray, int, tuple[int, int]]:
    """uint8 RGB pixels of an encoded image, decoded at 1/``scale`` of its size (JPEG only; other formats and
    JPEGs libjpeg cannot scale come at full size), turned by its EXIF orientation. Also the scale used and the
    decoded size before turning (width, height). JPEGs with more than ``max_scans`` scans, or cut short, are
    refused before decoding."""
    import cv2

    if data[:2] == b"\xff\xd8":
        scans, complete = jpeg_scans(data, stop_after=max_scans)
        if scans > max_scans:
            raise Refused(
                "INVALID_IMAGE",
                f"a JPEG with more than {max_scans} scans (cameras write 1 to 10); refused before decoding",
            )
        if not complete:
            raise Refused("INVALID_IMAGE", "a JPEG cut short (no end-of-image marker)")
    flags = {
        1: cv2.IMREAD_COLOR,
        2: cv2.IMREAD_REDUCED_COLOR_2,
        4: cv2.IMREAD_REDUCED_COLOR_4,
        8: cv2.IMREAD_REDUCED_COLOR_8,
    }
    buffer = np.frombuffer(data, np.uint8)
    try:
        # At full size OpenCV turns the image itself, exactly as the CLI's decoding does; scaled, it is turned here.
        bgr = None if scale == 1 else cv2.imdecode(buffer, flags[scale] | cv2.IMREAD_IGNORE_ORIENTATION)
        if bgr is None:
            scale = 1
            bgr = cv2.imdecode(buffer, flags[1])
    except cv2.error as exc:  # e.g. a header above OpenCV's pixel limit
        reason = str(exc).strip().splitlines()[-1]
        raise Refused("INVALID_IMAGE", f"not an image OpenCV can decode ({reason})") from None
    if bgr is None:
        raise Refused("INVALID_IMAGE", "not an image (or an unsupported or damaged image file)")
    stored = (int(bgr.shape[1]), int(bgr.shape[0]))
    if scale > 1:
        bgr = np.ascontiguousarray(orient(bgr, orientation))
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=bgr), scale, stored  # in place: one image in memory


def base64_image(value: Any, field: str) -> bytes:
    """The bytes of a base64 string (a ``data:`` URL works); URLs and server paths are refused."""
    if not isinstance(value, str):
        raise Refused("VALIDATION", f"{field}: expected a base64 string, got {type(value).__name__}")
    text = _DATA_URL.sub("", value.strip(), count=1)
    try:  # base64 has "/" in its alphabet: decode first, then tell a URL or path from damaged data
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        if _NOT_ACCEPTED.match(value):
            raise Refused(
                "INVALID_IMAGE", f"{field}: images are sent as files or base64 data, never as URLs or server paths"
            ) from None
        raise Refused("INVALID_IMAGE", f"{field}: not valid base64") from None


def json_images(body: bytes | bytearray, fields: list[str], max_images: int) -> list[tuple[str, bytes]]:
    """The images of a JSON body ``{"field": "<base64>" or ["<base64>", ...]}``, in order."""
    try:
        parsed = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise Refused("VALIDATION", "the body is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise Refused("VALIDATION", "the JSON body must be an object")
    images: list[tuple[str, bytes]] = []
    for key, value in parsed.items():
        if key not in fields:
            raise Refused("VALIDATION", f"unexpected field {key!r}; images go in {', '.join(fields)}")
        values = value if isinstance(value, list) else [value]
        if len(images) + len(values) > max_images:
            raise Refused("PAYLOAD_TOO_LARGE", f"more than {max_images} images in one request")
        images += [(key, base64_image(v, key)) for v in values]
    return images


def _answer(request: dict[str, Any], payload: bytearray) -> tuple[dict[str, Any], list[Any]]:
    if request["op"] == "decode":
        pixels, scale, stored = decode(payload, request["scale"], request["orientation"], request["max_scans"])
        return {"ok": True, "shape": list(pixels.shape), "scale": scale, "stored": stored, "parts": 1}, [pixels]
    if request["op"] == "json":
        images = json_images(payload, request["fields"], request["max_images"])
        return {"ok": True, "fields": [f for f, _ in images], "parts": len(images)}, [data for _, data in images]
    raise Refused("INTERNAL", f"unknown operation {request['op']!r}")


def main() -> None:
    # The protocol has the standard output to itself; anything a library prints goes to the standard error.
    replies, requests = os.dup(1), 0
    os.dup2(2, 1)
    os.nice(int(os.environ.get("GHOSTFACENETS_WORKER_NICE", "0")))
    import cv2

    cv2.setNumThreads(1)
    send(replies, b"ready")
    while True:
        try:
            request = json.loads(receive(requests) or b"")
            payload = receive(requests) or bytearray()
        except EOFError:  # the service went away
            return
        try:
            header, parts = _answer(request, payload)
        except Refused as exc:
            header, parts = {"ok": False, "code": exc.code, "detail": exc.detail}, []
        except MemoryError:
            header, parts = {"ok": False, "code": "OVERLOADED", "detail": "not enough memory to decode"}, []
        except Exception as exc:  # a fault of this worker, not of the input: the service logs it
            print(f"ghostfacenets decode worker: {type(exc).__name__}: {exc}", file=sys.stderr)
            header, parts = {"ok": False, "code": "INTERNAL", "detail": "the image decoder failed"}, []
        del payload
        send(replies, json.dumps(header).encode())
        while parts:  # each part freed once sent: nothing of a job outlives it
            send(replies, parts.pop(0))


if __name__ == "__main__":
    main()
