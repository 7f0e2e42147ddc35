"""Issue 21 in the gallery layer, on both backends where both have it: the audit trail, keys' permissions and their
gallery scope by id (failing closed), private SQLite files and erasure that leaves nothing in any file of the
database, and the migrations that bring these (SQLite v3 -> v4, PostgreSQL v1 -> v2)."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ghostfacenets.gallery import GalleryError, GalleryStore, NewFace, open_store
from ghostfacenets.gallery.audit import Actor, acting_as
from ghostfacenets.gallery.postgres import SCHEMA_VERSION as POSTGRES_VERSION
from ghostfacenets.gallery.sqlite import SCHEMA_VERSION as SQLITE_VERSION
from tests.helpers.galleries import MODEL, UNDO_POSTGRES_PEOPLE, faces, sha, unit, v3_sqlite_file

NAME, METADATA = "Zelda Quux-Marker", {"passport": "PX-7731-marker"}  # what an erasure must leave nowhere


def test_the_audit_trail_records_every_change_with_its_actor_and_no_personal_data(store: GalleryStore) -> None:
    rng = np.random.default_rng(0)
    key = Actor(7, "key 7", "POST /v1/galleries/staff/subjects")
    with acting_as(key):
        store.create_gallery("staff")
        zelda = store.add_subject("staff", NAME, METADATA)
        store.add_faces("staff", zelda.id, faces(unit(rng, 2), "zelda", crops=True), MODEL)
        store.update_subject("staff", zelda.id, name=NAME + " B", metadata={"passport": "other-marker"})
        store.enroll("staff", "bob", faces(unit(rng, 1), "bob"), MODEL)
        store.enroll("staff", "bob", faces(unit(rng, 1), "bob"), MODEL)  # the same image again: no change
        store.delete_face("staff", store.faces("staff", zelda.id)[0].id)
        api_key, _ = store.create_key("identify", "staff", permissions=["see-candidates"])
        store.revoke_key(api_key.id)
        store.delete_subject("staff", zelda.id)
    bob = store.find_subject("staff", "bob")
    assert bob is not None
    store.replace_embeddings("staff", {f.id: unit(rng, 1)[0] for f in store.faces("staff", bob.id)}, MODEL)  # no actor
    store.create_gallery("other")
    store.delete_gallery("other")

    events = store.audit()
    assert [e.action for e in events] == [
        "gallery.create", "subject.create", "faces.add", "subject.update", "faces.add", "face.delete",
        "key.create", "key.revoke", "subject.delete", "gallery.reembed", "gallery.create", "gallery.delete",
    ]  # fmt: skip
    by_key = events[:9]
    assert all((e.key_id, e.actor, e.via) == (7, "key 7", "POST /v1/galleries/staff/subjects") for e in by_key)
    assert all(e.key_id is None and e.actor.startswith("python ") for e in events[9:])  # the Python API's user
    assert [e.subject_id for e in events[1:4]] == [zelda.id] * 3 and events[8].subject_id == zelda.id
    assert events[2].detail == {"subjects": 1, "new_subjects": 0, "faces": 2, "skipped": 0}
    assert events[3].detail == {"changed": ["name", "metadata"]}
    assert events[4].detail["new_subjects"] == 1 and events[6].detail["key"] == api_key.id
    assert events[6].detail["permissions"] == ["see-candidates"] and events[11].detail == {"subjects": 0, "faces": 0}
    times = [e.time for e in events]
    assert times == sorted(times) and all(t.endswith("+00:00") for t in times)
    # never a name, metadata, image hash or embedding
    recorded = json.dumps([e.to_dict() for e in events])
    for private in ("Zelda", "marker", sha("zelda-0"), "png-"):
        assert private not in recorded
    # reading it: by gallery, from a time, the last few
    assert [e.action for e in store.audit("other")] == ["gallery.create", "gallery.delete"]
    assert store.audit(since="2000-01-01") == events and store.audit(since="1h") == events
    assert store.audit(since="2999-01-01") == []
    assert [e.id for e in store.audit(limit=2)] == [e.id for e in events[-2:]]
    with pytest.raises(GalleryError, match="neither an ISO 8601"):
        store.audit(since="yesterday")


def test_keys_carry_their_permissions(store: GalleryStore) -> None:
    plain, _ = store.create_key("identify")
    wide, _ = store.create_key("identify", permissions=["list-subjects", "see-candidates", "list-subjects"])
    admin, _ = store.create_key("admin")
    assert (plain.permissions, wide.permissions) == ((), ("list-subjects", "see-candidates"))
    assert not plain.can("see-candidates") and wide.can("see-candidates") and admin.can("list-subjects")
    listed = store.keys()
    assert [k.permissions for k in listed] == [(), ("list-subjects", "see-candidates"), ()]
    with pytest.raises(GalleryError, match="unknown permission"):
        store.create_key("identify", permissions=["see-everything"])


def _remove_gallery_row_without_cascade(db: str, gallery: str) -> None:
    """Delete a gallery's row the way a careless administrator might: foreign keys (and their cascade) off."""
    if db.startswith("postgresql"):
        import psycopg

        with psycopg.connect(db, autocommit=True) as connection:
            connection.execute("SET session_replication_role = replica")  # no foreign-key triggers
            connection.execute("DELETE FROM ghostfacenets.galleries WHERE name = %s", (gallery,))
        return
    connection = sqlite3.connect(db)
    connection.execute("PRAGMA foreign_keys = OFF")
    connection.execute("DELETE FROM galleries WHERE name = ?", (gallery,))
    connection.commit()
    connection.close()


