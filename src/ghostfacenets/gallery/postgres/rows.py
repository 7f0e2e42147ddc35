"""Rows of the PostgreSQL store as the gallery interface's records: the columns read and their conversions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..base import ApiKey, ModelId, StoredFace, Subject, permissions_of

SUBJECT_COLUMNS = (
    "s.id, g.name, s.name, s.metadata, (SELECT count(*) FROM faces f WHERE f.subject_id = s.id), s.created, s.updated"
)
FACE_COLUMNS = (
    "f.id, f.subject_id, f.image_sha256, f.source, f.detection, m.name, m.sha256, "
    "EXISTS (SELECT 1 FROM crops c WHERE c.face_id = f.id), f.created"
)
KEY_COLUMNS = "k.id, k.role, g.name, k.label, k.created, k.last_used, k.revoked, k.gallery_id, k.permissions"
KEYS = f"SELECT {KEY_COLUMNS} FROM api_keys k LEFT JOIN galleries g ON g.id = k.gallery_id"


def to_iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


def to_subject(row: Sequence[Any]) -> Subject:
    return Subject(row[0], row[1], row[2], row[3], row[4], to_iso(row[5]) or "", to_iso(row[6]) or "")


def to_face(row: Sequence[Any]) -> StoredFace:
    return StoredFace(row[0], row[1], row[2], row[3], row[4], row[5], row[6], bool(row[7]), to_iso(row[8]) or "")


def to_key(row: Sequence[Any]) -> ApiKey:
    return ApiKey(row[0], row[1], row[2], row[3], to_iso(row[4]) or "", to_iso(row[5]), row[6] is not None, row[7],
                  permissions_of(row[8]))  # fmt: skip


def to_model(row: Sequence[Any]) -> ModelId | None:
    return ModelId(row[0], row[1], row[2], bool(row[3])) if row[0] is not None else None
