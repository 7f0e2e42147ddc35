"""Unlabelled faces and people in PostgreSQL (:mod:`ghostfacenets.gallery.people`): photos, faces without a
subject, people with their sums of embeddings, "not this person" records and each gallery's grouping settings. A face's
grouping state (person, quality, placed, pinned) is a row of ``people_faces``: placing faces never rewrites ``faces``
rows, whose new versions would all enter the HNSW index again (only a face joining a named person gets its subject).

A face's nearest neighbours come from the HNSW index (one query per face, pgvector's iterative scan so that the
gallery and visibility filters never starve it) when the gallery holds more than ``exact_limit`` unlabelled faces,
and from an exact search below. Grouping and corrections hold the gallery's row lock, as every write does."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .. import base
from ..base import ConflictError, GalleryError, ModelId, NotFoundError
from ..people import (
    AddedPhotos,
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
)
from .connection import Connected
from .index import MAX_INDEXED_DIM
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

    # -------------------------------------------------------------------------------------------- adding
    def add_photos(
        self, gallery: str, photos: Sequence[PhotoFaces], model: ModelId, create_gallery: bool = True
    ) -> AddedPhotos:
        """Add photos and their unlabelled faces (waiting to be placed) in one transaction; photos whose key the
        gallery holds are skipped. Faces and crops go in by binary COPY."""
        base.check_gallery_name(gallery)
        check_photos(photos, model)
        with self._transaction() as db:
            if create_gallery:
                db.execute("INSERT INTO galleries (name) VALUES (%s) ON CONFLICT (name) DO NOTHING", (gallery,))
            gallery_id, stored, _ = self._gallery_row(db, gallery, lock=True)
            base.check_model(gallery, stored, model)
            model_id = self._bind(db, gallery_id, model) if stored is None else self._model_id(db, model)
            known = self._known(db, gallery_id, [p.photo_key for p in photos])
            new = [p for p in photos if p.photo_key not in known]
            result = AddedPhotos(skipped=[p.reference for p in photos if p.photo_key in known])
            if not new:
                return result
            by_key = dict(
                db.execute(
                    "INSERT INTO photos (gallery_id, key, reference, faces) "
                    "SELECT %s, k, r, f FROM unnest(%s::text[], %s::text[], %s::int[]) AS n(k, r, f) RETURNING key, id",
                    (gallery_id, [p.photo_key for p in new], [p.reference for p in new], [len(p.faces) for p in new]),
                ).fetchall()
            )
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
            self._count(db, gallery_id, faces=len(faces), crops=len(crops))
            position = 0
            for photo in new:
                result.added[photo.reference] = ids[position : position + len(photo.faces)]
                position += len(photo.faces)
            return result

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
    def people_batch(self, gallery: str) -> Iterator[_Batch]:
        """One grouping batch (:class:`~ghostfacenets.gallery.people.PlacementBatch`) holding the gallery's lock."""
        with self._transaction() as db:
            gallery_id, model, faces = self._gallery_row(db, gallery, lock=True)
            yield _Batch(self, db, gallery_id, model.dim if model else 0, faces)

    @contextlib.contextmanager
    def people_corrections(self, gallery: str) -> Iterator[_Corrections]:
        """One correction (:class:`~ghostfacenets.gallery.people.CorrectionSession`) holding the gallery's lock."""
        with self._transaction() as db:
            gallery_id, model, _ = self._gallery_row(db, gallery, lock=True)
            session = _Corrections(self, db, gallery, gallery_id, model.dim if model else 0)
            yield session
            session.finish()

    def people_vectors(self, gallery: str) -> ExactNeighbours:
        """Every unlabelled face of the gallery in memory, for exact neighbours over a whole grouping run."""
        with self._transaction() as db:
            gallery_id, model, _ = self._gallery_row(db, gallery)
            return _vectors(db, gallery_id, model.dim if model else 0)

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

    def _refresh_people(self, db: Any, gallery_id: int, people: Collection[int] | None = None) -> None:
        """Recompute people's sizes and sums (all of the gallery's when ``people`` is None) from their faces."""
        if people is None:
            people = [r[0] for r in db.execute("SELECT id FROM people WHERE gallery_id = %s", (gallery_id,))]
        _refresh(db, people)

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


