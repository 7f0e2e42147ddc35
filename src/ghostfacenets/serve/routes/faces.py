"""Detection, embeddings and verification of uploaded photos (nothing is stored)."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request

from ..auth import Key, Service
from ..images import openapi_body, read_images

router = APIRouter(prefix="/v1", tags=["faces"])
MaxFaces = Annotated[int | None, Query(ge=1, description="at most this many faces, largest first")]
Liveness = Annotated[
    bool | None,
    Query(
        description="check that each face is live (passive liveness; SPOOF_SUSPECTED when not); default: the "
        "service's setting, which a request cannot turn off"
    ),
]


@router.post("/detect", summary="Faces in a photo: boxes, scores, five landmarks", openapi_extra=openapi_body("image"))
async def detect(request: Request, svc: Service, key: Key, max_faces: MaxFaces = None) -> dict[str, Any]:
    body = await read_images(request, ("image",), svc.settings)
    async with svc.admitted():
        image, faces, count = await svc.find_faces(body.one("image"), "image", max_faces)
    return {"image": image.size, "faces": [f.to_json() for f in faces], "faces_in_image": count}


@router.post(
    "/embed", summary="Faces in a photo with their L2-normalised embeddings", openapi_extra=openapi_body("image")
)
async def embed(request: Request, svc: Service, key: Key, max_faces: MaxFaces = None) -> dict[str, Any]:
    body = await read_images(request, ("image",), svc.settings)
    async with svc.admitted():
        image, faces, count = await svc.find_faces(body.one("image"), "image", max_faces)
        embedded = await svc.embed(faces)
    return {
        "image": image.size,
        "faces": [
            {**f.to_json(), "embedding": [float(v) for v in f.embedding]} for f in embedded if f.embedding is not None
        ],
        "faces_in_image": count,
        "model": svc.model_id.name,
        "embedding_dim": svc.model_id.dim,
    }


@router.post(
    "/verify",
    summary="Are the largest faces of two photos the same person?",
    openapi_extra=openapi_body("image_a", "image_b"),
)
async def verify(
    request: Request,
    svc: Service,
    key: Key,
    threshold: Annotated[
        float | None, Query(ge=-1.0, le=1.0, description="cosine threshold (default: the service's)")
    ] = None,
    liveness: Liveness = None,
) -> dict[str, Any]:
    body = await read_images(request, ("image_a", "image_b"), svc.settings)
    chosen = svc.threshold(threshold)
    check = svc.wants_liveness(liveness)
    async with svc.admitted():
        (image_a, face_a, count_a), (image_b, face_b, count_b) = await svc.largest_faces(
            [(body.one("image_a"), "image_a"), (body.one("image_b"), "image_b")], liveness=check
        )
    assert face_a.embedding is not None and face_b.embedding is not None
    similarity = float(np.clip(np.dot(face_a.embedding, face_b.embedding), -1.0, 1.0))
    return {
        "similarity": round(similarity, 6),
        "threshold": chosen.value,
        "is_same": similarity > chosen.value,
        "threshold_source": chosen.source,
        "threshold_note": chosen.note,
        "face_a": face_a.to_json(),
        "face_b": face_b.to_json(),
        "faces_in_a": count_a,
        "faces_in_b": count_b,
        "image_a": image_a.size,
        "image_b": image_b.size,
    }
