"""Unlabelled faces and people in the SQLite file (:mod:`ghostfacenets.gallery.people`): photos, faces without a
subject, people with their sums of embeddings, "not this person" records and each gallery's grouping settings.

Nearest neighbours are exact: the gallery's unlabelled faces are read into memory and scored by matrix products.
Grouping and corrections run in ``BEGIN IMMEDIATE`` transactions (the file's write lock)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .. import audit, base
from ..base import ConflictError, GalleryError, ModelId, NotFoundError
from ..people import (
    AddedPhotos,
    BatchView,
    ExactNeighbours,
    FaceState,
    PeopleSummary,
    Person,
    PersonFace,
    PersonState,
    PhotoFaces,
    Placement,
    check_photos,
    check_settings,
    decode_total,
    encode_total,
    read_view,
)
from .connection import Connected

_PERSON_COLUMNS = (
    "p.id, s.name, p.subject_id, p.faces, "
    "(SELECT COUNT(*) FROM faces f WHERE f.person_id = p.id AND f.pinned), "
    "(SELECT f.id FROM faces f LEFT JOIN crops c ON c.face_id = f.id WHERE f.person_id = p.id "
    "ORDER BY c.face_id IS NULL, f.quality DESC, f.id LIMIT 1), p.created, p.updated"
)
_PERSON_FACE_COLUMNS = (
    "f.id, f.person_id, ph.reference, ph.key, f.detection, f.quality, f.placed, f.pinned, "
    "EXISTS (SELECT 1 FROM crops c WHERE c.face_id = f.id), f.created"
)


def _ids(ids: Collection[int]) -> str:
    return json.dumps([int(i) for i in ids])


def _person(row: Sequence[Any]) -> Person:
    return Person(*row)


def _person_face(row: Sequence[Any]) -> PersonFace:
    detection = json.loads(row[4]) if row[4] else None
    return PersonFace(row[0], row[1], row[2], row[3], detection, float(row[5]), bool(row[6]), bool(row[7]),
                      bool(row[8]), row[9])  # fmt: skip


class PeopleMixin(Connected):
    """The people part of :class:`~.store.SQLiteStore`."""

    _touch: Callable[..., None]  # SQLiteStore's
    _record: Callable[..., None]
    _gallery_for: Callable[..., tuple[int, int | None]]

    # -------------------------------------------------------------------------------------------- adding
    def add_photos(
        self, gallery: str, photos: Sequence[PhotoFaces], model: ModelId, create_gallery: bool = True
    ) -> AddedPhotos:
        """Add photos and their unlabelled faces (waiting to be placed) in one transaction; photos whose key the
        gallery holds are skipped."""
        base.check_gallery_name(gallery)
        check_photos(photos, model)
        with self._transaction(write=True) as db:
            gallery_id, model_id = self._gallery_for(db, gallery, create_gallery, model)
            known = self._known(db, gallery_id, [p.photo_key for p in photos])
            result = AddedPhotos()
            now = base.utc_now()
            for photo in photos:
                if photo.photo_key in known:
                    result.skipped.append(photo.reference)
                    continue
                photo_id = db.execute(
                    "INSERT INTO photos (gallery_id, key, reference, faces, created) VALUES (?, ?, ?, ?, ?)",
                    (gallery_id, photo.photo_key, photo.reference, len(photo.faces), now),
                ).lastrowid
                ids = []
                for face in photo.faces:
                    cursor = db.execute(
                        "INSERT INTO faces (gallery_id, model_id, embedding, image_sha256, source, detection, created,"
                        " photo_id, quality, placed, pinned) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0)",
                        (gallery_id, model_id, np.asarray(face.embedding, "<f4").tobytes(), photo.photo_key,
                         photo.reference, json.dumps(face.record()), now, photo_id, float(face.quality)),
                    )  # fmt: skip
                    if face.crop is not None:
                        db.execute("INSERT INTO crops (face_id, png) VALUES (?, ?)", (cursor.lastrowid, face.crop))
                    ids.append(int(cursor.lastrowid or 0))
                result.added[photo.reference] = ids
                known.add(photo.photo_key)
            self._touch(db, gallery_id)
            if result.added:
                self._record(db, audit.PEOPLE_ADD, gallery, detail={"photos": len(result.added), "faces": result.faces})
            return result

    def _known(self, db: sqlite3.Connection, gallery_id: int, keys: Sequence[str]) -> set[str]:
        rows = db.execute(
            "SELECT key FROM photos WHERE gallery_id = ? AND key IN (SELECT value FROM json_each(?))",
            (gallery_id, json.dumps(list(keys))),
        )
        return {r[0] for r in rows}

    def people_pending(self, gallery: str) -> int:
        """How many unlabelled faces wait to be placed."""
        with self._transaction(write=False) as db:
            gallery_id, _ = self._gallery_row(db, gallery)
            row = db.execute("SELECT COUNT(*) FROM faces WHERE gallery_id = ? AND placed = 0", (gallery_id,))
            return int(row.fetchone()[0])

    def known_photos(self, gallery: str, keys: Sequence[str]) -> set[str]:
        """The photo keys among ``keys`` that the gallery holds (an unknown gallery holds none)."""
        with self._transaction(write=False) as db:
            try:
                gallery_id, _ = self._gallery_row(db, gallery)
            except NotFoundError:
                return set()
            return self._known(db, gallery_id, keys)

    # -------------------------------------------------------------------------------------------- grouping
    @contextlib.contextmanager
    def people_batch(self, gallery: str) -> Iterator[_Batch]:
        """One grouping batch (:class:`~ghostfacenets.gallery.people.PlacementBatch`) in a write transaction."""
        with self._transaction(write=True) as db:
            gallery_id, model = self._gallery_row(db, gallery)
            yield _Batch(self, db, gallery, gallery_id, model.dim if model else 0)

    @contextlib.contextmanager
    def people_corrections(self, gallery: str) -> Iterator[_Corrections]:
        """One correction (:class:`~ghostfacenets.gallery.people.CorrectionSession`) in a write transaction."""
        with self._transaction(write=True) as db:
            gallery_id, model = self._gallery_row(db, gallery)
            session = _Corrections(self, db, gallery, gallery_id, model.dim if model else 0)
            yield session
            session.finish()

    def people_vectors(self, gallery: str) -> ExactNeighbours:
        """Every unlabelled face of the gallery in memory, for exact neighbours over a whole grouping run."""
        with self._reader() as db:
            gallery_id, model = self._gallery_row(db, gallery)
            return _vectors(db, gallery_id, model.dim if model else 0)

    def reset_people(self, gallery: str) -> None:
        """The start of a full re-run: every face not pinned back in the queue, people without a pinned face or a
        name deleted, the others' sums recomputed."""
        with self._transaction(write=True) as db:
            gallery_id, model = self._gallery_row(db, gallery)
            db.execute(
                "UPDATE faces SET person_id = NULL, subject_id = NULL, placed = 0 "
                "WHERE gallery_id = ? AND photo_id IS NOT NULL AND NOT pinned",
                (gallery_id,),
            )
            db.execute(
                "DELETE FROM people WHERE gallery_id = ? AND subject_id IS NULL "
                "AND NOT EXISTS (SELECT 1 FROM faces f WHERE f.person_id = people.id)",
                (gallery_id,),
            )
            people = [r[0] for r in db.execute("SELECT id FROM people WHERE gallery_id = ?", (gallery_id,))]
            _refresh(db, people, model.dim if model else 0)
            self._touch(db, gallery_id, rewrite=True)
            self._record(db, audit.PEOPLE_RESET, gallery)

    def _refresh_people(self, db: sqlite3.Connection, gallery_id: int, people: Collection[int] | None = None) -> None:
        """Recompute people's sizes and sums (all of the gallery's when ``people`` is None) after their faces were
        deleted or re-embedded."""
        if people is None:
            people = [r[0] for r in db.execute("SELECT id FROM people WHERE gallery_id = ?", (gallery_id,))]
        row = db.execute(
            "SELECT m.dim FROM galleries g JOIN models m ON m.id = g.model_id WHERE g.id = ?", (gallery_id,)
        ).fetchone()
        _refresh(db, people, row[0] if row else 0)

    # -------------------------------------------------------------------------------------------- settings
    def people_settings(self, gallery: str) -> dict[str, Any] | None:
        """The gallery's grouping settings (None until set)."""
        with self._transaction(write=False) as db:
            gallery_id, _ = self._gallery_row(db, gallery)
            row = db.execute("SELECT settings FROM people_settings WHERE gallery_id = ?", (gallery_id,)).fetchone()
            return json.loads(row[0]) if row else None

    def set_people_settings(self, gallery: str, settings: Mapping[str, Any], create_gallery: bool = True) -> None:
        text = check_settings(settings)
        base.check_gallery_name(gallery)
        with self._transaction(write=True) as db:
            gallery_id, _ = self._gallery_for(db, gallery, create_gallery)
            db.execute(
                "INSERT INTO people_settings (gallery_id, settings) VALUES (?, ?) "
                "ON CONFLICT (gallery_id) DO UPDATE SET settings = excluded.settings",
                (gallery_id, text),
            )
            self._record(db, audit.PEOPLE_SETTINGS, gallery, detail=dict(settings))

    # -------------------------------------------------------------------------------------------- reading
    def people(self, gallery: str, offset: int = 0, limit: int = 100) -> list[Person]:
        """People, largest first (then oldest)."""
        if limit < 1 or offset < 0:
            raise GalleryError("limit must be at least 1 and offset not negative")
        with self._transaction(write=False) as db:
            gallery_id, _ = self._gallery_row(db, gallery)
            rows = db.execute(
                f"SELECT {_PERSON_COLUMNS} FROM people p LEFT JOIN subjects s ON s.id = p.subject_id "
                "WHERE p.gallery_id = ? ORDER BY p.faces DESC, p.id LIMIT ? OFFSET ?",
                (gallery_id, limit, offset),
            )
            return [_person(r) for r in rows]

    def person(self, gallery: str, person_id: int) -> Person:
        with self._transaction(write=False) as db:
            gallery_id, _ = self._gallery_row(db, gallery)
            return self._person_row(db, gallery, gallery_id, person_id)

    def _person_row(self, db: sqlite3.Connection, gallery: str, gallery_id: int, person_id: int) -> Person:
        row = db.execute(
            f"SELECT {_PERSON_COLUMNS} FROM people p LEFT JOIN subjects s ON s.id = p.subject_id "
            "WHERE p.id = ? AND p.gallery_id = ?",
            (person_id, gallery_id),
        ).fetchone()
        if row is None:
            raise NotFoundError(f"{self.path}: no person {person_id} in gallery {gallery!r}")
        return _person(row)

    def person_faces(
        self, gallery: str, person_id: int | None, after: int | None = None, limit: int = 100
    ) -> list[PersonFace]:
        """Faces of a person (None: the unsorted faces) by id, those above ``after``."""
        if limit < 1:
            raise GalleryError(f"limit must be at least 1, got {limit}")
        with self._transaction(write=False) as db:
            gallery_id, _ = self._gallery_row(db, gallery)
            if person_id is not None:
                self._person_row(db, gallery, gallery_id, person_id)
                where, params = "f.person_id = ?", (person_id,)
            else:
                where, params = "f.gallery_id = ? AND f.person_id IS NULL AND f.placed", (gallery_id,)
            rows = db.execute(
                f"SELECT {_PERSON_FACE_COLUMNS} FROM faces f JOIN photos ph ON ph.id = f.photo_id "
                f"WHERE {where} AND f.id > ? ORDER BY f.id LIMIT ?",
                (*params, after or 0, limit),
            )
            return [_person_face(r) for r in rows]

    def person_face(self, gallery: str, face_id: int) -> PersonFace:
        with self._transaction(write=False) as db:
            gallery_id, _ = self._gallery_row(db, gallery)
            row = db.execute(
                f"SELECT {_PERSON_FACE_COLUMNS} FROM faces f JOIN photos ph ON ph.id = f.photo_id "
                "WHERE f.id = ? AND f.gallery_id = ?",
                (face_id, gallery_id),
            ).fetchone()
            if row is None:
                raise NotFoundError(f"{self.path}: no unlabelled face {face_id} in gallery {gallery!r}")
            return _person_face(row)

    def crop(self, gallery: str, face_id: int) -> bytes | None:
        """A face's stored aligned crop (PNG), None when it was stored without one."""
        with self._transaction(write=False) as db:
            gallery_id, _ = self._gallery_row(db, gallery)
            row = db.execute(
                "SELECT f.id, c.png FROM faces f LEFT JOIN crops c ON c.face_id = f.id "
                "WHERE f.id = ? AND f.gallery_id = ?",
                (face_id, gallery_id),
            ).fetchone()
            if row is None:
                raise NotFoundError(f"{self.path}: no face {face_id} in gallery {gallery!r}")
            return bytes(row[1]) if row[1] is not None else None

    def people_summary(self, gallery: str, min_quality: float) -> PeopleSummary:
        with self._transaction(write=False) as db:
            gallery_id, _ = self._gallery_row(db, gallery)
            photos = db.execute("SELECT COUNT(*) FROM photos WHERE gallery_id = ?", (gallery_id,)).fetchone()[0]
            faces, pending, unsorted, low = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(NOT placed), 0), COALESCE(SUM(placed AND person_id IS NULL), 0), "
                "COALESCE(SUM(placed AND person_id IS NULL AND quality < ?), 0) "
                "FROM faces WHERE gallery_id = ? AND photo_id IS NOT NULL",
                (min_quality, gallery_id),
            ).fetchone()
            people, named = db.execute(
                "SELECT COUNT(*), COUNT(subject_id) FROM people WHERE gallery_id = ?", (gallery_id,)
            ).fetchone()
            return PeopleSummary(photos, faces, pending, unsorted, low, people, named)