def _vectors(db: Any, gallery_id: int, dim: int) -> ExactNeighbours:
    """The gallery's unlabelled faces (ids, pinned, embeddings as float32), read by binary COPY."""
    ids, pinned, vectors = [], [], []
    with (
        db.cursor() as cursor,
        cursor.copy(
            f"COPY (SELECT f.id, pf.pinned, f.embedding::vector FROM people_faces pf JOIN faces f ON f.id = pf.face_id "
            f"WHERE pf.gallery_id = {int(gallery_id)} ORDER BY f.id) TO STDOUT (FORMAT BINARY)"
        ) as copy,
    ):
        copy.set_types(["int8", "bool", "vector"])
        for face, pin, vector in copy.rows():
            ids.append(face)
            pinned.append(pin)
            vectors.append(vector)
    embeddings = (
        np.stack([v.to_numpy() for v in vectors]).astype(np.float32) if vectors else np.zeros((0, dim), np.float32)
    )
    return ExactNeighbours(np.array(ids, np.int64), embeddings, np.array(pinned, bool))


def _refresh(db: Any, people: Collection[int]) -> None:
    """Set people's sizes and sums from their faces."""
    for person in people:
        with db.cursor(binary=True) as cursor:
            rows = cursor.execute(
                "SELECT f.embedding::vector FROM people_faces pf JOIN faces f ON f.id = pf.face_id "
                "WHERE pf.person_id = %s",
                (person,),
            ).fetchall()
        total = np.sum([r[0].to_numpy().astype(np.float64) for r in rows], axis=0) if rows else None
        db.execute(
            "UPDATE people SET faces = %s, total = %s, updated = now() WHERE id = %s",
            (len(rows), encode_total(total) if total is not None else None, person),
        )


