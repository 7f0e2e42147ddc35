"""The audit trail: who changed a gallery, how and when.

Every change a store makes (a gallery created or deleted, a subject added, renamed or deleted, faces enrolled,
imported or deleted, a re-embedding, an API key created or revoked; photos added without names, faces grouped into
people and each correction of the people) records one :class:`AuditEvent` in the same
transaction as the change: no change without its record. An event holds the actor (an API key's id, or the user of
the command line or of the Python API), the route or command it came through, the time, the gallery's name and ids
and counts; never images, embeddings, subject names or metadata, so that an erased person leaves nothing behind in
the trail either. Events are kept when what they describe is deleted.

The actor is taken from the context (:func:`acting_as`): the service sets it for each request after checking the
key, the command line for each command; elsewhere it is the operating-system user of the Python API.
"""

from __future__ import annotations

import contextlib
import contextvars
import getpass
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from .base import ApiKey, GalleryError, check_gallery_name

# What happened: the names an event's ``action`` takes.
GALLERY_CREATE = "gallery.create"
GALLERY_DELETE = "gallery.delete"
SUBJECT_CREATE = "subject.create"
SUBJECT_UPDATE = "subject.update"
SUBJECT_DELETE = "subject.delete"
FACES_ADD = "faces.add"
FACE_DELETE = "face.delete"
GALLERY_REEMBED = "gallery.reembed"
KEY_CREATE = "key.create"
KEY_REVOKE = "key.revoke"
PEOPLE_ADD = "people.add"  # photos added without names (gallery.people)
PEOPLE_PLACE = "people.place"  # faces grouped automatically
PEOPLE_RESET = "people.reset"  # the start of a full re-run
PEOPLE_SETTINGS = "people.settings"
PERSON_NAME = "person.name"
PEOPLE_MERGE = "people.merge"
PERSON_SPLIT = "person.split"
FACE_REJECT = "face.reject"
FACES_MOVE = "faces.move"
FACES_IGNORE = "faces.ignore"


@dataclass(frozen=True)
class Actor:
    """Who makes the changes: ``key_id`` (an API key) or None (the command line, the Python API), a description
    (``key 7``, ``cli alice``), and ``via``: the route (``DELETE /v1/galleries/staff/subjects/12``) or command."""

    key_id: int | None
    name: str
    via: str


@dataclass(frozen=True)
class AuditEvent:
    """One recorded change (see the module)."""

    id: int
    time: str  # ISO 8601, UTC
    actor: str
    key_id: int | None
    via: str
    action: str
    gallery: str | None
    subject_id: int | None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": self.time,
            "actor": self.actor,
            "key_id": self.key_id,
            "via": self.via,
            "action": self.action,
            "gallery": self.gallery,
            "subject_id": self.subject_id,
            "detail": self.detail,
        }


_ACTOR: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("ghostfacenets_actor", default=None)
_process_actor: Actor | None = None  # the actor of every thread of this process that sets none (a command)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        return "unknown user"


@contextlib.contextmanager
def acting_as(actor: Actor) -> Iterator[Actor]:
    """Changes made inside the block (in this thread or task, and the threads it starts with the context) are
    recorded as ``actor``'s."""
    token = _ACTOR.set(actor)
    try:
        yield actor
    finally:
        _ACTOR.reset(token)


def set_actor(actor: Actor) -> None:
    """Make ``actor`` the actor of the current context (a request's task) until the context ends."""
    _ACTOR.set(actor)


@contextlib.contextmanager
def process_acting_as(actor: Actor) -> Iterator[Actor]:
    """Inside the block, ``actor`` is the actor of every thread of this process that has none of its own (a
    command's)."""
    global _process_actor
    before, _process_actor = _process_actor, actor
    try:
        yield actor
    finally:
        _process_actor = before


def current_actor() -> Actor:
    """The actor of the current context, else the process's; by default the operating-system user of the Python
    API."""
    return _ACTOR.get() or _process_actor or Actor(None, f"python {_os_user()}", "python API")


def cli_actor(command: str) -> Actor:
    """The actor of a ``ghostfacenets`` command (its name and action, never its arguments: they may name people)."""
    return Actor(None, f"cli {_os_user()}", f"ghostfacenets {command}")


def detail_json(detail: Mapping[str, Any] | None) -> str:
    return json.dumps(dict(detail or {}), separators=(",", ":"), sort_keys=True)


def parse_since(text: str, now: datetime | None = None) -> str:
    """``--since``: an ISO 8601 date or time (UTC unless it says), or an age such as ``30m``, ``12h``, ``7d``;
    returned as an ISO 8601 UTC time."""
    now = now or datetime.now(timezone.utc)
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    value = text.strip()
    if value[:-1].isdigit() and value[-1:] in units:
        return (now - timedelta(**{units[value[-1]]: int(value[:-1])})).isoformat(timespec="seconds")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise GalleryError(
            f"since {text!r} is neither an ISO 8601 date or time (2026-01-31, 2026-01-31T08:00) nor an age (12h, 7d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------- what the stores share
COLUMNS = "id, at, actor, key_id, via, action, gallery, subject_id, detail"


def event(row: Sequence[Any], time: str) -> AuditEvent:
    """An event from a row of :data:`COLUMNS` (``time`` as ISO 8601)."""
    detail = row[8] if isinstance(row[8], dict) else json.loads(row[8])
    return AuditEvent(int(row[0]), time, row[2], row[3], row[4], row[5], row[6], row[7], detail)


def event_filter(gallery: str | None, since: str | None, placeholder: str) -> tuple[str, tuple[Any, ...]]:
    """The WHERE clause (and its parameters) of events of ``gallery`` from ``since`` (ISO 8601)."""
    clauses, params = [], []
    if gallery is not None:
        clauses.append(f"gallery = {placeholder}")
        params.append(check_gallery_name(gallery))
    if since is not None:
        clauses.append(f"at >= {placeholder}")
        params.append(parse_since(since))
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


def key_detail(key: ApiKey) -> dict[str, Any]:
    return {"key": key.id, "role": key.role, "permissions": list(key.permissions), "label": key.label}


def enrolment_detail(
    results: Sequence[tuple[int, int, int]], new_subjects: int
) -> tuple[int | None, dict[str, Any]] | None:
    """(subject id when there is one subject, detail) of an enrolment of (subject id, faces added, faces skipped)
    per subject; None when it changed nothing."""
    added = sum(r[1] for r in results)
    if not added and not new_subjects:
        return None
    detail = {
        "subjects": len(results),
        "new_subjects": new_subjects,
        "faces": added,
        "skipped": sum(r[2] for r in results),
    }
    return (results[0][0] if len(results) == 1 else None), detail
