"""Errors as ``application/problem+json`` (RFC 9457): ``type``, ``title``, ``status``, ``detail`` and a stable
``code``. Every error the service can give goes through here; no traceback ever reaches a client."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..data.images import ImageError
from ..errors import GhostFaceNetsError
from ..gallery.base import ConflictError, GalleryError, ModelMismatchError, NotFoundError, UnavailableError

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("ghostfacenets.serve")

# code -> (default HTTP status, title)
CODES: dict[str, tuple[int, str]] = {
    "INVALID_IMAGE": (422, "Not a usable image"),
    "PAYLOAD_TOO_LARGE": (413, "Request too large"),
    "TOO_MANY_PIXELS": (413, "Image has too many pixels"),
    "INVALID_VIDEO": (422, "Not a usable video"),
    "VIDEO_TOO_LONG": (413, "Video too long to process"),
    "NO_FACE": (422, "No face found"),
    "MULTIPLE_FACES": (422, "More than one face"),
    "SPOOF_SUSPECTED": (422, "Spoof suspected: a face does not look live"),
    "NOT_FOUND": (404, "Not found"),
    "CONFLICT": (409, "Conflict"),
    "MODEL_MISMATCH": (409, "Embeddings of another model"),
    "UNAUTHORIZED": (401, "Missing or unknown API key"),
    "FORBIDDEN": (403, "Not allowed for this API key"),
    "VALIDATION": (422, "Invalid request"),
    "RATE_LIMITED": (429, "Too many requests"),
    "UNKNOWN_HOST": (421, "Host not served here"),
    "OVERLOADED": (503, "Service overloaded"),
    "DEADLINE_EXCEEDED": (503, "Image work took too long"),
    "UNAVAILABLE": (503, "Service not ready"),
    "INTERNAL": (500, "Internal error"),
}
RETRY_AFTER_S = 1


class ApiError(Exception):
    """An error answered as problem+json: ``code`` (a key of :data:`CODES`), a one-line ``detail``, and the HTTP
    ``status`` (default: the code's)."""

    def __init__(self, code: str, detail: str, status: int | None = None, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status = status or CODES[code][0]
        self.headers = headers or {}


class Overloaded(ApiError):
    """The service is at its bound of queued work: try again shortly."""

    def __init__(self, detail: str) -> None:
        super().__init__("OVERLOADED", detail, headers={"Retry-After": str(RETRY_AFTER_S)})


def problem_body(code: str, detail: str, status: int | None = None) -> dict[str, Any]:
    status = status or CODES[code][0]
    return {
        "type": f"urn:ghostfacenets:problem:{code.lower().replace('_', '-')}",
        "title": CODES[code][1],
        "status": status,
        "detail": detail,
        "code": code,
    }


def problem_response(
    code: str, detail: str, status: int | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = problem_body(code, detail, status)
    return JSONResponse(body, status_code=body["status"], headers=headers, media_type=PROBLEM_JSON)


def as_api_error(exc: GhostFaceNetsError, store_location: str | None = None) -> ApiError:
    """The problem a package error stands for (its message is one line meant for users). A plain gallery error that
    names the store (``LOCATION: ...``: a driver error, a closed or damaged database) is the database failing, 503
    ``UNAVAILABLE``, told without the location; one that does not is a refused input, 422 ``VALIDATION``."""
    from ..liveness.checker import SpoofSuspectedError
    from ..pipeline.results import NoFaceError

    detail = str(exc)
    prefix = f"{store_location}: " if store_location else None
    headers = None
    if isinstance(exc, UnavailableError):  # the database is down or busy: at once, not after a long wait
        code, headers = "UNAVAILABLE", {"Retry-After": str(RETRY_AFTER_S)}
        log.warning("gallery database unavailable: %s", detail)
    elif isinstance(exc, NotFoundError):
        code = "NOT_FOUND"
    elif isinstance(exc, (ConflictError, ModelMismatchError)):
        code = "CONFLICT"
    elif isinstance(exc, NoFaceError):
        code = "NO_FACE"
    elif isinstance(exc, SpoofSuspectedError):
        code = "SPOOF_SUSPECTED"
    elif isinstance(exc, ImageError):
        code = "INVALID_IMAGE"
    elif isinstance(exc, GalleryError) and prefix and detail.startswith(prefix):
        code = "UNAVAILABLE"
        log.error("gallery database error: %s", detail)
    else:
        code = "VALIDATION"  # ThresholdError, GalleryError for bad names, metadata, ...
    return ApiError(code, detail.removeprefix(prefix) if prefix else detail, headers=headers)


_HTTP_CODES = {401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND", 409: "CONFLICT", 413: "PAYLOAD_TOO_LARGE"}


def _validation_detail(exc: RequestValidationError) -> str:
    """Where and what, never the input itself (it may be an image)."""
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_handlers(app: FastAPI) -> None:
    """Answer every error as problem+json."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return problem_response(exc.code, exc.detail, exc.status, exc.headers)

    @app.exception_handler(GhostFaceNetsError)
    async def _package_error(request: Request, exc: GhostFaceNetsError) -> JSONResponse:
        service = getattr(request.app.state, "service", None)
        error = as_api_error(exc, service.store.location if service is not None else None)
        return problem_response(error.code, error.detail, error.status, error.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response("VALIDATION", _validation_detail(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "VALIDATION")
        detail = exc.detail if isinstance(exc.detail, str) else CODES[code][1]
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.url.path}"
        return problem_response(code, detail, exc.status_code, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The server log gets the exception (never request bodies); the client gets one line.
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return problem_response("INTERNAL", "internal error; the server log has the details")
