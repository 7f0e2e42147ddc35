"""The ASGI app: :func:`create_app` builds it; its lifespan loads the model once per worker process and opens the
gallery store."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .guard import Guard
from .problems import install_handlers
from .routes import embeddings, faces, galleries, health, liveness, people, video, web
from .settings import ServiceSettings

if TYPE_CHECKING:
    from ..pipeline.recognizer import FaceRecognizer

log = logging.getLogger("ghostfacenets.serve")
STATIC = resources.files("ghostfacenets.serve") / "static"

# The page loads only its own files; the camera may be used by this origin only.
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"permissions-policy", b"camera=(self), microphone=(), geolocation=()"),
]
_PAGE_CSP = (
    b"default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; style-src 'self'; script-src 'self'; "
    b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
# The page and the browser module's files (its WebAssembly runtime, whose threads are workers with their own CSP)
# compile WebAssembly, and run threads only when cross-origin isolated; nothing else gets either.
_WASM_PATHS = ("/web/",)
_WASM_CSP = _PAGE_CSP.replace(b"script-src 'self'", b"script-src 'self' 'wasm-unsafe-eval'")
_ISOLATION_HEADERS = [
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-embedder-policy", b"require-corp"),
]
# The API docs page (Swagger UI at /docs) loads its files from this process (fastapi-offline carries them), so it
# works without the internet; it starts with an inline script, so it gets no strict CSP. ReDoc is left out: its
# page fetches a logo from a CDN.
_DOCS_PATHS = ("/docs",)


class SecurityHeaders:
    """Adds the headers above to every response, and a strict Content-Security-Policy to all but the API docs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        strict = not scope["path"].startswith(_DOCS_PATHS)
        wasm = scope["path"] == "/" or scope["path"].startswith(_WASM_PATHS)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", [])) + _SECURITY_HEADERS
                if wasm:
                    headers += [(b"content-security-policy", _WASM_CSP), *_ISOLATION_HEADERS]
                elif strict:
                    headers.append((b"content-security-policy", _PAGE_CSP))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(
    settings: ServiceSettings | None = None, *, recognizer: FaceRecognizer | None = None, **changes: Any
) -> FastAPI:
    """The face recognition service. ``settings`` (default: from ``ghostfacenets serve``'s environment variable,
    else the defaults), with ``changes`` applied, e.g. ``create_app(model="m.safetensors", db="g.sqlite")``.

    Nothing is loaded until the app starts (its lifespan): then the model, once per worker process (unless an
    already loaded ``recognizer`` made from the same settings is given), and the store.
    """
    chosen = (settings or ServiceSettings.from_environment()).with_changes(**changes)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import anyio

        from .service import FaceService, load_recognizer, open_gallery_store

        loaded = recognizer if recognizer is not None else await anyio.to_thread.run_sync(load_recognizer, chosen)
        await anyio.to_thread.run_sync(_warm_up, loaded)
        store = await anyio.to_thread.run_sync(open_gallery_store, chosen.database())
        try:
            async with FaceService(chosen, loaded, store) as service:
                app.state.service = service
                log.info("serving %s with gallery %s", service.model_id.describe(), store.location)
                yield
                app.state.service = None
        finally:
            store.close()

    from .. import __version__

    # The API docs (/docs, /openapi.json) answer under the same Host rule as the page, or not at all (docs=False).
    docs: dict[str, Any] = (
        {"static_url": "/docs/assets", "redoc_url": None}
        if chosen.docs
        else {"openapi_url": None, "docs_url": None, "redoc_url": None}
    )
    app = (FastAPIOffline if chosen.docs else FastAPI)(
        title="ghostfacenets",
        version=__version__,
        summary="Face detection, verification and identification with GhostFaceNets",
        description="Every `/v1` route needs `Authorization: Bearer KEY` (`ghostfacenets keys create`). Images are "
        "multipart file fields or base64 strings in a JSON body, never URLs or server paths. Errors are "
        "`application/problem+json` with a stable `code`.",
        lifespan=lifespan,
        **docs,
    )
    app.state.settings = chosen
    app.state.service = None
    install_handlers(app)
    app.include_router(health.router)
    app.include_router(faces.router)
    app.include_router(galleries.router)
    app.include_router(embeddings.router)
    app.include_router(people.router)
    app.include_router(web.router)
    app.include_router(liveness.router)
    app.include_router(video.router)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.add_middleware(Guard, settings=chosen)
    app.add_middleware(SecurityHeaders)
    return app


def _warm_up(recognizer: Any) -> None:
    """Run the detector and the embedder once, so the first request does not pay for their set-up."""
    import numpy as np

    recognizer.detect(np.full((400, 400, 3), 128, np.uint8), largest_only=True)  # both sizes of the fast path
    recognizer.embed_aligned(np.zeros((1, 112, 112, 3), np.uint8))
