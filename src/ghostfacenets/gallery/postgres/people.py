"""Unlabelled faces and people in PostgreSQL (:mod:`ghostfacenets.gallery.people`): photos, faces without a
subject, people with their sums of embeddings, "not this person" records and each gallery's grouping settings. A face's
grouping state (person, quality, placed, pinned) is a row of ``people_faces``: placing faces never rewrites ``faces``
rows, whose new versions would all enter the HNSW index again (only a face joining a named person gets its subject).

A face's nearest neighbours come from the HNSW index (pgvector's iterative scan, so that the gallery and visibility
filters never starve it) when the gallery holds more than ``exact_limit`` unlabelled faces, in the one statement
that reads all a grouping batch decides on; below, from an exact search. Grouping and corrections hold the gallery's
row lock, as every write does."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .. import audit, base
from ..base import GalleryError, ModelId, NotFoundError
from ..people import (
    AddedPhotos,
    ExactNeighbours,
    PeopleSummary,
    Person,
    PersonFace,
    PhotoFaces,
    check_photos,
    check_settings,
)
from .connection import Connected
from .people_sessions import Batch, Corrections, read_vectors, refresh_people
from .rows import to_iso

_PERSON_COLUMNS = (
    "p.id, s.name, p.subject_id, p.faces, "
    "(SELECT count(*) FROM people_faces pf WHERE pf.person_id = p.id AND pf.pinned), "
    "(SELECT pf.face_id FROM people_faces pf LEFT JOIN crops c ON c.face_id = pf.face_id WHERE pf.person_id = p.id "
    "ORDER BY c.face_id IS NULL, pf.quality DESC, pf.face_id LIMIT 1), p.created, p.updated"
)
_PERSON_FACE_COLUMNS = (
    "f.id, pf.person_id, ph.reference, ph.key, f.detection, pf.quality, pf.placed, pf.pinned, "
    "EXISTS (SELECT 1 FROM crops c WHERE c.face_id = f.id), f.created"
)
_PERSON_FACES = "people_faces pf JOIN faces f ON f.id = pf.face_id JOIN photos ph ON ph.id = f.photo_id"


def _person(row: Sequence[Any]) -> Person:
    return Person(row[0], row[1], row[2], row[3], row[4], row[5], to_iso(row[6]) or "", to_iso(row[7]) or "")


def _person_face(row: Sequence[Any]) -> PersonFace:
    return PersonFace(row[0], row[1], row[2], row[3], row[4], float(row[5]), bool(row[6]), bool(row[7]),
                      bool(row[8]), to_iso(row[9]) or "")  # fmt: skip


class PeopleMixin(Connected):
    """The people part of :class:`~.store.PostgresStore`."""

    _bind: Callable[[Any, int, ModelId], int]  # PostgresStore's
    _model_id: Callable[[Any, ModelId], int]
    _index_row: Callable[[Any, str], tuple[int | None, bool]]
    _index_name: Callable[[int], str]
    _use_index: Callable[[Any], None]
    _vector_value: Callable[[], Callable[[np.ndarray], Any]]
    _record: Callable[..., None]

    # -------------------------------------------------------------------------------------------- adding
    def add_photos(
        self, gallery: str, photos: Sequence[PhotoFaces], model: ModelId, create_gallery: bool = True
    ) -> AddedPhotos:
        """Add photos and their unlabelled faces (waiting to be placed) in one transaction; photos whose key the
        gallery holds are skipped. Faces and crops go in by binary COPY."""
        base.check_gallery_name(gallery)
        check_photos(photos, model)
        with self._transaction() as db:
            try:
                gallery_id, stored, _ = self._gallery_row(db, gallery, lock=True)
            except NotFoundError:
                if not create_gallery:
                    raise
                made = db.execute(
                    "INSERT INTO galleries (name) VALUES (%s) ON CONFLICT (name) DO NOTHING RETURNING id", (gallery,)
                ).fetchone()
                if made is not None:
                    self._record(db, audit.GALLERY_CREATE, gallery)
                gallery_id, stored, _ = self._gallery_row(db, gallery, lock=True)
            base.check_model(gallery, stored, model)
            model_id = self._bind(db, gallery_id, model) if stored is None else self._known_model_id(db, model)
            by_key = dict(  # the photos the gallery holds already are skipped
                db.execute(
                    "INSERT INTO photos (gallery_id, key, reference, faces) "
                    "SELECT %s, k, r, f FROM unnest(%s::text[], %s::text[], %s::int[]) AS n(k, r, f) "
                    "ON CONFLICT (gallery_id, key) DO NOTHING RETURNING key, id",
                    (
                        gallery_id,
                        [p.photo_key for p in photos],
                        [p.reference for p in photos],
                        [len(p.faces) for p in photos],
                    ),
                ).fetchall()
            )
            new = [p for p in photos if p.photo_key in by_key]
            result = AddedPhotos(skipped=[p.reference for p in photos if p.photo_key not in by_key])
            if not new:
                return result
            photo_ids = [int(by_key[p.photo_key]) for p in new]
            faces = [(photo_id, photo, face) for photo_id, photo in zip(photo_ids, new) for face in photo.faces]
            ids = [
                int(r[0])
                for r in db.execute(
                    "SELECT nextval(pg_get_serial_sequence('faces', 'id')) FROM generate_series(1, %s)", (len(faces),)
                )
            ]
            wrap = self._vector_value()
            with db.cursor() as cursor:
                if faces:
                    with cursor.copy(
                        "COPY faces (id, gallery_id, model_id, dim, embedding, image_sha256, source, detection, "
                        "photo_id) FROM STDIN (FORMAT BINARY)"
                    ) as copy:
                        copy.set_types(["int8", "int8", "int4", "int4", self.vector_type, "text", "text", "jsonb",
                                        "int8"])  # fmt: skip
                        for face_id, (photo_id, photo, face) in zip(ids, faces):
                            copy.write_row(
                                (face_id, gallery_id, model_id, model.dim, wrap(np.asarray(face.embedding, np.float32)),
                                 photo.photo_key, photo.reference, self._jsonb(face.record()), photo_id)
                            )  # fmt: skip
                    with cursor.copy(
                        "COPY people_faces (face_id, gallery_id, quality) FROM STDIN (FORMAT BINARY)"
                    ) as copy:
                        copy.set_types(["int8", "int8", "float4"])
                        for face_id, (_, _, face) in zip(ids, faces):
                            copy.write_row((face_id, gallery_id, float(face.quality)))
                crops = [(face_id, f.crop) for face_id, (_, _, f) in zip(ids, faces) if f.crop is not None]
                if crops:
                    with cursor.copy("COPY crops (face_id, png) FROM STDIN (FORMAT BINARY)") as copy:
                        copy.set_types(["int8", "bytea"])
                        for row in crops:
                            copy.write_row(row)
            with db.pipeline():  # one round trip
                self._count(db, gallery_id, faces=len(faces), crops=len(crops))
                self._record(db, audit.PEOPLE_ADD, gallery, detail={"photos": len(new), "faces": len(faces)})
            position = 0
            for photo in new:
                result.added[photo.reference] = ids[position : position + len(photo.faces)]
                position += len(photo.faces)
            return result

    def _known_model_id(self, db: Any, model: ModelId) -> int:
        """A model's id, looked up once per store (a model's row never changes)."""
        known: dict[ModelId, int] = self.__dict__.setdefault("_people_model_ids", {})
        if model not in known:
            known[model] = self._model_id(db, model)
        return known[model]

    def _known(self, db: Any, gallery_id: int, keys: Sequence[str]) -> set[str]:
        rows = db.execute("SELECT key FROM photos WHERE gallery_id = %s AND key = ANY(%s)", (gallery_id, list(keys)))
        return {r[0] for r in rows}

    def people_pending(self, gallery: str) -> int:
        """How many unlabelled faces wait to be placed."""
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, gallery)
            row = db.execute("SELECT count(*) FROM people_faces WHERE gallery_id = %s AND NOT placed", (gallery_id,))
            return int(row.fetchone()[0])

    def known_photos(self, gallery: str, keys: Sequence[str]) -> set[str]:
        """The photo keys among ``keys`` that the gallery holds (an unknown gallery holds none)."""
        with self._transaction() as db:
            try:
                gallery_id, _, _ = self._gallery_row(db, gallery)
            except NotFoundError:
                return set()
            return self._known(db, gallery_id, keys)

    # -------------------------------------------------------------------------------------------- grouping
    @contextlib.contextmanager
    def people_batch(self, gallery: str) -> Iterator[Batch]:
        """One grouping batch (:class:`~ghostfacenets.gallery.people.PlacementBatch`) holding the gallery's lock."""
        with self._transaction() as db:
            gallery_id, model, faces = self._gallery_row(db, gallery, lock=True)
            yield Batch(self, db, gallery, gallery_id, model.dim if model else 0, faces)

    @contextlib.contextmanager
    def people_corrections(self, gallery: str) -> Iterator[Corrections]:
        """One correction (:class:`~ghostfacenets.gallery.people.CorrectionSession`) holding the gallery's lock."""
        with self._transaction() as db:
            gallery_id, model, _ = self._gallery_row(db, gallery, lock=True)
            session = Corrections(self, db, gallery, gallery_id, model.dim if model else 0)
            yield session
            session.finish()

    def people_vectors(self, gallery: str) -> ExactNeighbours:
        """Every unlabelled face of the gallery in memory, for exact neighbours over a whole grouping run."""
        with self._transaction() as db:
            gallery_id, model, _ = self._gallery_row(db, gallery)
            return read_vectors(db, gallery_id, model.dim if model else 0)

    def reset_people(self, gallery: str) -> None:
        """The start of a full re-run: every face not pinned back in the queue, people without a pinned face or a
        name deleted, the others' sums recomputed."""
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, gallery, lock=True)
            db.execute(
                "UPDATE faces f SET subject_id = NULL FROM people_faces pf WHERE pf.face_id = f.id "
                "AND pf.gallery_id = %s AND NOT pf.pinned AND f.subject_id IS NOT NULL",
                (gallery_id,),
            )
            db.execute(
                "UPDATE people_faces SET person_id = NULL, placed = false WHERE gallery_id = %s AND NOT pinned "
                "AND (placed OR person_id IS NOT NULL)",
                (gallery_id,),
            )
            db.execute(
                "DELETE FROM people p WHERE p.gallery_id = %s AND p.subject_id IS NULL "
                "AND NOT EXISTS (SELECT 1 FROM people_faces pf WHERE pf.person_id = p.id)",
                (gallery_id,),
            )
            self._refresh_people(db, gallery_id)
            self._record(db, audit.PEOPLE_RESET, gallery)

    def _refresh_people(self, db: Any, gallery_id: int, people: Collection[int] | None = None) -> None:
        """Recompute people's sizes and sums (all of the gallery's when ``people`` is None) from their faces."""
        if people is None:
            people = [r[0] for r in db.execute("SELECT id FROM people WHERE gallery_id = %s", (gallery_id,))]
        refresh_people(db, people)

    # -------------------------------------------------------------------------------------------- settings
    def people_settings(self, gallery: str) -> dict[str, Any] | None:
        """The gallery's grouping settings (None until set)."""
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, gallery)
            row = db.execute("SELECT settings FROM people_settings WHERE gallery_id = %s", (gallery_id,)).fetchone()
            return dict(row[0]) if row else None

    def set_people_settings(self, gallery: str, settings: Mapping[str, Any], create_gallery: bool = True) -> None:
        text = check_settings(settings)
        base.check_gallery_name(gallery)
        with self._transaction() as db:
            if create_gallery:
                db.execute("INSERT INTO galleries (name) VALUES (%s) ON CONFLICT (name) DO NOTHING", (gallery,))
            gallery_id, _, _ = self._gallery_row(db, gallery, lock=True)
            db.execute(
                "INSERT INTO people_settings (gallery_id, settings) VALUES (%s, %s::jsonb) "
                "ON CONFLICT (gallery_id) DO UPDATE SET settings = excluded.settings",
                (gallery_id, text),
            )
            self._record(db, audit.PEOPLE_SETTINGS, gallery, detail=dict(settings))

    # -------------------------------------------------------------------------------------------- reading
    def people(self, gallery: str, offset: int = 0, limit: int = 100) -> list[Person]:
        """People, largest first (then oldest)."""
        if limit < 1 or offset < 0:
            raise GalleryError("limit must be at least 1 and offset not negative")
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, gallery)
            rows = db.execute(
                f"SELECT {_PERSON_COLUMNS} FROM people p LEFT JOIN subjects s ON s.id = p.subject_id "
                "WHERE p.gallery_id = %s ORDER BY p.faces DESC, p.id LIMIT %s OFFSET %s",
                (gallery_id, limit, offset),
            )
            return [_person(r) for r in rows]

    def person(self, gallery: str, person_id: int) -> Person:
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, gallery)
            return self._person_row(db, gallery, gallery_id, person_id)

    def _person_row(self, db: Any, gallery: str, gallery_id: int, person_id: int) -> Person:
        row = db.execute(
            f"SELECT {_PERSON_COLUMNS} FROM people p LEFT JOIN subjects s ON s.id = p.subject_id "
            "WHERE p.id = %s AND p.gallery_id = %s",
            (person_id, gallery_id),
        ).fetchone()
        if row is None:
            raise NotFoundError(f"{self.location}: no person {person_id} in gallery {gallery!r}")
        return _person(row)

    def person_faces(
        self, gallery: str, person_id: int | None, after: int | None = None, limit: int = 100
    ) -> list[PersonFace]:
        """Faces of a person (None: the unsorted faces) by id, those above ``after``."""
        if limit < 1:
            raise GalleryError(f"limit must be at least 1, got {limit}")
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, gallery)
            if person_id is not None:
                self._person_row(db, gallery, gallery_id, person_id)
                where, params = "pf.person_id = %s", (person_id,)
            else:
                where, params = "pf.gallery_id = %s AND pf.person_id IS NULL AND pf.placed", (gallery_id,)
            rows = db.execute(
                f"SELECT {_PERSON_FACE_COLUMNS} FROM {_PERSON_FACES} "
                f"WHERE {where} AND pf.face_id > %s ORDER BY pf.face_id LIMIT %s",
                (*params, after or 0, limit),
            )
            return [_person_face(r) for r in rows]

    def person_face(self, gallery: str, face_id: int) -> PersonFace:
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, gallery)
            row = db.execute(
                f"SELECT {_PERSON_FACE_COLUMNS} FROM {_PERSON_FACES} WHERE pf.face_id = %s AND pf.gallery_id = %s",
                (face_id, gallery_id),
            ).fetchone()
            if row is None:
                raise NotFoundError(f"{self.location}: no unlabelled face {face_id} in gallery {gallery!r}")
            return _person_face(row)

    def crop(self, gallery: str, face_id: int) -> bytes | None:
        """A face's stored aligned crop (PNG), None when it was stored without one."""
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, gallery)
            row = db.execute(
                "SELECT f.id, c.png FROM faces f LEFT JOIN crops c ON c.face_id = f.id "
                "WHERE f.id = %s AND f.gallery_id = %s",
                (face_id, gallery_id),
            ).fetchone()
            if row is None:
                raise NotFoundError(f"{self.location}: no face {face_id} in gallery {gallery!r}")
            return bytes(row[1]) if row[1] is not None else None

    def people_summary(self, gallery: str, min_quality: float) -> PeopleSummary:
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, gallery)
            photos = db.execute("SELECT count(*) FROM photos WHERE gallery_id = %s", (gallery_id,)).fetchone()[0]
            faces, pending, unsorted, low = db.execute(
                "SELECT count(*), count(*) FILTER (WHERE NOT placed), "
                "count(*) FILTER (WHERE placed AND person_id IS NULL), "
                "count(*) FILTER (WHERE placed AND person_id IS NULL AND quality < %s) "
                "FROM people_faces WHERE gallery_id = %s",
                (min_quality, gallery_id),
            ).fetchone()
            people, named = db.execute(
                "SELECT count(*), count(subject_id) FROM people WHERE gallery_id = %s", (gallery_id,)
            ).fetchone()
            return PeopleSummary(photos, faces, pending, unsorted, low, people, named)
