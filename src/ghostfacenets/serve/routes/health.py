"""Liveness, readiness and what the service runs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..auth import Key, Service
from ..problems import RETRY_AFTER_S, problem_response

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The model is loaded and the database answers", response_model=None)
async def readyz(request: Request) -> dict[str, Any] | JSONResponse:
    """A status and nothing more: the route needs no key, so it names neither the model nor the database."""
    svc = getattr(request.app.state, "service", None)
    retry = {"Retry-After": str(RETRY_AFTER_S)}
    if svc is None:
        return problem_response("UNAVAILABLE", "not ready: the model is loading", headers=retry)
    try:
        await svc.in_thread(svc.store.ping)
    except Exception:  # any failure to answer means not ready; the reason stays in the server
        return problem_response("UNAVAILABLE", "not ready: the gallery database does not answer", headers=retry)
    return {"status": "ready"}


@router.get("/v1/info", summary="The model, its embedding size, flip, the decision threshold and the version")
async def info(svc: Service, key: Key) -> dict[str, Any]:
    from ... import __version__

    threshold = svc.threshold()
    return {
        "model": svc.model_id.name,
        "model_sha256": svc.model_id.sha256,
        "embedding_dim": svc.model_id.dim,
        "flip": svc.model_id.flip,
        "threshold": {"value": threshold.value, "source": threshold.source, "note": threshold.note},
        "version": __version__,
        "detector": getattr(svc.recognizer.detector, "name", "detector"),
        "limits": {
            "max_body_bytes": svc.settings.max_body_bytes,
            "max_pixels": svc.settings.max_pixels,
            "max_images": svc.settings.max_images,
            "max_faces": svc.settings.max_faces,
            "image_formats": list(svc.settings.image_formats),
        },
        "store_crops": svc.settings.store_crops,
    }
