"""Loading faces into PostgreSQL: new subjects in one batch, faces and crops by binary COPY."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .connection import Connected


class BulkMixin(Connected):
    """The inserts of an enrolment: subjects in one statement, faces and crops by binary COPY."""

    def _subject_ids(self, db: Any, gallery_id: int, wanted: list[tuple[str, str]]) -> tuple[dict[str, int], int]:
        """Subject name -> id, the new ones (with their metadata) inserted in one batch; and how many were new."""
        names = [name for name, _ in wanted]
        ids = dict(
            db.execute(
                "SELECT name, id FROM subjects WHERE gallery_id = %s AND name = ANY(%s)", (gallery_id, names)
            ).fetchall()
        )
        new = {name: metadata for name, metadata in wanted if name not in ids}  # a name twice: one subject
        if new:
            rows = db.execute(
                "INSERT INTO subjects (gallery_id, name, metadata) SELECT %s, name, metadata::jsonb "
                "FROM unnest(%s::text[], %s::text[]) AS new (name, metadata) RETURNING name, id",
                (gallery_id, list(new), list(new.values())),
            ).fetchall()
            ids.update((name, int(subject_id)) for name, subject_id in rows)
            self._count(db, gallery_id, subjects=len(new))
        return ids, len(new)

    def _insert_faces(
        self, db: Any, gallery_id: int, model_id: int, dim: int, plans: list[tuple[int, list[Any], list[str]]]
    ) -> list[list[int]]:
        """Insert the planned faces (and crops) with binary COPY, pgvector's recommended bulk path: their ids are
        drawn from the identity sequence first (COPY returns nothing); the new face ids per subject."""
        new = [(subject_id, face, vector) for subject_id, faces, _ in plans for face, vector in faces]
        ids: list[int] = []
        if new:
            ids = [
                int(row[0])
                for row in db.execute(
                    "SELECT nextval(pg_get_serial_sequence('faces', 'id')) FROM generate_series(1, %s)", (len(new),)
                )
            ]
            wrap = self._vector_value()
            with db.cursor() as cursor:
                with cursor.copy(
                    "COPY faces (id, gallery_id, subject_id, model_id, dim, embedding, image_sha256, source, "
                    "detection) FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(["int8", "int8", "int8", "int4", "int4", self.vector_type, "text", "text", "jsonb"])
                    for face_id, (subject_id, face, vector) in zip(ids, new):
                        detection = self._jsonb(face.detection) if face.detection is not None else None
                        copy.write_row(
                            (face_id, gallery_id, subject_id, model_id, dim, wrap(vector), face.image_sha256,
                             face.source, detection)
                        )  # fmt: skip
                crops = [(face_id, face.crop) for face_id, (_, face, _) in zip(ids, new) if face.crop is not None]
                if crops:
                    with cursor.copy("COPY crops (face_id, png) FROM STDIN (FORMAT BINARY)") as copy:
                        copy.set_types(["int8", "bytea"])
                        for row in crops:
                            copy.write_row(row)
        per_subject, position = [], 0
        for _, faces, _ in plans:
            per_subject.append(ids[position : position + len(faces)])
            position += len(faces)
        return per_subject

    def _vector_value(self) -> Callable[[np.ndarray], Any]:
        """How an embedding is written by binary COPY into the embedding column: pgvector's adapter dumps numpy
        arrays as ``vector``; ``halfvec`` wants its own wrapper."""
        if self.vector_type == "halfvec":
            from pgvector import HalfVector

            return HalfVector
        return lambda vector: vector
