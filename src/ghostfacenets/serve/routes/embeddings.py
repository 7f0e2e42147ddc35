"""Verification, enrolment and identification from embeddings computed elsewhere (the browser module, an app), so
that photos never reach the service. Every request names the model its embeddings come from; embeddings of another
model, size or flip setting are refused with ``MODEL_MISMATCH``."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from ...gallery.base import ModelId, NewFace
from ..auth import Key, Reader, Service, Writer
from ..problems import ApiError
from ..service import FaceService
from .galleries import GalleryName, SubjectId, allowed_threshold, subject_json, visible_matches

router = APIRouter(prefix="/v1", tags=["embeddings"])
MAX_DIM = 4096
SHA256 = r"^[0-9a-f]{64}$"


class EmbeddingModel(BaseModel):
    """The embedding space, as ``/v1/info`` and the browser module's manifest give it."""

    name: str = Field(max_length=200)
    sha256: str = Field(pattern=SHA256, description="the weights' fingerprint")
    embedding_dim: int = Field(ge=1, le=MAX_DIM)
    flip: bool


class EmbeddedFace(BaseModel):
    embedding: list[float] = Field(min_length=1, max_length=MAX_DIM)
    box: list[float] | None = Field(default=None, min_length=4, max_length=4)
    score: float | None = None
    landmarks: list[list[float]] | None = Field(default=None, min_length=5, max_length=5)


class FacesOfPhoto(BaseModel):
    """The faces of one photo (identify), with the photo's sha256 when faces are enrolled."""

    model: EmbeddingModel
    faces: list[EmbeddedFace] = Field(min_length=1, max_length=100)


class EnrolFaces(BaseModel):
    model: EmbeddingModel
    faces: list[EmbeddedFace] = Field(min_length=1, max_length=100)
    image_sha256: list[str] = Field(
        min_length=1, max_length=100, description="sha256 (hex) of each face's photo file: a photo is enrolled once"
    )


class VerifyEmbeddings(BaseModel):
    model: EmbeddingModel
    a: list[float] = Field(min_length=1, max_length=MAX_DIM)
    b: list[float] = Field(min_length=1, max_length=MAX_DIM)


def checked(svc: FaceService, model: EmbeddingModel, embeddings: list[list[float]]) -> np.ndarray:
    """The embeddings (N, D), L2-normalised, once they are known to come from the service's embedding space."""
    theirs = ModelId(model.name, model.sha256, model.embedding_dim, model.flip)
    mine = svc.model_id
    if not theirs.compatible(mine):
        raise ApiError("MODEL_MISMATCH", f"embeddings of {theirs.describe()}; this service uses {mine.describe()}")
    if len(embeddings) > svc.settings.max_faces:
        raise ApiError("VALIDATION", f"{len(embeddings)} faces; at most {svc.settings.max_faces} per request")
    sizes = {len(e) for e in embeddings}
    if sizes != {mine.dim}:
        raise ApiError("MODEL_MISMATCH", f"embeddings of {sorted(sizes)} values; this model's have {mine.dim}")
    array = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    if not np.all(np.isfinite(array)) or np.any(norms < 1e-6):
        raise ApiError("VALIDATION", "embeddings must be finite and not zero")
    return (array / norms).astype(np.float32)


def detection(face: EmbeddedFace) -> dict[str, Any] | None:
    if face.box is None:
        return None
    return {
        "box": [round(v, 2) for v in face.box],
        "score": None if face.score is None else round(face.score, 4),
        "landmarks": None if face.landmarks is None else [[round(v, 2) for v in p[:2]] for p in face.landmarks],
    }


@router.post("/verify/embeddings", summary="Are two embeddings the same person?")
async def verify_embeddings(
    body: VerifyEmbeddings,
    svc: Service,
    key: Key,
    threshold: Annotated[float | None, Query(ge=-1.0, le=1.0, description="cosine threshold")] = None,
) -> dict[str, Any]:
    a, b = checked(svc, body.model, [body.a, body.b])
    chosen = svc.threshold(threshold)
    similarity = float(np.clip(np.dot(a, b), -1.0, 1.0))
    return {
        "similarity": round(similarity, 6),
        "threshold": chosen.value,
        "is_same": similarity > chosen.value,
        "threshold_source": chosen.source,
        "threshold_note": chosen.note,
    }


@router.post(
    "/galleries/{gallery}/subjects/{subject_id}/faces/embeddings",
    status_code=201,
    summary="Enrol faces of a subject from their embeddings (one per photo), all or none",
)
async def add_face_embeddings(
    gallery: GalleryName, subject_id: SubjectId, body: EnrolFaces, svc: Service, key: Writer
) -> dict[str, Any]:
    if len(body.image_sha256) != len(body.faces):
        raise ApiError("VALIDATION", "give one image_sha256 per face")
    if any(len(h) != 64 or not all(c in "0123456789abcdef" for c in h) for h in body.image_sha256):
        raise ApiError("VALIDATION", "image_sha256: 64 lowercase hex digits each")
    embeddings = checked(svc, body.model, [f.embedding for f in body.faces])
    await svc.in_thread(svc.store.subject, gallery, subject_id)  # 404 before any work
    faces = [
        NewFace(embedding=e, image_sha256=h, source="embeddings", detection=detection(f))
        for e, h, f in zip(embeddings, body.image_sha256, body.faces)
    ]
    enrolled = await svc.in_thread(svc.store.add_faces, gallery, subject_id, faces, svc.model_id)
    return {
        "faces": [{"face_id": f.id, "det_score": (f.detection or {}).get("score")} for f in enrolled.added],
        "already_enrolled": len(enrolled.skipped),
        "subject": subject_json(enrolled.subject),
    }


@router.post(
    "/galleries/{gallery}/identify/embeddings",
    summary="Who are these faces: each embedding with the gallery's closest subjects",
)
async def identify_embeddings(
    gallery: GalleryName,
    body: FacesOfPhoto,
    svc: Service,
    key: Reader,
    top_k: Annotated[int, Query(ge=1, le=100, description="candidates per face")] = 5,
    threshold: Annotated[float | None, Query(ge=-1.0, le=1.0, description="cosine threshold of a match")] = None,
) -> dict[str, Any]:
    queries = checked(svc, body.model, [f.embedding for f in body.faces])
    chosen = allowed_threshold(svc, key, threshold)
    await svc.in_thread(svc.store.gallery, gallery)  # 404 before any work
    found = await visible_matches(svc, key, gallery, queries, top_k, chosen)
    results = [{**(detection(face) or {}), **matches} for face, matches in zip(body.faces, found)]
    return {"faces": results, "threshold": {"value": chosen.value, "source": chosen.source}}