def _vectors(db: sqlite3.Connection, gallery_id: int, dim: int) -> ExactNeighbours:
    rows = db.execute(
        "SELECT id, pinned, embedding FROM faces WHERE gallery_id = ? AND photo_id IS NOT NULL ORDER BY id",
        (gallery_id,),
    ).fetchall()
    ids = np.array([r[0] for r in rows], np.int64)
    pinned = np.array([bool(r[1]) for r in rows], bool)
    blob = b"".join(r[2] for r in rows)
    return ExactNeighbours(ids, np.frombuffer(blob, "<f4").reshape(len(rows), dim), pinned)


def _refresh(db: sqlite3.Connection, people: Collection[int], dim: int) -> None:
    """Set people's sizes and sums from their faces."""
    for person in people:
        rows = db.execute("SELECT embedding FROM faces WHERE person_id = ?", (person,)).fetchall()
        total = np.frombuffer(b"".join(r[0] for r in rows), "<f4").reshape(len(rows), dim).astype(np.float64)
        db.execute(
            "UPDATE people SET faces = ?, total = ?, updated = ? WHERE id = ?",
            (len(rows), encode_total(total.sum(axis=0)), base.utc_now(), person),
        )


class _Batch:
    """:class:`~ghostfacenets.gallery.people.PlacementBatch` over one write transaction."""

    def __init__(self, store: PeopleMixin, db: sqlite3.Connection, gallery: str, gallery_id: int, dim: int) -> None:
        self.store, self.db, self.gallery, self.gallery_id, self.dim = store, db, gallery, gallery_id, dim

    def pending(self, limit: int) -> list[int]:
        rows = self.db.execute(
            "SELECT id FROM faces WHERE gallery_id = ? AND placed = 0 ORDER BY id LIMIT ?", (self.gallery_id, limit)
        )
        return [r[0] for r in rows]

    def faces(self, ids: Collection[int], embeddings: bool = True) -> dict[int, FaceState]:
        rows = self.db.execute(
            f"SELECT id, photo_id, quality, {'embedding' if embeddings else 'NULL'}, person_id, pinned, placed "
            "FROM faces WHERE id IN (SELECT value FROM json_each(?))",
            (_ids(ids),),
        )
        return {
            r[0]: FaceState(r[0], r[1], float(r[2]), np.frombuffer(r[3] or b"", "<f4").copy(), r[4], bool(r[5]),
                            bool(r[6]))
            for r in rows
        }  # fmt: skip

    def view(self, ids: Sequence[int], k: int, min_similarity: float) -> BatchView:
        return read_view(self, ids, k, min_similarity)

    def neighbours(self, ids: Sequence[int], k: int, min_similarity: float) -> dict[int, list[tuple[int, float]]]:
        return _vectors(self.db, self.gallery_id, self.dim).neighbours(ids, k, min_similarity)

    def photo_mates(self, ids: Collection[int]) -> dict[int, list[int]]:
        mates: dict[int, list[int]] = {int(i): [] for i in ids}
        rows = self.db.execute(
            "SELECT f.id, m.id FROM faces f JOIN faces m ON m.photo_id = f.photo_id AND m.id != f.id "
            "WHERE f.id IN (SELECT value FROM json_each(?))",
            (_ids(ids),),
        )
        for face, mate in rows:
            mates[face].append(mate)
        return mates

    def people(self, ids: Collection[int]) -> dict[int, PersonState]:
        rows = self.db.execute(
            "SELECT id, faces, total FROM people WHERE id IN (SELECT value FROM json_each(?))", (_ids(ids),)
        )
        return {r[0]: PersonState(r[0], r[1], decode_total(r[2], self.dim)) for r in rows}

    def rejections(self, ids: Collection[int]) -> dict[int, set[int]]:
        found: dict[int, set[int]] = {}
        rows = self.db.execute(
            "SELECT face_id, person_id FROM people_rejections WHERE face_id IN (SELECT value FROM json_each(?))",
            (_ids(ids),),
        )
        for face, person in rows:
            found.setdefault(face, set()).add(person)
        return found

    def apply(self, placement: Placement) -> dict[int, int]:
        now = base.utc_now()
        given = {}
        for temporary in placement.started:
            cursor = self.db.execute(
                "INSERT INTO people (gallery_id, created, updated) VALUES (?, ?, ?)", (self.gallery_id, now, now)
            )
            given[temporary] = int(cursor.lastrowid or 0)
        for person, state in placement.people.items():
            self.db.execute(
                "UPDATE people SET faces = ?, total = ?, updated = ? WHERE id = ?",
                (state.count, encode_total(state.total), now, given.get(person, person)),
            )
        subjects = dict(
            self.db.execute(
                "SELECT id, subject_id FROM people WHERE id IN (SELECT value FROM json_each(?))",
                (_ids({given.get(p, p) for p in placement.faces.values() if p is not None}),),
            ).fetchall()
        )
        rows = []
        for face, chosen in placement.faces.items():
            target = given.get(chosen, chosen) if chosen is not None else None
            rows.append((target, subjects.get(target) if target is not None else None, face))
        self.db.executemany("UPDATE faces SET person_id = ?, subject_id = ?, placed = 1 WHERE id = ?", rows)
        named = any(row[1] is not None for row in rows)
        self.store._touch(self.db, self.gallery_id, rewrite=named)  # faces that joined a subject: searches reload
        grouped = sum(person is not None for person, _, _ in rows)
        detail = {"faces": len(rows), "grouped": grouped, "people_started": len(given)}
        self.store._record(self.db, audit.PEOPLE_PLACE, self.gallery, detail=detail)
        return given


