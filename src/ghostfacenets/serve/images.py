"""Images from requests: multipart file fields or base64 strings in a JSON body (never URLs or server paths),
checked against the service's limits before they are decoded.

Checks, in order: the body size (:mod:`~ghostfacenets.serve.guard`, before anything is read; image routes raise it
from the JSON limit to ``max_body_bytes`` with :func:`~ghostfacenets.serve.guard.allow_body`), the number of
multipart fields and files, the format (read from the header by Pillow: JPEG, PNG, WebP or BMP unless configured
otherwise), the pixel count (from the header, so a decompression bomb is refused before decoding). Then, in a
worker process the service can end (:mod:`~ghostfacenets.serve.decoding`): base64 bodies are parsed, a JPEG's scans
are counted (more than ``max_jpeg_scans`` is refused) and a JPEG cut short is refused, and the image is decoded with
OpenCV as the CLI decodes (at a reduced size where the pipeline needs no more).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from .guard import allow_body
from .problems import ApiError
from .settings import ServiceSettings

_FORMAT_NAMES = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP", "BMP": "BMP"}


@dataclass(frozen=True)
class ImageHeader:
    """What the header of an uploaded image says: its format, its stored size (before EXIF orientation), the
    orientation (1-8; JPEG only), whether it is a progressive JPEG and its samples per pixel (JPEG: the memory
    libjpeg's coefficient buffer takes), and the sha256 of the encoded bytes."""

    field: str
    format: str
    width: int
    height: int
    sha256: str
    orientation: int = 1
    progressive: bool = False
    samples: float = 3.0

    def decode_cost(self, scale: int) -> int:
        """Pixels (of 3 bytes) that decoding at 1/``scale`` holds at most: the decoded image twice (in the worker
        and here) and, for a progressive JPEG, libjpeg's buffer of all coefficients (2 bytes a sample)."""
        decoded = -(-self.width // scale) * -(-self.height // scale)
        coefficients = int(self.width * self.height * self.samples * 2 / 3) if self.progressive else 0
        return 2 * decoded + coefficients


@dataclass(frozen=True)
class UploadedImage:
    """A decoded image: its request field, its size as shown (full resolution) and the sha256 of its bytes."""

    field: str
    width: int
    height: int
    sha256: str

    @property
    def size(self) -> dict[str, int]:
        return {"width": self.width, "height": self.height}


class _InMemoryMultiPart(MultiPartParser):
    """Starlette's parser, keeping uploads in memory: the body limit bounds them, and no photo touches the disk."""

    spool_max_size = 1 << 62


def _jpeg_details(header: Any) -> tuple[int, bool, float]:
    """(EXIF orientation, progressive, samples per pixel) of a JPEG opened by Pillow."""
    try:
        orientation = int(header.getexif().get(0x0112, 1))
    except Exception:  # a damaged EXIF block: the image is shown as stored, as OpenCV then shows it
        orientation = 1
    layers = getattr(header, "layer", None) or []
    h_max = max((h for _, h, _, _ in layers), default=1)
    v_max = max((v for _, _, v, _ in layers), default=1)
    samples = sum(h * v for _, h, v, _ in layers) / (h_max * v_max) if layers else 3.0
    return (orientation if 1 <= orientation <= 8 else 1), bool(header.info.get("progressive")), samples


def check_upload(data: bytes, field: str, settings: ServiceSettings) -> ImageHeader:
    """The header of the encoded bytes of request field ``field``, checked against the limits (nothing decoded)."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ApiError("INVALID_IMAGE", f"{field}: empty file")
    accepted = ", ".join(_FORMAT_NAMES[f] for f in settings.image_formats)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the pixel limit below decides
            with Image.open(io.BytesIO(data)) as header:
                image_format, width, height = header.format, header.width, header.height
                details = _jpeg_details(header) if image_format == "JPEG" else (1, False, 3.0)
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
    return ImageHeader(field, image_format, width, height, hashlib.sha256(data).hexdigest(), *details)


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
    takes several). Other form fields must be in ``image_fields`` too; nothing else is accepted. A JSON body is
    parsed in a decoding worker (a large one would hold the event loop)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    images: dict[str, list[bytes]] = {}
    allow_body(request, settings.max_body_bytes)
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
        body = await request.body()
        job = {"op": "json", "fields": list(image_fields), "max_images": settings.max_images}
        header, parts = await request.app.state.service.decoders.run(job, body, settings.deadline_s)
        for key, data in zip(header["fields"], parts):
            images.setdefault(key, []).append(data)
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
