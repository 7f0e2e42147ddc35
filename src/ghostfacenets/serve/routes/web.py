"""The browser module and its files under ``/web`` (public, like the page: a browser needs them before any key)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from ..auth import service
from ..problems import ApiError
from ..web import IMMUTABLE, MODULES, REVALIDATE, DeviceFilesError, WebFile, WebFiles

router = APIRouter(prefix="/web", tags=["browser"], include_in_schema=False)


def web_files(request: Request) -> WebFiles:
    """The worker's :class:`WebFiles` (made on first use; the embedder's ONNX form may need an export)."""
    files = getattr(request.app.state, "web_files", None)
    if files is None:
        svc = service(request)
        if svc is None:
            raise ApiError("UNAVAILABLE", "the model is still loading")
        threshold = svc.threshold()
        model = svc.model_id
        files = WebFiles(
            svc.settings,
            {"name": model.name, "sha256": model.sha256, "embedding_dim": model.dim, "flip": model.flip},
            {"value": threshold.value, "source": threshold.source, "note": threshold.note},
        )
        request.app.state.web_files = files
    return files


def send(request: Request, file: WebFile) -> Response:
    """The file, gzip-compressed when the client accepts it; 304 when its ETag matches; cache headers by kind."""
    accepts_gzip = "gzip" in request.headers.get("accept-encoding", "").lower()
    use_gzip = accepts_gzip and file.gzipped is not None
    etag = f'"{file.etag}{"-gz" if use_gzip else ""}"'
    headers = {
        "ETag": etag,
        "Cache-Control": IMMUTABLE if file.immutable else REVALIDATE,
        "Vary": "Accept-Encoding",
        "Access-Control-Allow-Origin": "*",
        "Cross-Origin-Resource-Policy": "cross-origin",
    }
    if etag in [tag.strip() for tag in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers=headers)
    if use_gzip:
        headers["Content-Encoding"] = "gzip"
    return Response(file.gzipped if use_gzip else file.data, headers=headers, media_type=file.media_type)


async def _file(request: Request, name: str) -> Response:
    svc = service(request)
    if svc is None:
        raise ApiError("UNAVAILABLE", "the model is still loading")
    try:
        files = await svc.in_thread(web_files(request).files)
    except DeviceFilesError as exc:  # e.g. a .pte service model: nothing a browser can run
        raise ApiError("UNAVAILABLE", str(exc)) from None
    found = files.get(name)
    if found is None:
        raise ApiError("NOT_FOUND", f"no file {name!r} (the manifest names the current files)")
    return send(request, found)


@router.api_route("/{name}.mjs", methods=["GET", "HEAD"])
async def module(request: Request, name: str) -> Response:
    """The browser module (``ghostfacenets.mjs``) or one of its parts."""
    if f"{name}.mjs" not in MODULES:
        raise ApiError("NOT_FOUND", f"no module {name}.mjs under /web")
    return await _file(request, f"{name}.mjs")


@router.api_route("/manifest.json", methods=["GET", "HEAD"])
async def manifest(request: Request) -> Response:
    return await _file(request, "manifest.json")


@router.api_route("/files/{name}", methods=["GET", "HEAD"])
async def hashed_file(request: Request, name: str) -> Response:
    if name in (*MODULES, "manifest.json"):
        raise ApiError("NOT_FOUND", f"no file {name!r} under /web/files")
    return await _file(request, name)


@router.api_route("/files/{folder}/{name}", methods=["GET", "HEAD"])
async def runtime_file(request: Request, folder: str, name: str) -> Response:
    """A file of a runtime that finds its parts by their names beside it (LiteRT.js), in a content-named folder."""
    return await _file(request, f"{folder}/{name}")
