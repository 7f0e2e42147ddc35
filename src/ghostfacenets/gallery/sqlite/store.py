"""The SQLite gallery store (:class:`SQLiteStore`): galleries, subjects, faces, export and API keys; connections,
the schema and the search cache come from their own modules."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...files import PRIVATE_MODE
from .. import audit, base
from ..audit import AuditEvent
from ..base import (
    KEY_USE_RESOLUTION_S,
    ApiKey,
    ConflictError,
    Enrolled,
    Enrolment,
    ExportedFace,
    GalleryError,
    GalleryInfo,
    ModelId,
    NewFace,
    NotFoundError,
    Role,
    StoredFace,
    Subject,
)
from .cache import SearchCache
from .people import PeopleMixin
from .schema import migrate

_SUBJECT_COLUMNS = (
    "s.id, g.name, s.name, s.metadata, (SELECT COUNT(*) FROM faces f WHERE f.subject_id = s.id), s.created, s.updated"
)
_FACE_COLUMNS = (
    "f.id, f.subject_id, f.image_sha256, f.source, f.detection, m.name, m.sha256, "
    "EXISTS (SELECT 1 FROM crops c WHERE c.face_id = f.id), f.created"
)


def _subject(row: Sequence[Any]) -> Subject:
    return Subject(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5], row[6])


def _face(row: Sequence[Any]) -> StoredFace:
    detection = json.loads(row[4]) if row[4] else None
    return StoredFace(row[0], row[1], row[2], row[3], detection, row[5], row[6], bool(row[7]), row[8])


def _key(row: Sequence[Any]) -> ApiKey:
    return ApiKey(row[0], row[1], row[2], row[3], row[4], row[5], row[6] is not None, row[7],
                  base.permissions_of(row[8]))  # fmt: skip


_KEY_COLUMNS = "k.id, k.role, g.name, k.label, k.created, k.last_used, k.revoked, k.gallery_id, k.permissions"
_KEYS = f"SELECT {_KEY_COLUMNS} FROM api_keys k LEFT JOIN galleries g ON g.id = k.gallery_id"


def _blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


class SQLiteStore(SearchCache, PeopleMixin):
    """Galleries in the SQLite file ``path`` (created on first use unless ``create=False``)."""

    def __init__(self, path: str | Path, create: bool = True) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        if self.path.is_dir():
            raise GalleryError(f"{self.path} is a folder; give a gallery file such as gallery.sqlite")
        if not self.path.exists() and not create:
            raise NotFoundError(f"{self.path}: no such gallery file (enrol someone first to create it)")
        if not self.path.parent.is_dir():
            raise GalleryError(f"{self.path.parent}: no such folder")
        if not self.path.exists():
            with contextlib.suppress(FileExistsError):  # made by another process meanwhile
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE))
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()  # guards the connection list and the matrix cache
        self._matrices = OrderedDict()
        self._closed = False
        self._erasure_pending = False
        try:
            migrate(self._db(), self.path)
        except sqlite3.DatabaseError as exc:
            self.close()
            raise GalleryError(f"{self.path}: not a usable gallery file ({exc})") from None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
            self._matrices.clear()
        if self._erasure_pending and connections:
            with contextlib.suppress(sqlite3.Error):
                self._empty_wal(connections[0])
        self._closed = True
        for db in connections:
            db.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _gallery_for(
        self, db: sqlite3.Connection, gallery: str, create: bool, model: ModelId | None = None
    ) -> tuple[int, int | None]:
        """(gallery id, model id) of a gallery about to be written: created first when ``create`` (and the creation
        recorded), and with a ``model`` checked against the gallery's and bound to a gallery that has none."""
        if create:
            made = db.execute(
                "INSERT OR IGNORE INTO galleries (name, created) VALUES (?, ?)", (gallery, base.utc_now())
            )
            if made.rowcount:
                self._record(db, audit.GALLERY_CREATE, gallery)
        gallery_id, stored = self._gallery_row(db, gallery)
        if model is None:
            return gallery_id, None
        base.check_model(gallery, stored, model)
        model_id = self._model_id(db, model)
        if stored is None:
            db.execute("UPDATE galleries SET model_id = ? WHERE id = ?", (model_id, gallery_id))
        return gallery_id, model_id

    def _model_id(self, db: sqlite3.Connection, model: ModelId) -> int:
        key = (model.name, model.sha256, model.dim, int(model.flip))
        db.execute("INSERT OR IGNORE INTO models (name, sha256, dim, flip) VALUES (?, ?, ?, ?)", key)
        row = db.execute("SELECT id FROM models WHERE name = ? AND sha256 = ? AND dim = ? AND flip = ?", key)
        return int(row.fetchone()[0])

    def _touch(self, db: sqlite3.Connection, gallery_id: int, rewrite: bool = False) -> None:
        """Mark the gallery changed: search caches in every process catch up, appending the faces added since they
        read it, or, after a ``rewrite`` (faces deleted or re-embedded, subjects renamed), reloading it whole."""
        db.execute(
            "UPDATE galleries SET generation = generation + 1, epoch = epoch + ? WHERE id = ?",
            (int(rewrite), gallery_id),
        )

    def _info(self, db: sqlite3.Connection, where: str, params: tuple[Any, ...]) -> list[GalleryInfo]:
        rows = db.execute(
            "SELECT g.name, m.name, m.sha256, m.dim, m.flip, "
            "(SELECT COUNT(*) FROM subjects s WHERE s.gallery_id = g.id), "
            "(SELECT COUNT(*) FROM faces f WHERE f.gallery_id = g.id), "
            "(SELECT COUNT(*) FROM faces f JOIN crops c ON c.face_id = f.id WHERE f.gallery_id = g.id), g.created "
            f"FROM galleries g LEFT JOIN models m ON m.id = g.model_id {where} ORDER BY g.name",
            params,
        ).fetchall()
        return [
            GalleryInfo(r[0], ModelId(r[1], r[2], r[3], bool(r[4])) if r[1] is not None else None, *r[5:]) for r in rows
        ]

    def _subject_row(self, db: sqlite3.Connection, gallery_id: int, gallery: str, subject_id: int) -> Subject:
        row = db.execute(
            f"SELECT {_SUBJECT_COLUMNS} FROM subjects s JOIN galleries g ON g.id = s.gallery_id "
            "WHERE s.id = ? AND s.gallery_id = ?",
            (subject_id, gallery_id),
        ).fetchone()
        if row is None:
            raise NotFoundError(f"{self.path}: no subject {subject_id} in gallery {gallery!r}")
        return _subject(row)

    def _stored_faces(self, db: sqlite3.Connection, face_ids: Sequence[int]) -> list[StoredFace]:
        faces = []
        for face_id in face_ids:
            row = db.execute(
                f"SELECT {_FACE_COLUMNS} FROM faces f JOIN models m ON m.id = f.model_id WHERE f.id = ?", (face_id,)
            ).fetchone()
            faces.append(_face(row))
        return faces

    # ------------------------------------------------------------------------------------------------ galleries
    def create_gallery(self, name: str, exist_ok: bool = False) -> GalleryInfo:
        base.check_gallery_name(name)
        with self._transaction(write=True) as db:
            if db.execute("SELECT 1 FROM galleries WHERE name = ?", (name,)).fetchone():
                if not exist_ok:
                    raise ConflictError(f"{self.path}: a gallery named {name!r} exists already")
            else:
                db.execute("INSERT INTO galleries (name, created) VALUES (?, ?)", (name, base.utc_now()))
                self._record(db, audit.GALLERY_CREATE, name)
            return self._info(db, "WHERE g.name = ?", (name,))[0]

    def galleries(self) -> list[GalleryInfo]:
        with self._transaction(write=False) as db:
            return self._info(db, "", ())

    def gallery(self, name: str) -> GalleryInfo:
        with self._transaction(write=False) as db:
            self._gallery_row(db, name)
            return self._info(db, "WHERE g.name = ?", (name,))[0]

    def delete_gallery(self, name: str) -> None:
        with self._transaction(write=True, erase=True) as db:
            gallery_id, _ = self._gallery_row(db, name)
            info = self._info(db, "WHERE g.id = ?", (gallery_id,))[0]
            db.execute("DELETE FROM galleries WHERE id = ?", (gallery_id,))
            self._record(db, audit.GALLERY_DELETE, name, detail={"subjects": info.subjects, "faces": info.faces})

    # ------------------------------------------------------------------------------------------------ subjects
    def add_subject(self, gallery: str, name: str, metadata: Mapping[str, Any] | None = None) -> Subject:
        name, text = base.check_subject_name(name), base.check_metadata(metadata)
        with self._transaction(write=True) as db:
            gallery_id, _ = self._gallery_row(db, gallery)
            subject_id = self._insert_subject(db, gallery_id, gallery, name, text)
            self._record(db, audit.SUBJECT_CREATE, gallery, subject_id)
            return self._subject_row(db, gallery_id, gallery, subject_id)

    def _insert_subject(self, db: sqlite3.Connection, gallery_id: int, gallery: str, name: str, metadata: str) -> int:
        if db.execute("SELECT 1 FROM subjects WHERE gallery_id = ? AND name = ?", (gallery_id, name)).fetchone():
            raise ConflictError(f"{self.path}: gallery {gallery!r} has a subject named {name!r} already")
        now = base.utc_now()
        cursor = db.execute(
            "INSERT INTO subjects (gallery_id, name, metadata, created, updated) VALUES (?, ?, ?, ?, ?)",
            (gallery_id, name, metadata, now, now),
        )
        return int(cursor.lastrowid or 0)

    def subject(self, gallery: str, subject_id: int) -> Subject:
        with self._transaction(write=False) as db:
            gallery_id, _ = self._gallery_row(db, gallery)
            return self._subject_row(db, gallery_id, gallery, subject_id)

    def find_subject(self, gallery: str, name: str) -> Subject | None:
        name = base.check_subject_name(name)
        with self._transaction(write=False) as db:
            gallery_id, _ = self._gallery_row(db, gallery)
            row = db.execute(
                f"SELECT {_SUBJECT_COLUMNS} FROM subjects s JOIN galleries g ON g.id = s.gallery_id "
                "WHERE s.gallery_id = ? AND s.name = ?",
                (gallery_id, name),
            ).fetchone()
            return _subject(row) if row else None

    def subjects(self, gallery: str, after: int | None = None, limit: int = 100) -> list[Subject]:
        if limit < 1:
            raise GalleryError(f"limit must be at least 1, got {limit}")
        with self._transaction(write=False) as db:
            gallery_id, _ = self._gallery_row(db, gallery)
            rows = db.execute(
                f"SELECT {_SUBJECT_COLUMNS} FROM subjects s JOIN galleries g ON g.id = s.gallery_id "
                "WHERE s.gallery_id = ? AND s.id > ? ORDER BY s.id LIMIT ?",
                (gallery_id, after or 0, limit),
            ).fetchall()
            return [_subject(r) for r in rows]

    def update_subject(
        self, gallery: str, subject_id: int, name: str | None = None, metadata: Mapping[str, Any] | None = None
    ) -> Subject:
        new_name = base.check_subject_name(name) if name is not None else None
        text = base.check_metadata(metadata) if metadata is not None else None
        with self._transaction(write=True, erase=True) as db:  # the old name or metadata must not linger
            gallery_id, _ = self._gallery_row(db, gallery)
            current = self._subject_row(db, gallery_id, gallery, subject_id)
            if new_name is not None and new_name != current.name:
                if db.execute(
                    "SELECT 1 FROM subjects WHERE gallery_id = ? AND name = ?", (gallery_id, new_name)
                ).fetchone():
                    raise ConflictError(f"{self.path}: gallery {gallery!r} has a subject named {new_name!r} already")
                db.execute("UPDATE subjects SET name = ? WHERE id = ?", (new_name, subject_id))
                self._touch(db, gallery_id, rewrite=True)
            if text is not None:
                db.execute("UPDATE subjects SET metadata = ? WHERE id = ?", (text, subject_id))
            db.execute("UPDATE subjects SET updated = ? WHERE id = ?", (base.utc_now(), subject_id))
            changed = [field for field, value in (("name", new_name), ("metadata", text)) if value is not None]
            self._record(db, audit.SUBJECT_UPDATE, gallery, subject_id, {"changed": changed})
            return self._subject_row(db, gallery_id, gallery, subject_id)

    def delete_subject(self, gallery: str, subject_id: int) -> int:
        with self._transaction(write=True, erase=True) as db:
            gallery_id, _ = self._gallery_row(db, gallery)
            subject = self._subject_row(db, gallery_id, gallery, subject_id)
            db.execute("DELETE FROM subjects WHERE id = ?", (subject_id,))
            self._touch(db, gallery_id, rewrite=True)
            self._record(db, audit.SUBJECT_DELETE, gallery, subject_id, {"faces": subject.faces})
            return subject.faces

    # ------------------------------------------------------------------------------------------------ faces
    def enroll(
        self,
        gallery: str,
        name: str,
        faces: Sequence[NewFace],
        model: ModelId,
        metadata: Mapping[str, Any] | None = None,
        create_gallery: bool = True,
    ) -> Enrolled:
        return self.enroll_many(gallery, [Enrolment(name, faces, metadata)], model, create_gallery)[0]

    def enroll_many(
        self, gallery: str, enrolments: Sequence[Enrolment], model: ModelId, create_gallery: bool = True
    ) -> list[Enrolled]:
        base.check_gallery_name(gallery)
        checked = [
            (base.check_subject_name(e.name), base.check_metadata(e.metadata), base.check_faces(e.faces, model))
            for e in enrolments
        ]
        with self._transaction(write=True) as db:
            gallery_id, model_id = self._gallery_for(db, gallery, create_gallery, model)
            results, new_subjects = [], 0
            for enrolment, (name, metadata, vectors) in zip(enrolments, checked):
                row = db.execute("SELECT id FROM subjects WHERE gallery_id = ? AND name = ?", (gallery_id, name))
                found = row.fetchone()
                subject_id = found[0] if found else self._insert_subject(db, gallery_id, gallery, name, metadata)
                new_subjects += found is None
                added, skipped = [], []
                for face, vector in zip(enrolment.faces, vectors):
                    owner = db.execute(
                        "SELECT f.subject_id, s.name FROM faces f JOIN subjects s ON s.id = f.subject_id "
                        "WHERE f.gallery_id = ? AND f.image_sha256 = ? AND f.photo_id IS NULL",
                        (gallery_id, face.image_sha256),
                    ).fetchone()
                    if owner is not None:
                        if owner[0] != subject_id:
                            raise ConflictError(
                                f"{face.source or 'image ' + face.image_sha256[:12]} is already enrolled as "
                                f"{owner[1]!r} in gallery {gallery!r}"
                            )
                        skipped.append(face.image_sha256)
                        continue
                    cursor = db.execute(
                        "INSERT INTO faces (gallery_id, subject_id, model_id, embedding, image_sha256, source, "
                        "detection, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            gallery_id,
                            subject_id,
                            model_id,
                            _blob(vector),
                            face.image_sha256,
                            face.source,
                            json.dumps(face.detection) if face.detection is not None else None,
                            base.utc_now(),
                        ),
                    )
                    if face.crop is not None:
                        db.execute("INSERT INTO crops (face_id, png) VALUES (?, ?)", (cursor.lastrowid, face.crop))
                    added.append(int(cursor.lastrowid or 0))
                if added:
                    db.execute("UPDATE subjects SET updated = ? WHERE id = ?", (base.utc_now(), subject_id))
                results.append((subject_id, added, skipped))
            self._touch(db, gallery_id)
            self._record_enrolment(db, gallery, [(s, len(a), len(k)) for s, a, k in results], new_subjects)
            return [
                Enrolled(self._subject_row(db, gallery_id, gallery, s), self._stored_faces(db, a), k)
                for s, a, k in results
            ]

    def add_faces(self, gallery: str, subject_id: int, faces: Sequence[NewFace], model: ModelId) -> Enrolled:
        subject = self.subject(gallery, subject_id)
        # by name, in a transaction that refuses a subject renamed or deleted meanwhile
        enrolled = self.enroll(gallery, subject.name, faces, model, create_gallery=False)
        if enrolled.subject.id != subject_id:
            raise ConflictError(f"{self.path}: subject {subject_id} changed while faces were added; try again")
        return enrolled

    def faces(self, gallery: str, subject_id: int) -> list[StoredFace]:
        with self._transaction(write=False) as db:
            gallery_id, _ = self._gallery_row(db, gallery)
            self._subject_row(db, gallery_id, gallery, subject_id)
            rows = db.execute(
                f"SELECT {_FACE_COLUMNS} FROM faces f JOIN models m ON m.id = f.model_id "
                "WHERE f.subject_id = ? ORDER BY f.id",
                (subject_id,),
            ).fetchall()
            return [_face(r) for r in rows]

    def delete_face(self, gallery: str, face_id: int) -> None:
        with self._transaction(write=True, erase=True) as db:
            gallery_id, _ = self._gallery_row(db, gallery)
            row = db.execute(
                "DELETE FROM faces WHERE id = ? AND gallery_id = ? RETURNING subject_id, person_id",
                (face_id, gallery_id),
            ).fetchone()
            if row is None:
                raise NotFoundError(f"{self.path}: no face {face_id} in gallery {gallery!r}")
            if row[1] is not None:
                self._refresh_people(db, gallery_id, [row[1]])
            self._touch(db, gallery_id, rewrite=True)
            self._record(db, audit.FACE_DELETE, gallery, row[0], {"face": face_id})

    def enrolled_images(self, gallery: str) -> dict[str, str]:
        with self._transaction(write=False) as db:
            gallery_id, _ = self._gallery_row(db, gallery)
            rows = db.execute(
                "SELECT f.image_sha256, s.name FROM faces f JOIN subjects s ON s.id = f.subject_id "
                "WHERE f.gallery_id = ? AND f.photo_id IS NULL",
                (gallery_id,),
            )
            return dict(rows.fetchall())

    # ---------------------------------------------------------------------------------------- moving, re-embedding
    def export_faces(self, gallery: str) -> Iterator[ExportedFace]:
        with self._reader() as db:
            gallery_id, _ = self._gallery_row(db, gallery)
            rows = db.execute(
                "SELECT s.name, s.metadata, f.embedding, f.image_sha256, f.source, f.detection, c.png, "
                "m.name, m.sha256, m.dim, m.flip FROM faces f JOIN subjects s ON s.id = f.subject_id "
                "JOIN models m ON m.id = f.model_id LEFT JOIN crops c ON c.face_id = f.id "
                "WHERE f.gallery_id = ? AND f.photo_id IS NULL ORDER BY f.subject_id, f.id",
                (gallery_id,),
            )
            for row in rows:
                model = ModelId(row[7], row[8], row[9], bool(row[10]))
                face = NewFace(
                    np.frombuffer(row[2], dtype="<f4").copy(),
                    row[3],
                    row[4],
                    json.loads(row[5]) if row[5] else None,
                    row[6],
                )
                yield ExportedFace(gallery, row[0], json.loads(row[1]), face, model)

    def crops(self, gallery: str) -> Iterator[tuple[int, bytes]]:
        with self._reader() as db:
            gallery_id, _ = self._gallery_row(db, gallery)
            rows = db.execute(
                "SELECT f.id, c.png FROM faces f JOIN crops c ON c.face_id = f.id WHERE f.gallery_id = ? ORDER BY f.id",
                (gallery_id,),
            )
            yield from ((int(face_id), bytes(png)) for face_id, png in rows)

    def replace_embeddings(self, gallery: str, embeddings: Mapping[int, np.ndarray], model: ModelId) -> None:
        vectors = {int(i): base.check_embedding(v, model, f"face {i}") for i, v in embeddings.items()}
        with self._transaction(write=True) as db:
            gallery_id, _ = self._gallery_row(db, gallery)
            stored = {r[0] for r in db.execute("SELECT id FROM faces WHERE gallery_id = ?", (gallery_id,))}
            base.check_replacement(self.location, gallery, stored, vectors.keys())
            model_id = self._model_id(db, model)
            db.executemany(
                "UPDATE faces SET embedding = ?, model_id = ? WHERE id = ?",
                ((_blob(v), model_id, i) for i, v in vectors.items()),
            )
            db.execute("UPDATE galleries SET model_id = ? WHERE id = ?", (model_id, gallery_id))
            self._refresh_people(db, gallery_id)
            self._touch(db, gallery_id, rewrite=True)
            self._record(db, audit.GALLERY_REEMBED, gallery, detail={"faces": len(vectors), "model": model.describe()})

    # ------------------------------------------------------------------------------------------------ API keys
    def _key_row(self, db: sqlite3.Connection, key_id: int) -> ApiKey:
        row = db.execute(f"{_KEYS} WHERE k.id = ?", (key_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"{self.path}: no API key {key_id}")
        return _key(row)

    def create_key(
        self, role: Role, gallery: str | None = None, label: str = "", permissions: Iterable[str] = ()
    ) -> tuple[ApiKey, str]:
        role = base.check_role(role)
        label = base.check_label(label)
        allowed = base.check_permissions(permissions)
        secret, digest = base.new_secret()
        with self._transaction(write=True) as db:
            gallery_id = self._gallery_row(db, gallery)[0] if gallery is not None else None
            cursor = db.execute(
                "INSERT INTO api_keys (secret_sha256, role, gallery_id, label, created, permissions) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (digest, role, gallery_id, label, base.utc_now(), base.permissions_text(allowed)),
            )
            key = self._key_row(db, int(cursor.lastrowid or 0))
            self._record(db, audit.KEY_CREATE, gallery, detail=audit.key_detail(key))
            return key, secret

    def keys(self) -> list[ApiKey]:
        with self._transaction(write=False) as db:
            return [_key(r) for r in db.execute(f"{_KEYS} ORDER BY k.id").fetchall()]

    def revoke_key(self, key_id: int) -> ApiKey:
        with self._transaction(write=True) as db:
            before = self._key_row(db, key_id)
            db.execute("UPDATE api_keys SET revoked = ? WHERE id = ? AND revoked IS NULL", (base.utc_now(), key_id))
            if not before.revoked:
                self._record(db, audit.KEY_REVOKE, before.gallery, detail={"key": key_id})
            return self._key_row(db, key_id)

    def authenticate(self, secret: str) -> ApiKey | None:
        digest = base.hash_secret(secret)
        with self._transaction(write=False) as db:
            row = db.execute(f"{_KEYS} WHERE k.secret_sha256 = ? AND k.revoked IS NULL", (digest,)).fetchone()
        if row is None:
            return None
        key = _key(row)
        if key.gallery_id is not None and key.gallery is None:
            return None  # its gallery is gone (deleted without the cascade): the key reaches nothing
        now = base.utc_now()
        if key.last_used is None or base.seconds_between(key.last_used, now) >= KEY_USE_RESOLUTION_S:
            with self._transaction(write=True) as db:
                db.execute("UPDATE api_keys SET last_used = ? WHERE id = ?", (now, key.id))
            key = dataclasses.replace(key, last_used=now)
        return key

    # ------------------------------------------------------------------------------------------------ audit trail
    def _record(
        self,
        db: sqlite3.Connection,
        action: str,
        gallery: str | None,
        subject_id: int | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a change in the audit trail, in the transaction that makes it."""
        actor = audit.current_actor()
        db.execute(
            "INSERT INTO audit (at, actor, key_id, via, action, gallery, subject_id, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (base.utc_now(), actor.name, actor.key_id, actor.via, action, gallery, subject_id,
             audit.detail_json(detail)),
        )  # fmt: skip

    def _record_enrolment(
        self, db: sqlite3.Connection, gallery: str, results: Sequence[tuple[int, int, int]], new_subjects: int
    ) -> None:
        """One event for an enrolment of (subject id, faces added, faces skipped) per subject, if it changed
        anything."""
        summary = audit.enrolment_detail(results, new_subjects)
        if summary is not None:
            self._record(db, audit.FACES_ADD, gallery, *summary)

    def audit(self, gallery: str | None = None, since: str | None = None, limit: int | None = None) -> list[AuditEvent]:
        where, params = audit.event_filter(gallery, since, "?")
        with self._transaction(write=False) as db:
            rows = db.execute(
                f"SELECT * FROM (SELECT {audit.COLUMNS} FROM audit {where} ORDER BY id DESC LIMIT ?) ORDER BY id",
                (*params, -1 if limit is None else limit),
            ).fetchall()
        return [audit.event(row, row[1]) for row in rows]