def test_a_gallery_scoped_key_is_denied_once_its_gallery_row_is_gone(db: str) -> None:
    with open_store(db) as store:
        store.create_gallery("scoped")
        store.create_gallery("elsewhere")
        key, secret = store.create_key("admin", "scoped")
        found = store.authenticate(secret)
        assert found is not None and (found.gallery, found.gallery_id) == ("scoped", key.gallery_id)
        assert found.reaches("scoped") and not found.reaches("elsewhere")
    _remove_gallery_row_without_cascade(db, "scoped")
    with open_store(db) as store:
        assert store.authenticate(secret) is None  # not a key of every gallery
        store.create_gallery("scoped")  # the same name, another gallery (another id)
        assert store.authenticate(secret) is None
        (listed,) = store.keys()
        assert listed.gallery_id == key.gallery_id and listed.gallery is None and not listed.reaches("scoped")


# ------------------------------------------------------------------------------------------------ SQLite files
@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, under which a plain open() makes files everyone may read."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def _modes(folder: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir() if p.is_file()}


def test_sqlite_databases_and_exports_are_created_private(tmp_path: Path, umask_022: None) -> None:
    from ghostfacenets.gallery.transfer import export_gallery

    path = tmp_path / "g.sqlite"
    with open_store(path) as store:
        store.enroll("g", "ann", faces(unit(np.random.default_rng(1), 2), "ann"), MODEL)
        export_gallery(store, "g", tmp_path / "g.jsonl")
        assert {"g.sqlite", "g.sqlite-wal", "g.sqlite-shm", "g.jsonl"} <= set(_modes(tmp_path))
        assert set(_modes(tmp_path).values()) == {0o600}, _modes(tmp_path)


def _database_bytes(path: Path) -> bytes:
    """Every file of the SQLite database at ``path`` (the file, its WAL, its shared-memory index, a journal)."""
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def test_a_deleted_subject_is_in_no_file_of_the_database_while_it_is_open(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite"
    rng = np.random.default_rng(2)
    vectors = unit(rng, 2)
    crops = [NewFace(v, sha(f"zelda-{i}"), "z.jpg", None, b"PNG-zelda-crop-marker") for i, v in enumerate(vectors)]
    with open_store(path) as store, open_store(path) as other:  # another connection holds the file open too
        store.enroll("g", "keep", faces(unit(rng, 1), "keep"), MODEL)
        zelda = store.enroll("g", NAME, crops, MODEL, metadata=METADATA).subject
        assert other.search("g", vectors[:1], MODEL, 1)[0][0].name == NAME  # read: other sees it, then lets go
        assert NAME.encode() in _database_bytes(path)
        store.delete_subject("g", zelda.id)
        data = _database_bytes(path)
        for private in (NAME.encode(), b"PX-7731-marker", b"zelda-crop-marker", vectors[0].astype("<f4").tobytes()):
            assert private not in data, private
        # a rename erases the old name; replacing metadata, the old metadata
        bob = store.enroll("g", "Bob Oldname-Marker", faces(unit(rng, 1), "bob"), MODEL, {"a": "old-meta-marker"})
        store.update_subject("g", bob.subject.id, name="Bob", metadata={"a": "new"})
        data = _database_bytes(path)
        assert b"Oldname-Marker" not in data and b"old-meta-marker" not in data
        assert other.find_subject("g", "Bob") is not None and store.find_subject("g", "keep") is not None


# ------------------------------------------------------------------------------------------------ migrations
def test_a_v3_sqlite_file_gains_permissions_and_the_audit_trail(tmp_path: Path) -> None:
    path = tmp_path / "v3.sqlite"
    secret = "gfn_an-old-key"
    v3_sqlite_file(path, unit(np.random.default_rng(3), 2), key=secret)
    with open_store(path) as store:
        key = store.authenticate(secret)
        assert key is not None and key.permissions == () and key.gallery == "g"  # no new powers for old keys
        assert store.audit() == [] and store.gallery("g").faces == 2
        store.delete_gallery("g")
        assert [e.action for e in store.audit()] == ["gallery.delete"]
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SQLITE_VERSION
    db.close()


def test_a_v1_postgres_schema_gains_permissions_and_the_audit_trail(pg_url: str) -> None:
    import psycopg

    with open_store(pg_url) as store:
        store.enroll("g", "ann", faces(unit(np.random.default_rng(4), 2), "ann"), MODEL)
        _key, secret = store.create_key("identify", "g")
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute(
            UNDO_POSTGRES_PEOPLE + "; DROP TABLE ghostfacenets.audit; ALTER TABLE ghostfacenets.api_keys "
            "DROP COLUMN permissions; UPDATE ghostfacenets.schema_version SET version = 1"
        )
    with open_store(pg_url) as store:
        key = store.authenticate(secret)
        assert key is not None and key.permissions == () and key.gallery == "g"
        assert store.audit() == [] and store.gallery("g").faces == 2
        store.delete_gallery("g")
        assert [e.action for e in store.audit()] == ["gallery.delete"]
    with psycopg.connect(pg_url, autocommit=True) as db:
        assert db.execute("SELECT version FROM ghostfacenets.schema_version").fetchall() == [(POSTGRES_VERSION,)]
