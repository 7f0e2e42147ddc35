"""Galleries, their subjects (people) and faces, and identification against them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, Field

from ...data.images import encode_png
from ...gallery.base import GALLERY_NAME as _GALLERY_NAME
from ...gallery.base import MAX_METADATA_BYTES, ApiKey, GalleryInfo, NewFace, StoredFace, Subject
from ...pipeline.results import Threshold
from ..auth import Key, Reader, Service, SubjectReader, Writer, check_admin, check_gallery
from ..images import openapi_body, read_images
from ..problems import ApiError
from ..service import FaceService
from .faces import Liveness

router = APIRouter(prefix="/v1/galleries", tags=["galleries"])

GALLERY_NAME = f"^{_GALLERY_NAME.pattern}$"
GalleryName = Annotated[str, Path(pattern=GALLERY_NAME, description="gallery name")]
SubjectId = Annotated[int, Path(ge=1, description="subject id")]
FaceId = Annotated[int, Path(ge=1, description="face id")]


class NewGallery(BaseModel):
    name: str = Field(pattern=GALLERY_NAME, description="letters, digits, '_', '.', '-'; at most 64")


class NewSubject(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    metadata: dict[str, Any] | None = Field(
        default=None, description=f"any JSON object (at most {MAX_METADATA_BYTES:,} bytes)"
    )


class SubjectChanges(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    metadata: dict[str, Any] | None = Field(default=None, description="replaces the subject's metadata")


def gallery_json(info: GalleryInfo) -> dict[str, Any]:
    model = info.model
    return {
        "name": info.name,
        "subjects": info.subjects,
        "faces": info.faces,
        "created": info.created,
        "model": None
        if model is None
        else {"name": model.name, "sha256": model.sha256, "embedding_dim": model.dim, "flip": model.flip},
    }


def subject_json(subject: Subject) -> dict[str, Any]:
    return {
        "id": subject.id,
        "name": subject.name,
        "metadata": subject.metadata,
        "faces": subject.faces,
        "created": subject.created,
        "updated": subject.updated,
    }


def face_record_json(face: StoredFace) -> dict[str, Any]:
    detection = face.detection or {}
    return {
        "face_id": face.id,
        "subject_id": face.subject_id,
        "det_score": detection.get("score"),
        "box": detection.get("box"),
        "image_sha256": face.image_sha256,
        "model": face.model_name,
        "model_sha256": face.model_sha256,
        "has_crop": face.has_crop,
        "created": face.created,
    }


# ---------------------------------------------------------------------------------------------------- galleries
@router.post("", status_code=201, summary="Create a gallery")
async def create_gallery(body: NewGallery, svc: Service, key: Key) -> dict[str, Any]:
    check_gallery(key, body.name)
    check_admin(key)
    return gallery_json(await svc.in_thread(svc.store.create_gallery, body.name))


@router.get("", summary="The galleries this key reaches")
async def list_galleries(svc: Service, key: Key) -> dict[str, Any]:
    if key.gallery_id is not None:
        galleries = [await svc.in_thread(svc.store.gallery, key.gallery)] if key.gallery is not None else []
    else:
        galleries = await svc.in_thread(svc.store.galleries)
    return {"galleries": [gallery_json(g) for g in galleries]}


@router.get("/{gallery}", summary="A gallery: its model and sizes")
async def get_gallery(gallery: GalleryName, svc: Service, key: Reader) -> dict[str, Any]:
    return gallery_json(await svc.in_thread(svc.store.gallery, gallery))


@router.delete("/{gallery}", status_code=204, summary="Delete a gallery with every subject and face in it")
async def delete_gallery(gallery: GalleryName, svc: Service, key: Writer) -> Response:
    await svc.in_thread(svc.store.delete_gallery, gallery)
    return Response(status_code=204)


# ---------------------------------------------------------------------------------------------------- subjects
@router.post("/{gallery}/subjects", status_code=201, summary="Add a subject (a person)")
async def create_subject(gallery: GalleryName, body: NewSubject, svc: Service, key: Writer) -> dict[str, Any]:
    return subject_json(await svc.in_thread(svc.store.add_subject, gallery, body.name, body.metadata))


@router.get("/{gallery}/subjects", summary="Subjects by id, a page at a time (permission list-subjects)")
async def list_subjects(
    gallery: GalleryName,
    svc: Service,
    key: SubjectReader,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[int | None, Query(ge=0, description="next_cursor of the previous page")] = None,
) -> dict[str, Any]:
    await svc.in_thread(svc.store.gallery, gallery)  # 404 for a gallery that does not exist
    page = await svc.in_thread(svc.store.subjects, gallery, cursor, limit + 1)
    more = len(page) > limit
    page = page[:limit]
    return {"subjects": [subject_json(s) for s in page], "next_cursor": page[-1].id if more else None}


@router.get("/{gallery}/subjects/{subject_id}", summary="A subject (permission list-subjects)")
async def get_subject(gallery: GalleryName, subject_id: SubjectId, svc: Service, key: SubjectReader) -> dict[str, Any]:
    return subject_json(await svc.in_thread(svc.store.subject, gallery, subject_id))


@router.patch("/{gallery}/subjects/{subject_id}", summary="Rename a subject or replace its metadata")
async def update_subject(
    gallery: GalleryName, subject_id: SubjectId, body: SubjectChanges, svc: Service, key: Writer
) -> dict[str, Any]:
    if body.name is None and body.metadata is None:
        raise ApiError("VALIDATION", "nothing to change: give name and/or metadata")
    return subject_json(await svc.in_thread(svc.store.update_subject, gallery, subject_id, body.name, body.metadata))


@router.delete("/{gallery}/subjects/{subject_id}", status_code=204, summary="Delete a subject and every face of it")
async def delete_subject(gallery: GalleryName, subject_id: SubjectId, svc: Service, key: Writer) -> Response:
    await svc.in_thread(svc.store.delete_subject, gallery, subject_id)
    return Response(status_code=204)


# ---------------------------------------------------------------------------------------------------- faces
@router.post(
    "/{gallery}/subjects/{subject_id}/faces",
    status_code=201,
    summary="Enrol photos of a subject: the largest face of each, all or none",
    openapi_extra=openapi_body("image", multiple=True),
)
async def add_faces(
    request: Request,
    gallery: GalleryName,
    subject_id: SubjectId,
    svc: Service,
    key: Writer,
    on_multiple: Annotated[
        Literal["largest", "error"], Query(description="a photo with several faces: use the largest, or refuse it")
    ] = "largest",
    liveness: Liveness = None,
) -> dict[str, Any]:
    body = await read_images(request, ("image",), svc.settings)
    images = body.many("image")
    check = svc.wants_liveness(liveness)
    await svc.in_thread(svc.store.subject, gallery, subject_id)  # 404 before any work
    info = await svc.in_thread(svc.store.gallery, gallery)
    if info.model is not None and not info.model.compatible(svc.model_id):
        raise ApiError(
            "CONFLICT", f"gallery {gallery!r} holds faces of {info.model.describe()}, not {svc.model_id.describe()}"
        )
    fields = [f"image[{i}]" if len(images) > 1 else "image" for i in range(len(images))]
    async with svc.admitted():
        found = await svc.largest_faces(list(zip(images, fields)), on_multiple, liveness=check)
    faces = [
        NewFace(
            embedding=face.embedding,
            image_sha256=image.sha256,
            source="api",
            detection={**face.to_json(), "faces_in_image": count},
            crop=encode_png(face.crop, "crop") if svc.settings.store_crops else None,
        )
        for image, face, count in found
        if face.embedding is not None
    ]
    enrolled = await svc.in_thread(svc.store.add_faces, gallery, subject_id, faces, svc.model_id)
    return {
        "faces": [
            {
                "face_id": f.id,
                "det_score": (f.detection or {}).get("score"),
                **{k: v for k, v in (f.detection or {}).items() if k == "liveness"},
            }
            for f in enrolled.added
        ],
        "already_enrolled": len(enrolled.skipped),
        "subject": subject_json(enrolled.subject),
    }


@router.get(
    "/{gallery}/subjects/{subject_id}/faces",
    summary="A subject's faces (no embeddings, no photos; permission list-subjects)",
)
async def list_faces(gallery: GalleryName, subject_id: SubjectId, svc: Service, key: SubjectReader) -> dict[str, Any]:
    faces = await svc.in_thread(svc.store.faces, gallery, subject_id)
    return {"faces": [face_record_json(f) for f in faces]}


@router.delete("/{gallery}/faces/{face_id}", status_code=204, summary="Delete one face")
async def delete_face(gallery: GalleryName, face_id: FaceId, svc: Service, key: Writer) -> Response:
    await svc.in_thread(svc.store.delete_face, gallery, face_id)
    return Response(status_code=204)


# ---------------------------------------------------------------------------------------------------- identify
@router.post(
    "/{gallery}/identify",
    summary="Who is in a photo: every face and whom it matched (and the closest subjects, permission see-candidates)",
    openapi_extra=openapi_body("image"),
)
async def identify(
    request: Request,
    gallery: GalleryName,
    svc: Service,
    key: Reader,
    top_k: Annotated[
        int, Query(ge=1, le=100, description="candidates per face (keys with the see-candidates permission)")
    ] = 5,
    threshold: Annotated[
        float | None,
        Query(
            ge=-1.0,
            le=1.0,
            description="cosine threshold of a match (default: the service's; lower only with see-candidates)",
        ),
    ] = None,
    max_faces: Annotated[int | None, Query(ge=1, description="at most this many faces, largest first")] = None,
    liveness: Liveness = None,
) -> dict[str, Any]:
    body = await read_images(request, ("image",), svc.settings)
    chosen = allowed_threshold(svc, key, threshold)
    check = svc.wants_liveness(liveness)
    await svc.in_thread(svc.store.gallery, gallery)  # 404 before any work
    async with svc.admitted():
        image, faces, count = await svc.find_faces(body.one("image"), "image", max_faces, check)
        svc.refuse_spoofs("image", faces)
        embedded = await svc.embed(faces)
    results = []
    if embedded:
        queries = np.stack([f.embedding for f in embedded if f.embedding is not None])
        found = await visible_matches(svc, key, gallery, queries, top_k, chosen)
        results = [{**face.to_json(), **matches} for face, matches in zip(embedded, found)]
    return {
        "image": image.size,
        "faces": results,
        "faces_in_image": count,
        "threshold": {"value": chosen.value, "source": chosen.source},
    }


def allowed_threshold(svc: FaceService, key: ApiKey, threshold: float | None) -> Threshold:
    """The threshold of an identification: a key without see-candidates may raise it, not lower it (403)."""
    chosen = svc.threshold(threshold)
    if not key.can("see-candidates") and chosen.value < svc.threshold().value:
        raise ApiError(
            "FORBIDDEN",
            f"this API key may not lower the threshold below the service's ({svc.threshold().value:.4f}); a key "
            "with the see-candidates permission may",
        )
    return chosen


async def visible_matches(
    svc: FaceService, key: ApiKey, gallery: str, queries: np.ndarray, top_k: int, chosen: Threshold
) -> list[dict[str, Any]]:
    """For each query, ``candidates`` and ``match`` as the key may see them: every candidate with see-candidates,
    else only whom the face matched (above the threshold)."""
    seen = key.can("see-candidates")
    found = await svc.in_thread(svc.store.search, gallery, queries, svc.model_id, top_k if seen else 1)
    results = []
    for candidates in found:
        best = candidates[0] if candidates else None
        match = best if best is not None and best.similarity > chosen.value else None
        shown = candidates if seen else [match] if match is not None else []
        results.append(
            {
                "candidates": [
                    {"subject_id": c.subject_id, "name": c.name, "similarity": round(c.similarity, 6)} for c in shown
                ],
                "match": match.subject_id if match is not None else None,
            }
        )
    return results
