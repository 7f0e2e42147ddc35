"""People: photos added without names, their faces grouped into persons, and the corrections (name, merge, split,
"not this person", move, ignore). Reads need a key of the gallery that may list its subjects (admin, or
``--can list-subjects``), changes an admin key; errors are problem+json."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, Field

from ...gallery.people import MAX_REFERENCE, PhotoFaces
from ...people.library import PeopleLibrary
from ..auth import Service, SubjectReader, Writer
from ..images import openapi_body, read_images
from ..problems import ApiError
from .galleries import GalleryName

router = APIRouter(prefix="/v1/galleries/{gallery}", tags=["people"])
PersonId = Annotated[int, Path(ge=1, description="person id")]
FaceId = Annotated[int, Path(ge=1, description="face id")]
MAX_IDS = 1000  # faces or people in one correction


class Naming(BaseModel):
    name: str = Field(min_length=1, max_length=200, description="the person's name (a subject of the gallery)")


class PeopleIds(BaseModel):
    people: list[int] = Field(min_length=1, max_length=MAX_IDS, description="people merged into this one")


class FaceIds(BaseModel):
    faces: list[int] = Field(min_length=1, max_length=MAX_IDS)


class Move(BaseModel):
    faces: list[int] = Field(min_length=1, max_length=MAX_IDS)
    person: int = Field(ge=1)


class Rejection(BaseModel):
    person: int | None = Field(default=None, ge=1, description="the person it is not (default: its own)")


class Clustering(BaseModel):
    full: bool = Field(default=False, description="forget every automatic placement and place every face again")


def _library(svc: Any, gallery: str) -> PeopleLibrary:
    return PeopleLibrary(svc.store, gallery, svc.recognizer)


async def _summary(svc: Any, library: PeopleLibrary) -> dict[str, Any]:
    summary = await svc.in_thread(library.summary)
    return {name: getattr(summary, name) for name in summary.__dataclass_fields__}


# ---------------------------------------------------------------------------------------------------- adding
@router.post(
    "/photos",
    status_code=201,
    summary="Add photos without names: every face of each, grouped at once; photos added before are skipped",
    openapi_extra=openapi_body("image", multiple=True),
)
async def add_photos(
    request: Request,
    gallery: GalleryName,
    svc: Service,
    key: Writer,
    reference: Annotated[
        list[str] | None,
        Query(max_length=MAX_REFERENCE, description="what each photo is known by, in order (default: its sha256)"),
    ] = None,
) -> dict[str, Any]:
    body = await read_images(request, ("image",), svc.settings)
    images = body.many("image")
    references = reference or []
    if references and len(references) != len(images):
        raise ApiError("VALIDATION", f"{len(images)} images but {len(references)} references")
    library = _library(svc, gallery)
    photos = []
    async with svc.admitted():
        for index, data in enumerate(images):
            field = f"image[{index}]" if len(images) > 1 else "image"
            image, found, _ = await svc.find_faces(data, field)
            crops = [f.crop for f in found]
            described = await svc.in_thread(
                _describe, library, crops, [f.face for f in found], svc.settings.store_crops
            )
            photos.append(PhotoFaces(references[index] if references else f"upload:{image.sha256}", described,
                                     image.sha256))  # fmt: skip
    added = await svc.in_thread(library.add, photos)
    return {**added.to_dict(), "summary": await _summary(svc, library)}


def _describe(library: PeopleLibrary, crops: list[Any], faces: list[Any], store_crops: bool) -> list[Any]:
    import numpy as np

    if not crops:
        return []
    return library.describe(np.stack(crops), faces, store_crops=store_crops)


@router.post("/people/cluster", summary="Place the faces waiting to be placed (or, with full, every face again)")
async def cluster(gallery: GalleryName, svc: Service, key: Writer, body: Clustering | None = None) -> dict[str, Any]:
    library = _library(svc, gallery)
    grouping = await svc.in_thread(lambda: library.cluster(full=bool(body and body.full)))
    return {"grouping": grouping.to_dict(), "summary": await _summary(svc, library)}


# ---------------------------------------------------------------------------------------------------- reading
@router.get("/people", summary="The people of a gallery, largest first, and how its faces stand")
async def list_people(
    gallery: GalleryName,
    svc: Service,
    key: SubjectReader,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    library = _library(svc, gallery)
    people = await svc.in_thread(library.people, offset, limit + 1)
    return {
        "people": [p.to_dict() for p in people[:limit]],
        "next_offset": offset + limit if len(people) > limit else None,
        "summary": await _summary(svc, library),
    }


@router.get("/people/{person_id}", summary="A person")
async def get_person(gallery: GalleryName, person_id: PersonId, svc: Service, key: SubjectReader) -> dict[str, Any]:
    return (await svc.in_thread(_library(svc, gallery).person, person_id)).to_dict()


async def _faces(svc: Any, gallery: str, person: int | None, after: int | None, limit: int) -> dict[str, Any]:
    faces = await svc.in_thread(_library(svc, gallery).faces, person, after, limit + 1)
    more = len(faces) > limit
    return {"faces": [f.to_dict() for f in faces[:limit]], "next_cursor": faces[limit - 1].id if more else None}


Limit = Annotated[int, Query(ge=1, le=1000)]
Cursor = Annotated[int | None, Query(ge=0, description="next_cursor of the previous page")]


@router.get("/people/{person_id}/faces", summary="A person's faces (no embeddings, no photos)")
async def person_faces(
    gallery: GalleryName,
    person_id: PersonId,
    svc: Service,
    key: SubjectReader,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    return await _faces(svc, gallery, person_id, cursor, limit)


@router.get("/unsorted", summary="The faces in no person (low quality, alone, or ignored)")
async def unsorted_faces(
    gallery: GalleryName, svc: Service, key: SubjectReader, limit: Limit = 100, cursor: Cursor = None
) -> dict[str, Any]:
    return await _faces(svc, gallery, None, cursor, limit)


@router.get(
    "/faces/{face_id}/crop",
    summary="A face's aligned crop (PNG), when the service keeps crops",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
async def face_crop(gallery: GalleryName, face_id: FaceId, svc: Service, key: SubjectReader) -> Response:
    png = await svc.in_thread(_library(svc, gallery).crop, face_id)
    if png is None:
        raise ApiError("NOT_FOUND", f"face {face_id} was stored without its crop (serve --store-crops keeps them)")
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


# ---------------------------------------------------------------------------------------------------- corrections
@router.patch("/people/{person_id}", summary="Name (or rename) a person: it becomes a subject identify finds")
async def name_person(
    gallery: GalleryName, person_id: PersonId, body: Naming, svc: Service, key: Writer
) -> dict[str, Any]:
    return (await svc.in_thread(_library(svc, gallery).name, person_id, body.name)).to_dict()


@router.post("/people/{person_id}/merge", summary="Merge other people into this one")
async def merge_people(
    gallery: GalleryName, person_id: PersonId, body: PeopleIds, svc: Service, key: Writer
) -> dict[str, Any]:
    return (await svc.in_thread(_library(svc, gallery).merge, person_id, body.people)).to_dict()


@router.post("/people/{person_id}/split", status_code=201, summary="Move some of a person's faces to a new person")
async def split_person(
    gallery: GalleryName, person_id: PersonId, body: FaceIds, svc: Service, key: Writer
) -> dict[str, Any]:
    return (await svc.in_thread(_library(svc, gallery).split, person_id, body.faces)).to_dict()


@router.post("/faces/{face_id}/reject", summary="Not this person: the face leaves it for good and is placed again")
async def reject_face(
    gallery: GalleryName, face_id: FaceId, svc: Service, key: Writer, body: Rejection | None = None
) -> dict[str, Any]:
    library = _library(svc, gallery)
    await svc.in_thread(lambda: library.reject(face_id, body.person if body else None))
    return (await svc.in_thread(library.face, face_id)).to_dict()


@router.post("/faces/move", summary="Put faces in a person")
async def move_faces(gallery: GalleryName, body: Move, svc: Service, key: Writer) -> dict[str, Any]:
    return (await svc.in_thread(_library(svc, gallery).move, body.faces, body.person)).to_dict()


@router.post("/faces/ignore", status_code=204, summary="Never group these faces (not a face, a stranger)")
async def ignore_faces(gallery: GalleryName, body: FaceIds, svc: Service, key: Writer) -> Response:
    await svc.in_thread(_library(svc, gallery).ignore, body.faces)
    return Response(status_code=204)
