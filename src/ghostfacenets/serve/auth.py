"""API keys as FastAPI dependencies: ``Authorization: Bearer KEY`` on every ``/v1`` route.

Two roles: ``identify`` keys read (detect, embed, verify, identify, list galleries, subjects and faces); ``admin``
keys also write (create and delete galleries, subjects and faces). A key made for one gallery reaches only that
gallery (403 for any other); a key without a gallery reaches all. Only a hash of each key is stored (the store's
``authenticate``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

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
    return key


def check_gallery(key: ApiKey, gallery: str) -> None:
    """403 unless ``key`` may reach ``gallery``."""
    if key.gallery is not None and key.gallery != gallery:
        raise ApiError("FORBIDDEN", f"this API key is for gallery {key.gallery!r}, not {gallery!r}")


def check_admin(key: ApiKey) -> None:
    """403 unless ``key`` may write."""
    if key.role != "admin":
        raise ApiError("FORBIDDEN", f"this API key's role ({key.role}) may not write; an admin key may")


async def gallery_reader(gallery: str, key: Annotated[ApiKey, Depends(api_key)]) -> ApiKey:
    """Any key of the gallery in the path."""
    check_gallery(key, gallery)
    return key


async def gallery_writer(gallery: str, key: Annotated[ApiKey, Depends(api_key)]) -> ApiKey:
    """An admin key of the gallery in the path."""
    check_gallery(key, gallery)
    check_admin(key)
    return key


Key = Annotated[ApiKey, Depends(api_key)]
Reader = Annotated[ApiKey, Depends(gallery_reader)]
Writer = Annotated[ApiKey, Depends(gallery_writer)]
Service = Annotated[FaceService, Depends(service)]
