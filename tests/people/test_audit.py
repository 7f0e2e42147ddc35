"""People in the audit trail (SQLite and PostgreSQL): every change to the people of a gallery (photos added, faces
grouped, a full re-run, a person named, merged or split, "not this person", faces moved or ignored, a face or a named
person deleted) records one event in its transaction, with ids and counts, never a name or face data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ghostfacenets.gallery import GalleryError, GalleryStore
from ghostfacenets.gallery.audit import Actor, AuditEvent, acting_as
from ghostfacenets.gallery.people import PhotoFaces, UnlabelledFace
from ghostfacenets.people import PeopleLibrary
from tests.helpers.galleries import MODEL
from tests.helpers.people import SETTINGS, identities

NAME = "Zelda Quux-Marker"  # what no event may hold


def _new(store: GalleryStore, seen: list[AuditEvent]) -> list[AuditEvent]:
    """The events recorded since ``seen`` was read (``seen`` is brought up to date)."""
    events = store.audit()
    assert events[: len(seen)] == seen  # nothing rewritten
    new = events[len(seen) :]
    seen[:] = events
    return new


def test_every_people_change_is_recorded_without_names(store: GalleryStore) -> None:
    rng = np.random.default_rng(21)
    embeddings, _ = identities(rng, 3, 36, dim=MODEL.dim, spread=0.45)
    photos = [PhotoFaces(f"{i}.jpg", [UnlabelledFace(v, 1.0, box=[1, 2, 30, 40])]) for i, v in enumerate(embeddings)]
    library = PeopleLibrary(store, "family", model=MODEL, settings=SETTINGS)
    seen: list[AuditEvent] = []
    with acting_as(Actor(7, "key 7", "POST /v1/galleries/family/photos")):
        library.add(photos)
    added = _new(store, seen)
    assert [e.action for e in added[:3]] == ["gallery.create", "people.add", "people.settings"]
    assert {e.action for e in added[3:]} == {"people.place"} and {(e.key_id, e.actor) for e in added} == {(7, "key 7")}
    assert added[1].detail == {"photos": 36, "faces": 36}
    assert sum(e.detail["faces"] for e in added[3:]) == 36

    a, b, c = library.people()[:3]
    library.name(a.id, NAME)
    subject = store.find_subject("family", NAME)
    assert subject is not None
    (named,) = _new(store, seen)
    assert (named.action, named.subject_id, named.detail) == (
        "person.name",
        subject.id,
        {"person": a.id, "faces": a.faces},
    )
    with pytest.raises(GalleryError, match="already"):
        library.name(b.id, NAME)
    assert _new(store, seen) == []  # a refused correction records nothing

    library.merge(b.id, [c.id])
    (merged,) = _new(store, seen)
    assert (merged.action, merged.subject_id) == ("people.merge", None)
    assert merged.detail == {"person": b.id, "merged": [c.id], "faces": b.faces + c.faces}

    part = [f.id for f in library.faces(b.id)][:2]
    new = library.split(b.id, part)
    (split,) = _new(store, seen)
    assert (split.action, split.detail) == ("person.split", {"person": b.id, "new_person": new.id, "faces": 2})

    rejected = library.faces(a.id)[0].id
    library.reject(rejected)
    rejection, *placed = _new(store, seen)
    assert (rejection.action, rejection.subject_id) == ("face.reject", subject.id)
    assert rejection.detail == {"person": a.id, "face": rejected}
    assert [e.action for e in placed] == ["people.place"] and placed[0].detail["faces"] == 1

    moved = library.faces(b.id)[0].id
    library.move([moved], a.id)
    library.ignore(part)
    move, ignore = _new(store, seen)
    assert (move.action, move.subject_id, move.detail) == ("faces.move", subject.id, {"person": a.id, "faces": [moved]})
    assert (ignore.action, ignore.subject_id, ignore.detail) == ("faces.ignore", None, {"person": None, "faces": part})

    library.cluster(full=True)
    reset, *placed = _new(store, seen)
    assert reset.action == "people.reset" and {e.action for e in placed} == {"people.place"}

    store.delete_face("family", moved)
    store.delete_subject("family", subject.id)  # erasing the named person
    deleted = _new(store, seen)
    assert [(e.action, e.subject_id) for e in deleted] == [("face.delete", subject.id), ("subject.delete", subject.id)]

    trail = json.dumps([e.to_dict() for e in seen])
    assert NAME not in trail and "Zelda" not in trail and ".jpg" not in trail  # no names, no photo references
