"""Face galleries: named collections of subjects and their face embeddings, behind one interface
(:class:`GalleryStore`) with SQLite and PostgreSQL + pgvector backends."""

from .base import (
    DEFAULT_GALLERY,
    ApiKey,
    Candidate,
    ConflictError,
    Enrolled,
    Enrolment,
    ExportedFace,
    GalleryError,
    GalleryInfo,
    GalleryStore,
    ModelId,
    ModelMismatchError,
    NewFace,
    NotFoundError,
    StoredFace,
    Subject,
)
from .stores import is_postgres_url, open_store

__all__ = [
    "DEFAULT_GALLERY",
    "ApiKey",
    "Candidate",
    "ConflictError",
    "Enrolled",
    "Enrolment",
    "ExportedFace",
    "GalleryError",
    "GalleryInfo",
    "GalleryStore",
    "ModelId",
    "ModelMismatchError",
    "NewFace",
    "NotFoundError",
    "StoredFace",
    "Subject",
    "is_postgres_url",
    "open_store",
]
