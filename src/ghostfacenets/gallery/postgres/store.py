"""The PostgreSQL gallery store (:class:`PostgresStore`): connections, galleries, subjects, faces, export and API
keys; schema, index, bulk loading and search come from their own modules."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

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
from ..stores import hide_in_logs, redact_url
from .bulk import BulkMixin
from .connection import Health
from .options import CONNECT_TIMEOUT_S, DEFAULTS, POOL_TIMEOUT_S, check_option, split_options
from .people import PeopleMixin
from .rows import FACE_COLUMNS, KEYS, SUBJECT_COLUMNS, to_face, to_iso, to_key, to_model, to_subject
from .schema import SchemaMixin
from .search import SearchMixin


class PostgresStore(SchemaMixin, SearchMixin, BulkMixin, PeopleMixin):
    """Galleries in the PostgreSQL database ``url`` (``postgresql://user:password@host:port/dbname``, or
    ``?host=/socket/dir``); the schema is created or migrated on first use. See the module for the options."""

    def __init__(self, url: str, **options: Any) -> None:
        try:
            import psycopg
            import psycopg_pool
            from pgvector.psycopg import register_vector
            from psycopg.types.json import Jsonb
        except ImportError as exc:
            raise GalleryError(
                f"PostgreSQL galleries need psycopg, psycopg_pool and pgvector: pip install 'ghostfacenets[postgres]' "
                f"({exc})"
            ) from None
        self._psycopg, self._jsonb = psycopg, Jsonb
        conninfo, url_options = split_options(url)
        unknown = set(options) - set(DEFAULTS)
        if unknown:
            raise GalleryError(f"unknown PostgreSQL option(s) {sorted(unknown)}; known: {', '.join(DEFAULTS)}")
        settings = {**DEFAULTS, **url_options, **{k: v for k, v in options.items() if v is not None}}
        self.options = {name: check_option(name, value) for name, value in settings.items()}
        self._conninfo, self.location = conninfo, redact_url(conninfo)
        hide_in_logs(conninfo)
        self.schema = self.options["schema"]
        self.ef_search = self.options["ef_search"]
        self.exact_limit = self.options["exact_limit"]
        self._health, self._closed = Health(), False
        requested_type = "vector_type" in url_options or options.get("vector_type") is not None
        try:
            with psycopg.connect(conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as db:
                extension_schema = self._prepare(db, requested_type)
        except psycopg.Error as exc:
            raise GalleryError(f"{self.location}: {self._reason(exc)}") from None
        search_path = f"{self.schema}, {extension_schema}" if extension_schema != self.schema else self.schema

        def configure(db: Any) -> None:
            db.execute(f"SET search_path TO {search_path}")
            db.execute("SET TIME ZONE 'UTC'")
            register_vector(db)

        self._configure = configure
        self._pool = self._new_pool()
        try:
            self._pool.open(wait=True, timeout=POOL_TIMEOUT_S)
        except psycopg_pool.PoolTimeout:
            self._pool.close()
            raise GalleryError(f"{self.location}: no connection within {POOL_TIMEOUT_S} s") from None

    def close(self) -> None:
        self._closed = True
        self._pool.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ping(self) -> None:
        with self._transaction() as db:
            db.execute("SELECT 1").fetchone()

    def _model_id(self, db: Any, model: ModelId) -> int:
        key = (model.name, model.sha256, model.dim, model.flip)
        db.execute("INSERT INTO models (name, sha256, dim, flip) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING", key)
        row = db.execute("SELECT id FROM models WHERE name = %s AND sha256 = %s AND dim = %s AND flip = %s", key)
        return int(row.fetchone()[0])

    def _info(self, db: Any, where: str, params: tuple[Any, ...]) -> list[GalleryInfo]:
        rows = db.execute(
            "SELECT g.name, m.name, m.sha256, m.dim, m.flip, g.subjects, g.faces, g.crops, g.created "
            f"FROM galleries g LEFT JOIN models m ON m.id = g.model_id {where} ORDER BY g.name",
            params,
        ).fetchall()
        return [GalleryInfo(r[0], to_model(r[1:5]), r[5], r[6], r[7], to_iso(r[8]) or "") for r in rows]

    def _subject_row(self, db: Any, gallery_id: int, gallery: str, subject_id: int) -> Subject:
        row = db.execute(
            f"SELECT {SUBJECT_COLUMNS} FROM subjects s JOIN galleries g ON g.id = s.gallery_id "
            "WHERE s.id = %s AND s.gallery_id = %s",
            (subject_id, gallery_id),
        ).fetchone()
        if row is None:
            raise NotFoundError(f"{self.location}: no subject {subject_id} in gallery {gallery!r}")
        return to_subject(row)

    def _bind(self, db: Any, gallery_id: int, model: ModelId) -> int:
        """Bind the gallery to ``model`` (its index ready); returns the model's id."""
        model_id = self._model_id(db, model)
        self._ensure_index(db, model.dim)
        db.execute("UPDATE galleries SET model_id = %s WHERE id = %s", (model_id, gallery_id))
        return model_id

    # ------------------------------------------------------------------------------------------------ galleries
    def create_gallery(self, name: str, exist_ok: bool = False) -> GalleryInfo:
        base.check_gallery_name(name)
        with self._transaction() as db:
            created = db.execute(
                "INSERT INTO galleries (name) VALUES (%s) ON CONFLICT (name) DO NOTHING RETURNING id", (name,)
            ).fetchone()
            if created is None and not exist_ok:
                raise ConflictError(f"{self.location}: a gallery named {name!r} exists already")
            if created is not None:
                self._record(db, audit.GALLERY_CREATE, name)
            return self._info(db, "WHERE g.name = %s", (name,))[0]

    def galleries(self) -> list[GalleryInfo]:
        with self._transaction() as db:
            return self._info(db, "", ())

    def gallery(self, name: str) -> GalleryInfo:
        with self._transaction() as db:
            self._gallery_row(db, name)
            return self._info(db, "WHERE g.name = %s", (name,))[0]

    def delete_gallery(self, name: str) -> None:
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, name, lock=True)
            info = self._info(db, "WHERE g.id = %s", (gallery_id,))[0]
            db.execute("DELETE FROM galleries WHERE id = %s", (gallery_id,))
            self._record(db, audit.GALLERY_DELETE, name, detail={"subjects": info.subjects, "faces": info.faces})

    # ------------------------------------------------------------------------------------------------ subjects
    def add_subject(self, gallery: str, name: str, metadata: Mapping[str, Any] | None = None) -> Subject:
        name, text = base.check_subject_name(name), base.check_metadata(metadata)
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, gallery, lock=True)
            subject_id = self._insert_subject(db, gallery_id, gallery, name, text)
            self._record(db, audit.SUBJECT_CREATE, gallery, subject_id)
            return self._subject_row(db, gallery_id, gallery, subject_id)

    def _insert_subject(self, db: Any, gallery_id: int, gallery: str, name: str, metadata: str) -> int:
        row = db.execute(
            "INSERT INTO subjects (gallery_id, name, metadata) VALUES (%s, %s, %s::jsonb) "
            "ON CONFLICT (gallery_id, name) DO NOTHING RETURNING id",
            (gallery_id, name, metadata),
        ).fetchone()
        if row is None:
            raise ConflictError(f"{self.location}: gallery {gallery!r} has a subject named {name!r} already")
        self._count(db, gallery_id, subjects=1)
        return int(row[0])

    def subject(self, gallery: str, subject_id: int) -> Subject:
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, gallery)
            return self._subject_row(db, gallery_id, gallery, subject_id)

    def find_subject(self, gallery: str, name: str) -> Subject | None:
        name = base.check_subject_name(name)
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, gallery)
            row = db.execute(
                f"SELECT {SUBJECT_COLUMNS} FROM subjects s JOIN galleries g ON g.id = s.gallery_id "
                "WHERE s.gallery_id = %s AND s.name = %s",
                (gallery_id, name),
            ).fetchone()
            return to_subject(row) if row else None

    def subjects(self, gallery: str, after: int | None = None, limit: int = 100) -> list[Subject]:
        if limit < 1:
            raise GalleryError(f"limit must be at least 1, got {limit}")
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, gallery)
            rows = db.execute(
                f"SELECT {SUBJECT_COLUMNS} FROM subjects s JOIN galleries g ON g.id = s.gallery_id "
                "WHERE s.gallery_id = %s AND s.id > %s ORDER BY s.id LIMIT %s",
                (gallery_id, after or 0, limit),
            ).fetchall()
            return [to_subject(r) for r in rows]

    def update_subject(
        self, gallery: str, subject_id: int, name: str | None = None, metadata: Mapping[str, Any] | None = None
    ) -> Subject:
        new_name = base.check_subject_name(name) if name is not None else None
        text = base.check_metadata(metadata) if metadata is not None else None
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, gallery, lock=True)
            current = self._subject_row(db, gallery_id, gallery, subject_id)
            if new_name is not None and new_name != current.name:
                if db.execute(
                    "SELECT 1 FROM subjects WHERE gallery_id = %s AND name = %s", (gallery_id, new_name)
                ).fetchone():
                    raise ConflictError(
                        f"{self.location}: gallery {gallery!r} has a subject named {new_name!r} already"
                    )
                db.execute("UPDATE subjects SET name = %s WHERE id = %s", (new_name, subject_id))
            if text is not None:
                db.execute("UPDATE subjects SET metadata = %s::jsonb WHERE id = %s", (text, subject_id))
            db.execute("UPDATE subjects SET updated = now() WHERE id = %s", (subject_id,))
            changed = [field for field, value in (("name", new_name), ("metadata", text)) if value is not None]
            self._record(db, audit.SUBJECT_UPDATE, gallery, subject_id, {"changed": changed})
            return self._subject_row(db, gallery_id, gallery, subject_id)

    def delete_subject(self, gallery: str, subject_id: int) -> int:
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, gallery, lock=True)
            self._subject_row(db, gallery_id, gallery, subject_id)
            faces, crops = db.execute(
                "SELECT count(*), count(c.face_id) FROM faces f LEFT JOIN crops c ON c.face_id = f.id "
                "WHERE f.subject_id = %s",
                (subject_id,),
            ).fetchone()
            db.execute("DELETE FROM subjects WHERE id = %s", (subject_id,))
            self._count(db, gallery_id, subjects=-1, faces=-faces, crops=-crops)
            self._record(db, audit.SUBJECT_DELETE, gallery, subject_id, {"faces": int(faces)})
            return int(faces)

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
        with self._transaction() as db:
            if create_gallery:
                made = db.execute(
                    "INSERT INTO galleries (name) VALUES (%s) ON CONFLICT (name) DO NOTHING RETURNING id", (gallery,)
                ).fetchone()
                if made is not None:
                    self._record(db, audit.GALLERY_CREATE, gallery)
            gallery_id, stored, _ = self._gallery_row(db, gallery, lock=True)
            base.check_model(gallery, stored, model)
            model_id = self._bind(db, gallery_id, model) if stored is None else self._model_id(db, model)
            images = [face.image_sha256 for e in enrolments for face in e.faces]
            owners = {
                row[0]: (row[1], row[2])
                for row in db.execute(
                    "SELECT f.image_sha256, f.subject_id, s.name FROM faces f JOIN subjects s ON s.id = f.subject_id "
                    "WHERE f.gallery_id = %s AND f.image_sha256 = ANY(%s) AND f.photo_id IS NULL",
                    (gallery_id, images),
                )
            }
            subject_ids, new_subjects = self._subject_ids(db, gallery_id, [(n, m) for n, m, _ in checked])
            plans = []
            for enrolment, (name, _, vectors) in zip(enrolments, checked):
                subject_id = subject_ids[name]
                new, skipped = [], []
                for face, vector in zip(enrolment.faces, vectors):
                    owner = owners.get(face.image_sha256)
                    if owner is not None:
                        if owner[0] != subject_id:
                            raise ConflictError(
                                f"{face.source or 'image ' + face.image_sha256[:12]} is already enrolled as "
                                f"{owner[1]!r} in gallery {gallery!r}"
                            )
                        skipped.append(face.image_sha256)
                        continue
                    owners[face.image_sha256] = (subject_id, name)
                    new.append((face, vector))
                plans.append((subject_id, new, skipped))
            added_ids = self._insert_faces(db, gallery_id, model_id, model.dim, plans)
            crops = sum(face.crop is not None for _, new, _ in plans for face, _ in new)
            self._count(db, gallery_id, faces=sum(len(ids) for ids in added_ids), crops=crops)
            changed = [subject_id for (subject_id, _, _), ids in zip(plans, added_ids) if ids]
            db.execute("UPDATE subjects SET updated = now() WHERE id = ANY(%s)", (changed,))
            summary = audit.enrolment_detail(
                [(s, len(ids), len(k)) for (s, _, k), ids in zip(plans, added_ids)], new_subjects
            )
            if summary is not None:
                self._record(db, audit.FACES_ADD, gallery, *summary)
            rows = db.execute(
                f"SELECT {SUBJECT_COLUMNS} FROM subjects s JOIN galleries g ON g.id = s.gallery_id "
                "WHERE s.id = ANY(%s)",
                (list({subject_id for subject_id, _, _ in plans}),),
            ).fetchall()
            subjects = {row[0]: to_subject(row) for row in rows}
            faces = {face.id: face for face in self._faces_by_id(db, [i for ids in added_ids for i in ids])}
            return [
                Enrolled(subjects[subject_id], [faces[i] for i in ids], skipped)
                for (subject_id, _, skipped), ids in zip(plans, added_ids)
            ]

    def _faces_by_id(self, db: Any, ids: Sequence[int]) -> list[StoredFace]:
        if not ids:
            return []
        rows = db.execute(
            f"SELECT {FACE_COLUMNS} FROM faces f JOIN models m ON m.id = f.model_id WHERE f.id = ANY(%s) ORDER BY f.id",
            (list(ids),),
        ).fetchall()
        return [to_face(r) for r in rows]

    def add_faces(self, gallery: str, subject_id: int, faces: Sequence[NewFace], model: ModelId) -> Enrolled:
        subject = self.subject(gallery, subject_id)
        enrolled = self.enroll(gallery, subject.name, faces, model, create_gallery=False)
        if enrolled.subject.id != subject_id:
            raise ConflictError(f"{self.location}: subject {subject_id} changed while faces were added; try again")
        return enrolled

    def faces(self, gallery: str, subject_id: int) -> list[StoredFace]:
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, gallery)
            self._subject_row(db, gallery_id, gallery, subject_id)
            rows = db.execute(
                f"SELECT {FACE_COLUMNS} FROM faces f JOIN models m ON m.id = f.model_id "
                "WHERE f.subject_id = %s ORDER BY f.id",
                (subject_id,),
            ).fetchall()
            return [to_face(r) for r in rows]

    def delete_face(self, gallery: str, face_id: int) -> None:
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, gallery, lock=True)
            row = db.execute(
                "DELETE FROM faces f WHERE f.id = %s AND f.gallery_id = %s "
                "RETURNING EXISTS (SELECT 1 FROM crops c WHERE c.face_id = f.id), f.subject_id, "
                "(SELECT pf.person_id FROM people_faces pf WHERE pf.face_id = f.id)",
                (face_id, gallery_id),
            ).fetchone()
            if row is None:
                raise NotFoundError(f"{self.location}: no face {face_id} in gallery {gallery!r}")
            self._count(db, gallery_id, faces=-1, crops=-int(row[0]))
            if row[2] is not None:
                self._refresh_people(db, gallery_id, [row[2]])
            self._record(db, audit.FACE_DELETE, gallery, row[1], {"face": face_id})

    def enrolled_images(self, gallery: str) -> dict[str, str]:
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, gallery)
            rows = db.execute(
                "SELECT f.image_sha256, s.name FROM faces f JOIN subjects s ON s.id = f.subject_id "
                "WHERE f.gallery_id = %s AND f.photo_id IS NULL",
                (gallery_id,),
            )
            return dict(rows.fetchall())

    # ---------------------------------------------------------------------------------------- moving, re-embedding
    def _stream(self, sql: str, params: tuple[Any, ...], convert: Callable[[Sequence[Any]], Any]) -> Iterator[Any]:
        """Rows of a large query through a server-side cursor, in one snapshot."""
        with self._transaction() as db, db.cursor(name="gfn_stream") as cursor:
            cursor.itersize = 1000
            cursor.execute(sql, params)
            for row in cursor:
                yield convert(row)

    def export_faces(self, gallery: str) -> Iterator[ExportedFace]:
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, gallery)

        def convert(row: Sequence[Any]) -> ExportedFace:
            face = NewFace(
                row[2].to_numpy().astype(np.float32), row[3], row[4], row[5], bytes(row[6]) if row[6] else None
            )
            return ExportedFace(gallery, row[0], row[1], face, ModelId(row[7], row[8], row[9], bool(row[10])))

        yield from self._stream(
            "SELECT s.name, s.metadata, f.embedding::vector, f.image_sha256, f.source, f.detection, c.png, "
            "m.name, m.sha256, m.dim, m.flip FROM faces f JOIN subjects s ON s.id = f.subject_id "
            "JOIN models m ON m.id = f.model_id LEFT JOIN crops c ON c.face_id = f.id "
            "WHERE f.gallery_id = %s AND f.photo_id IS NULL ORDER BY f.subject_id, f.id",
            (gallery_id,),
            convert,
        )

    def crops(self, gallery: str) -> Iterator[tuple[int, bytes]]:
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, gallery)
        yield from self._stream(
            "SELECT f.id, c.png FROM faces f JOIN crops c ON c.face_id = f.id WHERE f.gallery_id = %s ORDER BY f.id",
            (gallery_id,),
            lambda row: (int(row[0]), bytes(row[1])),
        )

    def replace_embeddings(self, gallery: str, embeddings: Mapping[int, np.ndarray], model: ModelId) -> None:
        vectors = {int(i): base.check_embedding(v, model, f"face {i}") for i, v in embeddings.items()}
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, gallery, lock=True)
            stored = {r[0] for r in db.execute("SELECT id FROM faces WHERE gallery_id = %s", (gallery_id,))}
            base.check_replacement(self.location, gallery, stored, vectors.keys())
            model_id = self._bind(db, gallery_id, model)
            with db.cursor() as cursor:
                cursor.executemany(
                    f"UPDATE faces SET embedding = %s::{self.vector_type}, dim = %s, model_id = %s WHERE id = %s",
                    [(v, model.dim, model_id, i) for i, v in vectors.items()],
                )
            self._refresh_people(db, gallery_id)
            self._record(db, audit.GALLERY_REEMBED, gallery, detail={"faces": len(vectors), "model": model.describe()})

    # ------------------------------------------------------------------------------------------------ API keys
    def _key_row(self, db: Any, key_id: int) -> ApiKey:
        row = db.execute(f"{KEYS} WHERE k.id = %s", (key_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"{self.location}: no API key {key_id}")
        return to_key(row)

    def create_key(
        self, role: Role, gallery: str | None = None, label: str = "", permissions: Iterable[str] = ()
    ) -> tuple[ApiKey, str]:
        role = base.check_role(role)
        label = base.check_label(label)
        allowed = base.check_permissions(permissions)
        secret, digest = base.new_secret()
        with self._transaction() as db:
            gallery_id = self._gallery_row(db, gallery)[0] if gallery is not None else None
            row = db.execute(
                "INSERT INTO api_keys (secret_sha256, role, gallery_id, label, permissions) "
                "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                (digest, role, gallery_id, label, base.permissions_text(allowed)),
            ).fetchone()
            key = self._key_row(db, int(row[0]))
            self._record(db, audit.KEY_CREATE, gallery, detail=audit.key_detail(key))
            return key, secret

    def keys(self) -> list[ApiKey]:
        with self._transaction() as db:
            return [to_key(r) for r in db.execute(f"{KEYS} ORDER BY k.id").fetchall()]

    def revoke_key(self, key_id: int) -> ApiKey:
        with self._transaction() as db:
            before = self._key_row(db, key_id)
            db.execute("UPDATE api_keys SET revoked = now() WHERE id = %s AND revoked IS NULL", (key_id,))
            if not before.revoked:
                self._record(db, audit.KEY_REVOKE, before.gallery, detail={"key": key_id})
            return self._key_row(db, key_id)

    def authenticate(self, secret: str) -> ApiKey | None:
        digest = base.hash_secret(secret)
        with self._transaction() as db:
            row = db.execute(f"{KEYS} WHERE k.secret_sha256 = %s AND k.revoked IS NULL", (digest,)).fetchone()
            if row is None:
                return None
            key = to_key(row)
            if key.gallery_id is not None and key.gallery is None:
                return None  # its gallery is gone (deleted without the cascade): the key reaches nothing
            used = db.execute(  # at most once a minute, so that authenticating stays (nearly always) a read
                "UPDATE api_keys SET last_used = now() WHERE id = %s AND "
                f"(last_used IS NULL OR last_used < now() - interval '{KEY_USE_RESOLUTION_S} seconds') "
                "RETURNING last_used",
                (key.id,),
            ).fetchone()
            return dataclasses.replace(key, last_used=to_iso(used[0])) if used is not None else key

    # ------------------------------------------------------------------------------------------------ audit trail
    def _record(
        self, db: Any, action: str, gallery: str | None, subject_id: int | None = None, detail: Any = None
    ) -> None:
        """Record a change in the audit trail, in the transaction that makes it."""
        actor = audit.current_actor()
        db.execute(
            "INSERT INTO audit (actor, key_id, via, action, gallery, subject_id, detail) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb)",
            (actor.name, actor.key_id, actor.via, action, gallery, subject_id, audit.detail_json(detail)),
        )

    def audit(self, gallery: str | None = None, since: str | None = None, limit: int | None = None) -> list[AuditEvent]:
        where, params = audit.event_filter(gallery, since, "%s")
        with self._transaction() as db:
            rows = db.execute(
                f"SELECT * FROM (SELECT {audit.COLUMNS} FROM audit {where} ORDER BY id DESC LIMIT %s) AS e ORDER BY id",
                (*params, limit),
            ).fetchall()
        return [audit.event(row, to_iso(row[1]) or "") for row in rows]
