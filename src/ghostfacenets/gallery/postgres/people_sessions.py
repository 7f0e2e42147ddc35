"""The PostgreSQL people store's transactions: a grouping batch (:class:`Batch`) and a correction
(:class:`Corrections`), each holding the gallery's row lock, and what both read: the gallery's unlabelled faces in
memory, people's sums recomputed from their faces."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import audit, base
from ..base import ConflictError, NotFoundError
from ..people import (
    BatchView,
    ExactNeighbours,
    FaceState,
    PersonState,
    Placement,
    decode_total,
    encode_total,
    read_view,
)
from .index import MAX_INDEXED_DIM

if TYPE_CHECKING:
    from .people import PeopleMixin


def read_vectors(db: Any, gallery_id: int, dim: int) -> ExactNeighbours:
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


def refresh_people(db: Any, people: Collection[int]) -> None:
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


# What a grouping batch decides on (BatchView), in one statement through the HNSW index: the batch's faces (q), their
# nearest earlier faces of the gallery and the pinned later ones at least %(min)s alike (near), the batch's faces and
# those (seen), the other faces of seen faces' photos (mates), then one row per face of seen and mates: its state (the
# embedding for seen ones), for the batch's faces their neighbours best first, for seen faces their mates and
# rejections, and the first row of each person carries the person's sum.
VIEW_SQL = """
WITH q AS MATERIALIZED (SELECT id, embedding FROM faces WHERE id = ANY(%(ids)s)),
near AS MATERIALIZED (
    SELECT * FROM (
        SELECT q.id AS face, n.id AS other, 1 - n.distance AS similarity FROM q CROSS JOIN LATERAL (
            SELECT f.id, f.embedding::{typed} <=> q.embedding::{typed} AS distance FROM faces f
            WHERE f.gallery_id = %(g)s AND f.dim = {dim} AND f.photo_id IS NOT NULL AND f.id < q.id
            ORDER BY f.embedding::{typed} <=> q.embedding::{typed} LIMIT %(k)s) n
        UNION ALL
        SELECT q.id, f.id, 1 - (f.embedding::{typed} <=> q.embedding::{typed}) FROM q JOIN people_faces pf
        ON pf.gallery_id = %(g)s AND pf.pinned AND pf.face_id > q.id JOIN faces f ON f.id = pf.face_id
    ) found WHERE similarity >= %(min)s
),
seen AS MATERIALIZED (SELECT id FROM q UNION SELECT other FROM near),
wanted AS MATERIALIZED (
    SELECT id, true AS seen FROM seen
    UNION
    SELECT m.id, false FROM seen s JOIN faces f ON f.id = s.id JOIN faces m ON m.photo_id = f.photo_id
    WHERE m.id NOT IN (SELECT id FROM seen)
)
SELECT f.id, f.photo_id, pf.quality, CASE WHEN w.seen THEN f.embedding::vector END, pf.person_id, pf.pinned,
    pf.placed, nb.others, nb.similarities,
    CASE WHEN w.seen THEN ARRAY(SELECT m.id FROM faces m WHERE m.photo_id = f.photo_id AND m.id <> f.id) END,
    CASE WHEN w.seen THEN ARRAY(SELECT r.person_id FROM people_rejections r WHERE r.face_id = f.id) END,
    p.faces, CASE WHEN row_number() OVER (PARTITION BY pf.person_id ORDER BY f.id) = 1 THEN p.total END
FROM wanted w JOIN faces f ON f.id = w.id JOIN people_faces pf ON pf.face_id = w.id
LEFT JOIN people p ON p.id = pf.person_id
LEFT JOIN LATERAL (
    SELECT array_agg(n.other ORDER BY n.similarity DESC, n.other) AS others,
        array_agg(n.similarity ORDER BY n.similarity DESC, n.other) AS similarities
    FROM near n WHERE n.face = f.id
) nb ON true
"""


class Batch:
    """:class:`~ghostfacenets.gallery.people.PlacementBatch` over one transaction holding the gallery's lock."""

    def __init__(self, store: PeopleMixin, db: Any, gallery: str, gallery_id: int, dim: int, faces: int) -> None:
        self.store, self.db, self.gallery, self.gallery_id, self.dim = store, db, gallery, gallery_id, dim
        self.gallery_faces = faces

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

    def view(self, ids: Sequence[int], k: int, min_similarity: float) -> BatchView:
        """One statement when the HNSW index serves the gallery (:data:`VIEW_SQL`), else :func:`read_view`."""
        store, db = self.store, self.db
        indexed = (
            self.gallery_faces > store.exact_limit  # as search decides: on all faces of the gallery
            and self.dim <= MAX_INDEXED_DIM[store.vector_type]
            and store._index_row(db, store._index_name(self.dim))[1]
        )
        if not indexed:
            return read_view(self, ids, k, min_similarity)
        store._use_index(db)
        params = {"g": self.gallery_id, "k": k, "ids": list(ids), "min": min_similarity}
        with db.cursor(binary=True) as cursor:
            rows = cursor.execute(VIEW_SQL.format(typed=f"{store.vector_type}({self.dim})", dim=self.dim), params)
            view = BatchView({int(i): [] for i in ids}, {}, {}, {}, {})
            empty = np.zeros(0, np.float32)
            for face, photo, quality, vector, person, pinned, placed, near, alike, mates, rejected, size, total in rows:
                embedding = empty if vector is None else vector.to_numpy().astype(np.float32)
                view.states[face] = FaceState(face, photo, float(quality), embedding, person, pinned, placed)
                if near is not None:
                    view.near[face] = list(zip(near, alike))[:k]
                if mates is not None:
                    view.mates[face] = mates
                    view.rejected[face] = set(rejected)
                if total is not None:
                    view.persons[person] = PersonState(person, size, decode_total(total, self.dim))
        return view

    def neighbours(self, ids: Sequence[int], k: int, min_similarity: float) -> dict[int, list[tuple[int, float]]]:
        return read_vectors(self.db, self.gallery_id, self.dim).neighbours(ids, k, min_similarity)

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
        rows = self.db.execute("SELECT id, faces, total FROM people WHERE id = ANY(%s)", (list(ids),), binary=True)
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
        faces = list(placement.faces)
        people = [given.get(p, p) if p is not None else None for p in placement.faces.values()]
        detail = {"faces": len(faces), "grouped": sum(p is not None for p in people), "people_started": len(given)}
        with db.pipeline():  # the writes go out together: one round trip
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
            self.store._record(db, audit.PEOPLE_PLACE, self.gallery, detail=detail)
        return given


class Corrections:
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

    def record(self, action: str, person: int | None, detail: Mapping[str, Any]) -> None:
        subject = self._subject_of(person) if person is not None else None
        self.store._record(self.db, action, self.gallery, subject, {"person": person, **detail})

    def finish(self) -> None:
        """Bring the touched people's sizes and sums up to date; drop unnamed people left empty."""
        refresh_people(self.db, self.touched)
        self.db.execute(
            "DELETE FROM people WHERE gallery_id = %s AND subject_id IS NULL AND faces = 0 AND id = ANY(%s)",
            (self.gallery_id, list(self.touched)),
        )