class _Batch:
    """:class:`~ghostfacenets.gallery.people.PlacementBatch` over one transaction holding the gallery's lock."""

    def __init__(self, store: PeopleMixin, db: Any, gallery_id: int, dim: int, faces: int) -> None:
        self.store, self.db, self.gallery_id, self.dim, self.gallery_faces = store, db, gallery_id, dim, faces

    def pending(self, limit: int) -> list[int]:
        rows = self.db.execute(
            "SELECT face_id FROM people_faces WHERE gallery_id = %s AND NOT placed ORDER BY face_id LIMIT %s",
            (self.gallery_id, limit),
        )
        return [r[0] for r in rows]

    def faces(self, ids: Collection[int], embeddings: bool = True) -> dict[int, FaceState]:
        with self.db.cursor(binary=True) as cursor:
            rows = cursor.execute(
                f"SELECT f.id, f.photo_id, pf.quality, {'f.embedding::vector' if embeddings else 'NULL::vector'}, "
                "pf.person_id, pf.pinned, pf.placed FROM people_faces pf JOIN faces f ON f.id = pf.face_id "
                "WHERE pf.face_id = ANY(%s)",
                (list(ids),),
            ).fetchall()
        empty = np.zeros(0, np.float32)
        return {
            r[0]: FaceState(r[0], r[1], float(r[2]), r[3].to_numpy().astype(np.float32) if r[3] is not None else empty,
                            r[4], r[5], r[6])
            for r in rows
        }  # fmt: skip

    def neighbours(self, ids: Sequence[int], k: int, min_similarity: float) -> dict[int, list[tuple[int, float]]]:
        store, db = self.store, self.db
        indexed = (
            self.gallery_faces > store.exact_limit  # as search decides: on all faces of the gallery
            and self.dim <= MAX_INDEXED_DIM[store.vector_type]
            and store._index_row(db, store._index_name(self.dim))[1]
        )
        if not indexed:
            return _vectors(db, self.gallery_id, self.dim).neighbours(ids, k, min_similarity)
        store._use_index(db)
        typed = f"{store.vector_type}({self.dim})"
        distance = f"f.embedding::{typed} <=> q.embedding::{typed}"
        params = {"g": self.gallery_id, "k": k, "ids": list(ids)}
        # the nearest earlier faces through the index (the gallery's unlabelled ones), and the pinned later ones
        rows = db.execute(
            f"SELECT q.id, n.id, 1 - n.distance FROM faces q CROSS JOIN LATERAL (SELECT f.id, {distance} AS distance "
            f"FROM faces f WHERE f.gallery_id = %(g)s AND f.dim = {self.dim} AND f.photo_id IS NOT NULL "
            f"AND f.id < q.id ORDER BY {distance} LIMIT %(k)s) n WHERE q.id = ANY(%(ids)s)",
            params,
        ).fetchall()
        rows += db.execute(
            f"SELECT q.id, f.id, 1 - ({distance}) FROM faces q JOIN people_faces pf ON pf.gallery_id = %(g)s "
            f"AND pf.pinned AND pf.face_id > q.id JOIN faces f ON f.id = pf.face_id WHERE q.id = ANY(%(ids)s)",
            params,
        ).fetchall()
        found: dict[int, list[tuple[int, float]]] = {int(i): [] for i in ids}
        for face, other, similarity in rows:
            if similarity >= min_similarity:
                found[face].append((int(other), float(similarity)))
        for face, near in found.items():
            found[face] = sorted(near, key=lambda item: (-item[1], item[0]))[:k]
        return found

    def photo_mates(self, ids: Collection[int]) -> dict[int, list[int]]:
        mates: dict[int, list[int]] = {int(i): [] for i in ids}
        rows = self.db.execute(
            "SELECT f.id, m.id FROM faces f JOIN faces m ON m.photo_id = f.photo_id AND m.id <> f.id "
            "WHERE f.id = ANY(%s)",
            (list(ids),),
        )
        for face, mate in rows:
            mates[face].append(mate)
        return mates

    def people(self, ids: Collection[int]) -> dict[int, PersonState]:
        rows = self.db.execute("SELECT id, faces, total FROM people WHERE id = ANY(%s)", (list(ids),))
        return {r[0]: PersonState(r[0], r[1], decode_total(r[2], self.dim)) for r in rows}

    def rejections(self, ids: Collection[int]) -> dict[int, set[int]]:
        found: dict[int, set[int]] = {}
        rows = self.db.execute("SELECT face_id, person_id FROM people_rejections WHERE face_id = ANY(%s)", (list(ids),))
        for face, person in rows:
            found.setdefault(face, set()).add(person)
        return found

    def apply(self, placement: Placement) -> dict[int, int]:
        db = self.db
        given: dict[int, int] = {}
        started = placement.started
        if started:
            rows = db.execute(
                "INSERT INTO people (gallery_id) SELECT %s FROM generate_series(1, %s) RETURNING id",
                (self.gallery_id, len(started)),
            ).fetchall()
            given = dict(zip(started, sorted(int(r[0]) for r in rows)))
        if placement.people:
            db.execute(
                "UPDATE people p SET faces = n.faces, total = n.total, updated = now() "
                "FROM unnest(%s::bigint[], %s::int[], %s::bytea[]) AS n(id, faces, total) WHERE p.id = n.id",
                (
                    [given.get(p, p) for p in placement.people],
                    [s.count for s in placement.people.values()],
                    [encode_total(s.total) for s in placement.people.values()],
                ),
            )
        faces = list(placement.faces)
        people = [given.get(p, p) if p is not None else None for p in placement.faces.values()]
        db.execute(
            "UPDATE people_faces pf SET person_id = n.person, placed = true "
            "FROM unnest(%s::bigint[], %s::bigint[]) AS n(id, person) WHERE pf.face_id = n.id",
            (faces, people),
        )
        db.execute(  # faces that joined a named person become its subject's (identify finds them)
            "UPDATE faces f SET subject_id = p.subject_id FROM unnest(%s::bigint[], %s::bigint[]) AS n(id, person) "
            "JOIN people p ON p.id = n.person WHERE f.id = n.id AND p.subject_id IS NOT NULL",
            (faces, people),
        )
        return given


