"""The people step of the schemas (SQLite v4 -> v5, PostgreSQL v2 -> v3) on galleries made by the hardened stores:
the audit trail, keys' permissions and keys' galleries come through whole, and the upgraded gallery takes people."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import psycopg

from ghostfacenets.gallery import GalleryStore, open_store
from ghostfacenets.gallery.base import hash_secret
from ghostfacenets.gallery.people import PhotoFaces, UnlabelledFace
from ghostfacenets.gallery.postgres import SCHEMA_VERSION as POSTGRES_VERSION
from ghostfacenets.gallery.sqlite import SCHEMA_VERSION as SQLITE_VERSION
from ghostfacenets.people import PeopleLibrary
from tests.helpers.galleries import MODEL, UNDO_POSTGRES_PEOPLE, faces, unit, v3_sqlite_file
from tests.helpers.people import SETTINGS

# What the v3 -> v4 step of ghostfacenets' hardened store added, written out as that version made it.
V4_STEP = """
ALTER TABLE api_keys ADD COLUMN permissions TEXT NOT NULL DEFAULT '';
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, actor TEXT NOT NULL, key_id INTEGER, via TEXT NOT NULL,
    action TEXT NOT NULL, gallery TEXT, subject_id INTEGER, detail TEXT NOT NULL
);
CREATE INDEX audit_gallery ON audit(gallery);
CREATE INDEX audit_at ON audit(at);
UPDATE api_keys SET permissions = 'list-subjects';
INSERT INTO api_keys (secret_sha256, role, gallery_id, label, created, permissions)
    VALUES ('{admin}', 'admin', NULL, 'ops', '2024-02-01T00:00:00+00:00', '');
INSERT INTO audit (at, actor, key_id, via, action, gallery, subject_id, detail) VALUES
    ('2024-02-01T00:00:00+00:00', 'cli root', NULL, 'gallery enroll', 'faces.add', 'g', 1,
     '{{"faces":3,"new_subjects":1,"skipped":0,"subjects":1}}'),
    ('2024-02-02T00:00:00+00:00', 'key 2', 2, 'POST /v1/keys', 'key.create', NULL, NULL, '{{"role":"identify"}}');
