"""Images from requests: multipart file fields or base64 strings in a JSON body (never URLs or server paths),
checked against the service's limits before they are decoded.

Checks, in order: the body size (:class:`BodyLimit`, before anything is read), the number of multipart fields and
files, the format (read from the header by Pillow: JPEG, PNG, WebP or BMP unless configured otherwise), the pixel
count (from the header, so a decompression bomb is refused before decoding), a JPEG cut short (no end-of-image
marker after its last scan), then the decoding itself with the package's :func:`~ghostfacenets.data.images.decode_image`
(OpenCV), as the CLI decodes, so both see the same pixels.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..data.images import ImageError, decode_image
from .problems import ApiError, problem_response
from .settings import ServiceSettings

_FORMAT_NAMES = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP", "BMP": "BMP"}
_NOT_ACCEPTED = re.compile(r"^\s*([a-z][a-z0-9+.-]*://|file:|/|\\\\|[a-z]:[\\/]|\.\.?[\\/])", re.IGNORECASE)
_DATA_URL = re.compile(r"^data:[\w/+.-]*;base64,", re.IGNORECASE)


@dataclass(frozen=True)
class UploadedImage:
    """A decoded image: its request field, uint8 RGB pixels and the sha256 of its encoded bytes."""

    field: str
    pixels: np.ndarray
    sha256: str

    @property
    def size(self) -> dict[str, int]:
        return {"width": int(self.pixels.shape[1]), "height": int(self.pixels.shape[0])}


class BodyLimit:
    """ASGI middleware refusing request bodies over ``max_bytes`` with 413 ``PAYLOAD_TOO_LARGE``: at once when the
    ``Content-Length`` says so, else as soon as the streamed body passes the limit (nothing more is read)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> ApiError:
        return ApiError("PAYLOAD_TOO_LARGE", f"the request body is larger than the limit of {self.max_bytes:,} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.max_bytes
            except ValueError:
                too_large = False  # the server itself refuses a malformed length
            if too_large:
                error = self._too_large()
                await problem_response(error.code, error.detail, headers={"Connection": "close"})(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large()
            return message

        await self.app(scope, limited_receive, send)


class _InMemoryMultiPart(MultiPartParser):
    """Starlette's parser, keeping uploads in memory: the body limit bounds them, and no photo touches the disk."""

    spool_max_size = 1 << 62


def _jpeg_complete(data: bytes) -> bool:
    """Whether a JPEG has its end-of-image marker after its last start-of-scan (a file cut short has not; marker
    bytes cannot occur inside entropy-coded data, where 0xFF is always followed by 0x00 or a restart marker)."""
    last_scan = data.rfind(b"\xff\xda")
    return last_scan >= 0 and data.find(b"\xff\xd9", last_scan) >= 0


def decode_upload(data: bytes, field: str, settings: ServiceSettings) -> UploadedImage:
    """Check and decode the encoded bytes of request field ``field``."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ApiError("INVALID_IMAGE", f"{field}: empty file")
    accepted = ", ".join(_FORMAT_NAMES[f] for f in settings.image_formats)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the pixel limit below decides
            with Image.open(io.BytesIO(data)) as header:
                image_format, width, height = header.format, header.width, header.height
    except Image.DecompressionBombError:
        raise ApiError("TOO_MANY_PIXELS", f"{field}: more pixels than the limit of {settings.max_pixels:,}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ApiError("INVALID_IMAGE", f"{field}: not an image in an accepted format ({accepted})", 415) from None
    if image_format not in settings.image_formats:
        raise ApiError("INVALID_IMAGE", f"{field}: {image_format} images are not accepted (only {accepted})", 415)
    if width * height > settings.max_pixels:
        raise ApiError(
            "TOO_MANY_PIXELS",
            f"{field}: {width}x{height} is {width * height:,} pixels, more than the limit of {settings.max_pixels:,}",
        )
    if image_format == "JPEG" and not _jpeg_complete(data):
        raise ApiError("INVALID_IMAGE", f"{field}: a JPEG cut short (no end-of-image marker)")
    try:
        pixels = decode_image(data, field, settings.max_pixels)
    except ImageError as exc:
        raise ApiError("INVALID_IMAGE", str(exc)) from None
    return UploadedImage(field, pixels, hashlib.sha256(data).hexdigest())


def _base64_image(value: Any, field: str) -> bytes:
    if not isinstance(value, str):
        raise ApiError("VALIDATION", f"{field}: expected a base64 string, got {type(value).__name__}")
    text = _DATA_URL.sub("", value.strip(), count=1)
    try:  # base64 has "/" in its alphabet: decode first, then tell a URL or path from damaged data
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        if _NOT_ACCEPTED.match(value):
            raise ApiError(
                "INVALID_IMAGE", f"{field}: images are sent as files or base64 data, never as URLs or server paths"
            ) from None
        raise ApiError("INVALID_IMAGE", f"{field}: not valid base64") from None


@dataclass(frozen=True)
class ImageRequest:
    """The encoded images of a request, by field (a field may repeat)."""

    images: dict[str, list[bytes]]

    def one(self, field: str) -> bytes:
        found = self.images.get(field) or []
        if len(found) != 1:
            raise ApiError("VALIDATION", f"expected exactly one image in field {field!r}, got {len(found)}")
        return found[0]

    def many(self, field: str) -> list[bytes]:
        found = self.images.get(field) or []
        if not found:
            raise ApiError("VALIDATION", f"expected one or more images in field {field!r}")
        return found


async def read_images(request: Request, image_fields: tuple[str, ...], settings: ServiceSettings) -> ImageRequest:
    """The images of a multipart form or a JSON body (``{"image": "<base64>"}``; a list of strings where a field
    takes several). Other form fields must be in ``image_fields`` too; nothing else is accepted."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    images: dict[str, list[bytes]] = {}
    count = 0
    if content_type == "multipart/form-data":
        parser = _InMemoryMultiPart(
            request.headers,
            request.stream(),
            max_files=settings.max_images,
            max_fields=settings.max_fields,
            max_part_size=64 * 1024,
        )
        try:
            form: FormData = await parser.parse()
        except MultiPartException as exc:
            raise ApiError("PAYLOAD_TOO_LARGE", f"multipart body refused: {exc.message}") from None
        try:
            for key, value in form.multi_items():
                if key not in image_fields:
                    raise ApiError("VALIDATION", f"unexpected field {key!r}; images go in {', '.join(image_fields)}")
                if not isinstance(value, UploadFile):
                    raise ApiError("VALIDATION", f"{key}: expected a file upload, or use a JSON body with base64")
                images.setdefault(key, []).append(await value.read())
        finally:
            await form.close()
    elif content_type == "application/json":
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError("VALIDATION", "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError("VALIDATION", "the JSON body must be an object")
        for key, value in body.items():
            if key not in image_fields:
                raise ApiError("VALIDATION", f"unexpected field {key!r}; images go in {', '.join(image_fields)}")
            values = value if isinstance(value, list) else [value]
            count += len(values)
            if count > settings.max_images:
                raise ApiError("PAYLOAD_TOO_LARGE", f"more than {settings.max_images} images in one request")
            images[key] = [_base64_image(v, key) for v in values]
    else:
        raise ApiError(
            "VALIDATION",
            "send images as multipart/form-data file fields or as base64 strings in an application/json body",
            415,
        )
    return ImageRequest(images)


def openapi_body(*fields: str, multiple: bool = False) -> dict[str, Any]:
    """The OpenAPI request body of a route reading images with :func:`read_images` (multipart files or base64)."""
    file_schema: dict[str, Any] = {"type": "string", "format": "binary"}
    text_schema: dict[str, Any] = {"type": "string", "format": "byte", "description": "base64 (a data: URL works)"}
    if multiple:
        file_schema = {"type": "array", "items": file_schema}
        text_schema = {"oneOf": [text_schema, {"type": "array", "items": text_schema}]}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": list(fields),
                        "properties": dict.fromkeys(fields, file_schema),
                    }
                },
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": list(fields),
                        "properties": dict.fromkeys(fields, text_schema),
                    }
                },
            },
        }
    }