class _Corrections:
    """:class:`~ghostfacenets.gallery.people.CorrectionSession` over one transaction holding the gallery's lock."""

    def __init__(self, store: PeopleMixin, db: Any, gallery: str, gallery_id: int, dim: int) -> None:
        self.store, self.db, self.gallery, self.gallery_id, self.dim = store, db, gallery, gallery_id, dim
        self.touched: set[int] = set()

    def _where(self) -> str:
        return f"{self.store.location}: gallery {self.gallery!r}"

    def members(self, person: int) -> list[int]:
        if not self.db.execute(
            "SELECT 1 FROM people WHERE id = %s AND gallery_id = %s", (person, self.gallery_id)
        ).fetchone():
            raise NotFoundError(f"{self._where()} has no person {person}")
        rows = self.db.execute("SELECT face_id FROM people_faces WHERE person_id = %s ORDER BY face_id", (person,))
        return [r[0] for r in rows]

    def people_of(self, faces: Collection[int]) -> dict[int, int | None]:
        found = dict(
            self.db.execute(
                "SELECT face_id, person_id FROM people_faces WHERE gallery_id = %s AND face_id = ANY(%s)",
                (self.gallery_id, [int(f) for f in faces]),
            ).fetchall()
        )
        missing = set(faces) - found.keys()
        if missing:
            raise NotFoundError(f"{self._where()} has no unlabelled face {min(missing)}")
        return {int(f): found[f] for f in faces}

    def assign(self, faces: Collection[int], person: int | None) -> None:
        self.touched |= {p for p in self.people_of(faces).values() if p is not None}
        if person is not None:
            self.touched.add(person)
        ids = {"p": person, "f": [int(f) for f in faces]}
        self.db.execute(
            "UPDATE people_faces SET person_id = %(p)s, pinned = true, placed = true WHERE face_id = ANY(%(f)s)", ids
        )
        self.db.execute(
            "UPDATE faces SET subject_id = (SELECT subject_id FROM people WHERE id = %(p)s) WHERE id = ANY(%(f)s) "
            "AND subject_id IS DISTINCT FROM (SELECT subject_id FROM people WHERE id = %(p)s)",
            ids,
        )

    def pin(self, faces: Collection[int]) -> None:
        self.db.execute(
            "UPDATE people_faces SET pinned = true, placed = true WHERE face_id = ANY(%s) AND NOT (pinned AND placed)",
            ([int(f) for f in faces],),
        )

    def requeue(self, faces: Collection[int]) -> None:
        self.touched |= {p for p in self.people_of(faces).values() if p is not None}
        ids = [int(f) for f in faces]
        self.db.execute(
            "UPDATE people_faces SET person_id = NULL, pinned = false, placed = false WHERE face_id = ANY(%s)", (ids,)
        )
        self.db.execute("UPDATE faces SET subject_id = NULL WHERE id = ANY(%s) AND subject_id IS NOT NULL", (ids,))

    def start_person(self) -> int:
        person = int(self.db.execute("INSERT INTO people (gallery_id) VALUES (%s) RETURNING id", (self.gallery_id,))
                     .fetchone()[0])  # fmt: skip
        self.touched.add(person)
        return person

    def remove_person(self, person: int) -> None:
        self.db.execute("DELETE FROM people WHERE id = %s", (person,))
        self.touched.discard(person)

    def reject(self, face: int, person: int) -> None:
        self.members(person)
        self.db.execute(
            "INSERT INTO people_rejections (face_id, person_id) VALUES (%s, %s) ON CONFLICT DO NOTHING", (face, person)
        )

    def move_rejections(self, source: int, target: int) -> None:
        self.db.execute(
            "INSERT INTO people_rejections (face_id, person_id, created) SELECT face_id, %s, created "
            "FROM people_rejections WHERE person_id = %s ON CONFLICT DO NOTHING",
            (target, source),
        )
        self.db.execute("DELETE FROM people_rejections WHERE person_id = %s", (source,))

    def _subject_of(self, person: int) -> int | None:
        row = self.db.execute("SELECT subject_id FROM people WHERE id = %s", (person,)).fetchone()
        return row[0] if row else None

    def _subject_of_faces(self, person: int, subject: int | None) -> None:
        self.db.execute(
            "UPDATE faces f SET subject_id = %s FROM people_faces pf WHERE pf.face_id = f.id AND pf.person_id = %s",
            (subject, person),
        )

    def name_of(self, person: int) -> str | None:
        row = self.db.execute(
            "SELECT s.name FROM people p JOIN subjects s ON s.id = p.subject_id WHERE p.id = %s", (person,)
        ).fetchone()
        return row[0] if row else None

    def person_named(self, name: str) -> int | None:
        row = self.db.execute(
            "SELECT p.id FROM people p JOIN subjects s ON s.id = p.subject_id WHERE p.gallery_id = %s AND s.name = %s",
            (self.gallery_id, base.check_subject_name(name)),
        ).fetchone()
        return row[0] if row else None

    def set_name(self, person: int, name: str) -> None:
        name = base.check_subject_name(name)
        self.members(person)
        subject = self._subject_of(person)
        existing = self.db.execute(
            "SELECT s.id, p.id FROM subjects s LEFT JOIN people p ON p.subject_id = s.id "
            "WHERE s.gallery_id = %s AND s.name = %s",
            (self.gallery_id, name),
        ).fetchone()
        if existing is not None and existing[0] != subject:
            if existing[1] is not None or subject is not None:
                raise ConflictError(f"{self._where()} has a subject named {name!r} already")
            subject = existing[0]  # an enrolled subject without a person: the person becomes it
        elif subject is not None:
            self.db.execute("UPDATE subjects SET name = %s, updated = now() WHERE id = %s", (name, subject))
        else:
            subject = int(self.db.execute(
                "INSERT INTO subjects (gallery_id, name, metadata) VALUES (%s, %s, '{}') RETURNING id",
                (self.gallery_id, name),
            ).fetchone()[0])  # fmt: skip
            self.store._count(self.db, self.gallery_id, subjects=1)
        self.db.execute("UPDATE people SET subject_id = %s, updated = now() WHERE id = %s", (subject, person))
        self._subject_of_faces(person, subject)
        self.touched.add(person)

    def absorb_name(self, target: int, source: int) -> None:
        theirs, ours = self._subject_of(source), self._subject_of(target)
        if theirs is None:
            return
        self.db.execute("UPDATE people SET subject_id = NULL WHERE id = %s", (source,))
        if ours is None:
            self.db.execute("UPDATE people SET subject_id = %s WHERE id = %s", (theirs, target))
            self._subject_of_faces(target, theirs)
        else:
            self.db.execute("UPDATE faces SET subject_id = %s WHERE subject_id = %s", (ours, theirs))
            self.db.execute("DELETE FROM subjects WHERE id = %s", (theirs,))
            self.store._count(self.db, self.gallery_id, subjects=-1)
        self.touched |= {source, target}

    def finish(self) -> None:
        """Bring the touched people's sizes and sums up to date; drop unnamed people left empty."""
        _refresh(self.db, self.touched)
        self.db.execute(
            "DELETE FROM people WHERE gallery_id = %s AND subject_id IS NULL AND faces = 0 AND id = ANY(%s)",
            (self.gallery_id, list(self.touched)),
        )