PRAGMA user_version = 4;
"""


def _takes_people(store: GalleryStore, vectors: np.ndarray) -> None:
    """The upgraded gallery: its enrolled subject is still found, and photos without names are added and grouped,
    their addition recorded after the events the file held."""
    before = store.audit()
    assert store.search("g", vectors[0], MODEL, 1)[0][0].name == "ann"
    library = PeopleLibrary(store, "g", model=MODEL, settings=SETTINGS)
    new = unit(np.random.default_rng(11), 2)
    added = library.add([PhotoFaces("new.jpg", [UnlabelledFace(v, 1.0) for v in new])])
    assert sum(len(ids) for ids in added.added.values()) == 2 and library.summary().faces == 2
    after = store.audit()
    assert after[: len(before)] == before and "people.add" in {e.action for e in after[len(before) :]}


def test_a_v4_sqlite_file_gains_people_and_keeps_its_audit_trail_and_keys(tmp_path: Path) -> None:
    path = tmp_path / "v4.sqlite"
    vectors = unit(np.random.default_rng(10), 3)
    v3_sqlite_file(path, vectors, crops=True, key="gfn_scoped")
    db = sqlite3.connect(path)
    db.executescript(V4_STEP.format(admin=hash_secret("gfn_admin")))
    db.close()
    with open_store(path) as store:
        scoped, admin = store.authenticate("gfn_scoped"), store.authenticate("gfn_admin")
        assert scoped is not None and scoped.role == "identify" and scoped.gallery == "g"
        assert scoped.permissions == ("list-subjects",)
        assert admin is not None and (admin.role, admin.gallery, admin.label) == ("admin", None, "ops")
        events = store.audit()
        assert [(e.id, e.time[:10], e.actor, e.key_id, e.via, e.action, e.gallery, e.subject_id) for e in events] == [
            (1, "2024-02-01", "cli root", None, "gallery enroll", "faces.add", "g", 1),
            (2, "2024-02-02", "key 2", 2, "POST /v1/keys", "key.create", None, None),
        ]
        assert events[0].detail == {"faces": 3, "new_subjects": 1, "skipped": 0, "subjects": 1}
        assert dict(store.crops("g")) == {i: f"png-{i}".encode() for i in (1, 2, 3)}
        _takes_people(store, vectors)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SQLITE_VERSION
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    db.close()


def test_a_v2_postgres_schema_gains_people_and_keeps_its_audit_trail_and_keys(pg_url: str) -> None:
    vectors = unit(np.random.default_rng(12), 3)
    with open_store(pg_url) as store:
        store.enroll("g", "ann", faces(vectors, "ann"), MODEL)
        store.create_key("identify", "g", label="scoped", permissions=["list-subjects"])
        _admin, secret = store.create_key("admin", label="ops")
        ann = store.find_subject("g", "ann")
        assert ann is not None
        store.delete_face("g", store.faces("g", ann.id)[0].id)
        keys, events = store.keys(), store.audit()
    assert {k.label: (k.role, k.gallery, k.permissions) for k in keys} == {
        "scoped": ("identify", "g", ("list-subjects",)),
        "ops": ("admin", None, ()),
    }
    assert [e.action for e in events] == ["gallery.create", "faces.add", "key.create", "key.create", "face.delete"]
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute(UNDO_POSTGRES_PEOPLE + "; UPDATE ghostfacenets.schema_version SET version = 2")
    with open_store(pg_url) as store:
        assert store.keys() == keys and store.audit() == events
        admin = store.authenticate(secret)
        assert admin is not None and admin.role == "admin" and admin.gallery is None
        _takes_people(store, vectors[1:])
    with psycopg.connect(pg_url, autocommit=True) as db:
        assert db.execute("SELECT version FROM ghostfacenets.schema_version").fetchall() == [(POSTGRES_VERSION,)]


def test_a_v3_postgres_schema_keeps_its_people_and_gains_the_pinned_index_and_inline_sums(pg_url: str) -> None:
    """v3 -> v4: the pinned faces get an index of their own (placing a face no longer scans the gallery's faces) and
    people's sums stay in their rows; the people, their names and sums come through whole."""
    rng = np.random.default_rng(13)
    vectors = unit(rng, 1) + 0.05 * unit(rng, 4)  # one person's faces
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with open_store(pg_url) as store:
        library = PeopleLibrary(store, "g", model=MODEL, settings=SETTINGS)
        library.add([PhotoFaces(f"{i}.jpg", [UnlabelledFace(v, 1.0)]) for i, v in enumerate(vectors[:3])])
        (person,) = library.people()
        library.name(person.id, "Ada")
        before = library.people()
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute(
            "DROP INDEX ghostfacenets.people_faces_pinned; "
            "ALTER TABLE ghostfacenets.people ALTER COLUMN total SET STORAGE EXTENDED; "
            "UPDATE ghostfacenets.schema_version SET version = 3"
        )
    with open_store(pg_url) as store:
        library = PeopleLibrary(store, "g", model=MODEL)
        assert library.people() == before
        library.add([PhotoFaces("3.jpg", [UnlabelledFace(vectors[3], 1.0)])])
        (ada,) = library.people()
        assert (ada.name, ada.faces) == ("Ada", 4)
    with psycopg.connect(pg_url, autocommit=True) as db:
        assert db.execute("SELECT version FROM ghostfacenets.schema_version").fetchall() == [(POSTGRES_VERSION,)]
        assert db.execute("SELECT to_regclass('ghostfacenets.people_faces_pinned')").fetchone()[0] is not None
        storage = db.execute(
            "SELECT attstorage FROM pg_attribute "
            "WHERE attrelid = 'ghostfacenets.people'::regclass AND attname = 'total'"
        ).fetchone()
        assert storage == ("m",)
