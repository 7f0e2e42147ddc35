"""API keys as FastAPI dependencies: ``Authorization: Bearer KEY`` on every ``/v1`` route.

Two roles: ``identify`` keys detect, embed, verify, see galleries' sizes, and identify, learning whom a face matched
(above the threshold) and nothing more; ``admin`` keys may do everything, writes included (create and delete
galleries, subjects and faces). Permissions widen an identify key (``keys create --can``): ``see-candidates`` (the
closest subjects below the threshold, with their similarities, and a threshold lower than the service's),
``list-subjects`` (a gallery's subjects, their metadata and their faces' records). A key made for one gallery
reaches only that gallery, by id (403 for any other; a key whose gallery is gone reaches nothing); a key without a
gallery reaches all. Only a hash of each key is stored (the store's ``authenticate``). Each authenticated request
is the actor of the changes it makes (the audit trail: the key and the route).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..gallery.audit import Actor, set_actor
from ..gallery.base import ApiKey
from .problems import ApiError
from .service import FaceService

_bearer = HTTPBearer(auto_error=False, description="An API key from `ghostfacenets keys create`.")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="ghostfacenets"'}


def service(request: Request) -> FaceService:
    """The worker's :class:`FaceService` (set up by the app's lifespan)."""
    return request.app.state.service


async def api_key(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> ApiKey:
    """The live key the request carries, else 401 ``UNAUTHORIZED``."""
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise ApiError("UNAUTHORIZED", "send an API key: Authorization: Bearer KEY", headers=_CHALLENGE)
    svc = service(request)
    key = await svc.in_thread(svc.store.authenticate, credentials.credentials)
    if key is None:
        raise ApiError("UNAUTHORIZED", "unknown or revoked API key", headers=_CHALLENGE)
    set_actor(Actor(key.id, f"key {key.id}", f"{request.method} {request.url.path}"))
    return key


def check_gallery(key: ApiKey, gallery: str) -> None:
    """403 unless ``key`` may reach ``gallery``."""
    if not key.reaches(gallery):
        raise ApiError("FORBIDDEN", f"this API key is for gallery {key.gallery!r}, not {gallery!r}")


def check_permission(key: ApiKey, permission: str) -> None:
    """403 unless ``key`` has ``permission`` (admin keys have every one)."""
    if not key.can(permission):
        raise ApiError(
            "FORBIDDEN",
            f"this API key lacks the {permission} permission (keys create --role identify --can {permission})",
        )


def check_admin(key: ApiKey) -> None:
    """403 unless ``key`` may write."""
    if key.role != "admin":
        raise ApiError("FORBIDDEN", f"this API key's role ({key.role}) may not write; an admin key may")


async def gallery_reader(gallery: str, key: Annotated[ApiKey, Depends(api_key)]) -> ApiKey:
    """Any key of the gallery in the path."""
    check_gallery(key, gallery)
    return key


async def subject_reader(gallery: str, key: Annotated[ApiKey, Depends(api_key)]) -> ApiKey:
    """A key of the gallery in the path that may list its subjects."""
    check_gallery(key, gallery)
    check_permission(key, "list-subjects")
    return key


async def gallery_writer(gallery: str, key: Annotated[ApiKey, Depends(api_key)]) -> ApiKey:
    """An admin key of the gallery in the path."""
    check_gallery(key, gallery)
    check_admin(key)
    return key


Key = Annotated[ApiKey, Depends(api_key)]
Reader = Annotated[ApiKey, Depends(gallery_reader)]
SubjectReader = Annotated[ApiKey, Depends(subject_reader)]
Writer = Annotated[ApiKey, Depends(gallery_writer)]
Service = Annotated[FaceService, Depends(service)]