class _Corrections:
    """:class:`~ghostfacenets.gallery.people.CorrectionSession` over one write transaction."""

    def __init__(self, store: PeopleMixin, db: sqlite3.Connection, gallery: str, gallery_id: int, dim: int) -> None:
        self.store, self.db, self.gallery, self.gallery_id, self.dim = store, db, gallery, gallery_id, dim
        self.touched: set[int] = set()

    def _where(self) -> str:
        return f"{self.store.path}: gallery {self.gallery!r}"

    def members(self, person: int) -> list[int]:
        if not self.db.execute(
            "SELECT 1 FROM people WHERE id = ? AND gallery_id = ?", (person, self.gallery_id)
        ).fetchone():
            raise NotFoundError(f"{self._where()} has no person {person}")
        return [r[0] for r in self.db.execute("SELECT id FROM faces WHERE person_id = ? ORDER BY id", (person,))]

    def people_of(self, faces: Collection[int]) -> dict[int, int | None]:
        found = dict(
            self.db.execute(
                "SELECT id, person_id FROM faces WHERE gallery_id = ? AND photo_id IS NOT NULL "
                "AND id IN (SELECT value FROM json_each(?))",
                (self.gallery_id, _ids(faces)),
            ).fetchall()
        )
        missing = set(faces) - found.keys()
        if missing:
            raise NotFoundError(f"{self._where()} has no unlabelled face {min(missing)}")
        return {int(f): found[f] for f in faces}

    def _subject_of(self, person: int | None) -> int | None:
        if person is None:
            return None
        row = self.db.execute("SELECT subject_id FROM people WHERE id = ?", (person,)).fetchone()
        return row[0] if row else None

    def assign(self, faces: Collection[int], person: int | None) -> None:
        self.touched |= {p for p in self.people_of(faces).values() if p is not None}
        if person is not None:
            self.touched.add(person)
        self.db.execute(
            "UPDATE faces SET person_id = ?, subject_id = ?, pinned = 1, placed = 1 "
            "WHERE id IN (SELECT value FROM json_each(?))",
            (person, self._subject_of(person), _ids(faces)),
        )

    def pin(self, faces: Collection[int]) -> None:
        self.db.execute(
            "UPDATE faces SET pinned = 1, placed = 1 WHERE id IN (SELECT value FROM json_each(?))", (_ids(faces),)
        )

    def requeue(self, faces: Collection[int]) -> None:
        self.touched |= {p for p in self.people_of(faces).values() if p is not None}
        self.db.execute(
            "UPDATE faces SET person_id = NULL, subject_id = NULL, pinned = 0, placed = 0 "
            "WHERE id IN (SELECT value FROM json_each(?))",
            (_ids(faces),),
        )

    def start_person(self) -> int:
        now = base.utc_now()
        cursor = self.db.execute(
            "INSERT INTO people (gallery_id, created, updated) VALUES (?, ?, ?)", (self.gallery_id, now, now)
        )
        self.touched.add(int(cursor.lastrowid or 0))
        return int(cursor.lastrowid or 0)

    def remove_person(self, person: int) -> None:
        self.db.execute("DELETE FROM people WHERE id = ?", (person,))
        self.touched.discard(person)

    def reject(self, face: int, person: int) -> None:
        self.members(person)
        self.db.execute(
            "INSERT OR IGNORE INTO people_rejections (face_id, person_id, created) VALUES (?, ?, ?)",
            (face, person, base.utc_now()),
        )

    def move_rejections(self, source: int, target: int) -> None:
        self.db.execute("UPDATE OR IGNORE people_rejections SET person_id = ? WHERE person_id = ?", (target, source))
        self.db.execute("DELETE FROM people_rejections WHERE person_id = ?", (source,))

    def name_of(self, person: int) -> str | None:
        row = self.db.execute(
            "SELECT s.name FROM people p JOIN subjects s ON s.id = p.subject_id WHERE p.id = ?", (person,)
        ).fetchone()
        return row[0] if row else None

    def person_named(self, name: str) -> int | None:
        row = self.db.execute(
            "SELECT p.id FROM people p JOIN subjects s ON s.id = p.subject_id WHERE p.gallery_id = ? AND s.name = ?",
            (self.gallery_id, base.check_subject_name(name)),
        ).fetchone()
        return row[0] if row else None

    def set_name(self, person: int, name: str) -> None:
        name = base.check_subject_name(name)
        self.members(person)
        subject = self._subject_of(person)
        existing = self.db.execute(
            "SELECT s.id, p.id FROM subjects s LEFT JOIN people p ON p.subject_id = s.id "
            "WHERE s.gallery_id = ? AND s.name = ?",
            (self.gallery_id, name),
        ).fetchone()
        now = base.utc_now()
        if existing is not None and existing[0] != subject:
            if existing[1] is not None or subject is not None:
                raise ConflictError(f"{self._where()} has a subject named {name!r} already")
            subject = existing[0]  # an enrolled subject without a person: the person becomes it
        elif subject is not None:
            self.db.execute("UPDATE subjects SET name = ?, updated = ? WHERE id = ?", (name, now, subject))
        else:
            cursor = self.db.execute(
                "INSERT INTO subjects (gallery_id, name, metadata, created, updated) VALUES (?, ?, '{}', ?, ?)",
                (self.gallery_id, name, now, now),
            )
            subject = int(cursor.lastrowid or 0)
        self.db.execute("UPDATE people SET subject_id = ?, updated = ? WHERE id = ?", (subject, now, person))
        self.db.execute("UPDATE faces SET subject_id = ? WHERE person_id = ?", (subject, person))
        self.touched.add(person)

    def absorb_name(self, target: int, source: int) -> None:
        theirs, ours = self._subject_of(source), self._subject_of(target)
        if theirs is None:
            return
        self.db.execute("UPDATE people SET subject_id = NULL WHERE id = ?", (source,))
        if ours is None:
            self.db.execute("UPDATE people SET subject_id = ? WHERE id = ?", (theirs, target))
            self.db.execute("UPDATE faces SET subject_id = ? WHERE person_id = ?", (theirs, target))
        else:
            self.db.execute("UPDATE faces SET subject_id = ? WHERE subject_id = ?", (ours, theirs))
            self.db.execute("DELETE FROM subjects WHERE id = ?", (theirs,))
        self.touched |= {source, target}

    def record(self, action: str, person: int | None, detail: Mapping[str, Any]) -> None:
        subject = self._subject_of(person) if person is not None else None
        self.store._record(self.db, action, self.gallery, subject, {"person": person, **detail})

    def finish(self) -> None:
        """Bring the touched people's sizes and sums up to date; drop unnamed people left empty."""
        _refresh(self.db, self.touched, self.dim)
        self.db.execute(
            "DELETE FROM people WHERE gallery_id = ? AND subject_id IS NULL AND faces = 0 "
            "AND id IN (SELECT value FROM json_each(?))",
            (self.gallery_id, _ids(self.touched)),
        )
        self.store._touch(self.db, self.gallery_id, rewrite=True)
