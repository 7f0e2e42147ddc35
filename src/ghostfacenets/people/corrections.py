"""The user's corrections, and how they become constraints that every later grouping run keeps.

A correction pins faces: a pinned face is never moved by grouping, and the full re-run starts from the pinned faces
(the people they form are kept) instead of from nothing. What each correction pins and records:

* **name** a person: every face it holds now is pinned (the user saw them under that name); the person becomes a
  subject of the gallery, which ``identify`` finds, and it goes on absorbing faces that match it confidently.
* **merge** people into one: every face of them is pinned to it; "not this person"s of the merged people carry over.
* **split** faces off a person: they become a new person, pinned, and the faces left are pinned where they are.
* **reject** a face ("not this person"): it is recorded that the face is not that person; the face goes back to the
  queue and is placed again (never into that person); the faces left are pinned, so the person stays as reviewed.
* **move** faces to a person: pinned there, and recorded as not their former person.
* **ignore** faces (not a face, or not to be grouped): pinned unsorted.

Each correction is one transaction of the store (:class:`CorrectionSession`), with the gallery's grouping lock held.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from ..gallery import audit
from ..gallery.base import ConflictError, GalleryError
from ..gallery.people import CorrectionSession


class CorrectionError(GalleryError):
    """A correction that cannot be made as asked (a split of every face, a merge of one person)."""


def name_person(session: CorrectionSession, person: int, name: str) -> None:
    """Name ``person`` (or rename it); its faces are pinned."""
    members = session.members(person)  # an unknown person fails first
    owner = session.person_named(name)
    if owner is not None and owner != person:
        raise ConflictError(f"person {owner} is called {name!r} already: merge the two people instead")
    session.pin(members)
    session.set_name(person, name)
    session.record(audit.PERSON_NAME, person, {"faces": len(members)})


def merge_people(session: CorrectionSession, target: int, sources: Sequence[int]) -> None:
    """Merge ``sources`` into ``target``: the target keeps its name, or takes the first named source's; the other
    names' subjects (with any enrolled faces) are merged into it."""
    sources = [s for s in dict.fromkeys(sources) if s != target]
    if not sources:
        raise CorrectionError("merging needs at least one person besides the target")
    faces = session.members(target)
    for source in sources:
        faces += session.members(source)
    for source in sources:
        if session.name_of(source) is not None:
            session.absorb_name(target, source)
    session.assign(faces, target)
    for source in sources:
        session.move_rejections(source, target)
        session.remove_person(source)
    session.record(audit.PEOPLE_MERGE, target, {"merged": sources, "faces": len(faces)})


def split_person(session: CorrectionSession, person: int, faces: Collection[int]) -> int:
    """Move ``faces`` of ``person`` to a new person; both are pinned as they are. Returns the new person."""
    members = set(session.members(person))
    chosen = set(faces)
    if not chosen:
        raise CorrectionError("splitting needs at least one face")
    strangers = chosen - members
    if strangers:
        raise CorrectionError(f"face {min(strangers)} is not one of person {person}'s")
    if chosen == members:
        raise CorrectionError("a split keeps at least one face in the person; to rename it, name it")
    new = session.start_person()
    session.assign(chosen, new)
    session.pin(members - chosen)
    session.record(audit.PERSON_SPLIT, person, {"new_person": new, "faces": len(chosen)})
    return new


def reject_face(session: CorrectionSession, face: int, person: int | None = None) -> int:
    """ "Not this person": ``face`` leaves ``person`` (default: the person it is in) for good, and is placed
    again; the faces left are pinned. Returns the person."""
    current = session.people_of([face])[face]
    if person is None:
        if current is None:
            raise CorrectionError(f"face {face} is not in any person")
        person = current
    session.reject(face, person)
    if current == person:
        session.requeue([face])
        session.pin(session.members(person))
    session.record(audit.FACE_REJECT, person, {"face": face})
    return person


def move_faces(session: CorrectionSession, faces: Collection[int], person: int) -> None:
    """Pin ``faces`` to ``person``; each is recorded as not the person it leaves."""
    session.members(person)  # an unknown person fails before anything changes
    for face, current in session.people_of(faces).items():
        if current is not None and current != person:
            session.reject(face, current)
    session.assign(faces, person)
    session.record(audit.FACES_MOVE, person, {"faces": sorted(faces)})


def ignore_faces(session: CorrectionSession, faces: Collection[int]) -> None:
    """Pin ``faces`` unsorted: never grouped (not a face, a poster, a stranger)."""
    session.people_of(faces)
    session.assign(faces, None)
    session.record(audit.FACES_IGNORE, None, {"faces": sorted(faces)})
