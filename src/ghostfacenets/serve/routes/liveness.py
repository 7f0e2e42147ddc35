"""The liveness check on its own: is each face of a photo live? (Nothing is stored; a spoof is an answer here,
not an error.)"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ..auth import Key, Service
from ..images import openapi_body, read_images
from .faces import MaxFaces

router = APIRouter(prefix="/v1", tags=["liveness"])


@router.post(
    "/liveness",
    summary="Is each face of a photo live? Passive single-frame liveness (docs/liveness.md)",
    openapi_extra=openapi_body("image"),
)
async def liveness(request: Request, svc: Service, key: Key, max_faces: MaxFaces = None) -> dict[str, Any]:
    body = await read_images(request, ("image",), svc.settings)
    async with svc.admitted():
        image, faces, count = await svc.find_faces(body.one("image"), "image", max_faces, liveness=True)
    threshold = svc.liveness_checker().threshold
    return {
        "image": image.size,
        "faces": [f.to_json() for f in faces],
        "faces_in_image": count,
        "threshold": {"value": threshold.value, "source": threshold.source, "note": threshold.note},
    }
