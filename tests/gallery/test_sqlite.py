"""What only the SQLite backend has: its file format (WAL, float32 blobs), the migration of v1 and v2 files, deleted
rows overwritten on disk, lock errors, files that are not galleries, and the search cache that other processes'
enrolments extend."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ghostfacenets.gallery import DEFAULT_GALLERY, Enrolment, GalleryError, NotFoundError, open_store
from ghostfacenets.gallery.sqlite import SCHEMA_VERSION, SQLiteStore
from tests.helpers.galleries import MODEL, brute_force, call_store, enrol_pairs, faces, sha, unit, v3_sqlite_file

# The v1 schema of ghostfacenets 0.1 (one model per file), written out here as that version created it.
V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE identities (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created TEXT NOT NULL);
CREATE TABLE embeddings (
    id INTEGER PRIMARY KEY,
    identity_id INTEGER NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    embedding BLOB NOT NULL, dim INTEGER NOT NULL, model_name TEXT NOT NULL, model_sha256 TEXT NOT NULL,
    image_sha256 TEXT NOT NULL, source TEXT, face TEXT, created TEXT NOT NULL,
    UNIQUE (model_sha256, image_sha256)
);
CREATE INDEX embeddings_identity ON embeddings(identity_id);
PRAGMA user_version = 1;
"""


def _v1_file(path: Path, people: dict[str, np.ndarray]) -> None:
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA)
    model = {"name": MODEL.name, "sha256": MODEL.sha256, "dim": MODEL.dim, "flip": MODEL.flip}
    db.execute("INSERT INTO meta VALUES ('model', ?)", (json.dumps(model),))
    for i, (name, vectors) in enumerate(people.items(), start=1):
        db.execute("INSERT INTO identities VALUES (?, ?, '2024-01-02T03:04:05+00:00')", (i, name))
        for j, v in enumerate(vectors):
            db.execute(
                "INSERT INTO embeddings (identity_id, embedding, dim, model_name, model_sha256, image_sha256, source, "
                "face, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, '2024-01-02T03:04:05+00:00')",
                (i, v.astype("<f4").tobytes(), MODEL.dim, MODEL.name, MODEL.sha256, sha(f"{name}-{j}"), f"{name}.jpg",
                 json.dumps({"box": [1, 2, 3, 4]})),
            )  # fmt: skip
    db.commit()
    db.close()


def test_a_v1_file_becomes_gallery_default(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    people = {"ann": unit(rng, 2), "bob": unit(rng, 3)}
    path = tmp_path / "old.sqlite"
    _v1_file(path, people)
    with open_store(str(path), create=False) as store:
        info = store.gallery(DEFAULT_GALLERY)
        assert (info.model, info.subjects, info.faces, info.created) == (MODEL, 2, 5, "2024-01-02T03:04:05+00:00")
        bob = store.find_subject(DEFAULT_GALLERY, "bob")
        assert bob is not None and bob.faces == 3 and bob.metadata == {}
        stored = store.faces(DEFAULT_GALLERY, bob.id)
        assert [f.image_sha256 for f in stored] == [sha(f"bob-{j}") for j in range(3)]
        assert stored[0].detection == {"box": [1, 2, 3, 4]} and stored[0].source == "bob.jpg"
        best = store.search(DEFAULT_GALLERY, people["bob"][1], MODEL, 2)[0]
        assert best[0].name == "bob" and best[0].similarity == pytest.approx(1.0, abs=1e-6)
        new = store.enroll(DEFAULT_GALLERY, "cy", faces(unit(rng, 1), "cy"), MODEL)
        assert new.subject.id > bob.id
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} >= {"galleries", "faces"}
    assert not {"meta", "identities", "embeddings"} & {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    db.close()


def test_the_file_format(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite"
    vectors = unit(np.random.default_rng(1), 2)
    with SQLiteStore(path) as store:
        store.enroll("g", "ann", faces(vectors, "ann", crops=True), MODEL)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rows = db.execute("SELECT embedding, image_sha256 FROM faces ORDER BY id").fetchall()
    for (blob, image), v, i in zip(rows, vectors, range(2)):
        np.testing.assert_array_equal(np.frombuffer(blob, "<f4"), v)
        assert image == sha(f"ann-{i}")
    assert [r[0] for r in db.execute("SELECT png FROM crops ORDER BY face_id")] == [b"png-ann-0", b"png-ann-1"]
    db.close()


def test_deleted_rows_leave_no_trace_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite"
    secret_vector = unit(np.random.default_rng(2), 1)
    with SQLiteStore(path) as store:
        store.enroll("g", "keep", faces(unit(np.random.default_rng(3), 1), "keep"), MODEL)
        gone = store.enroll("g", "Forget Me", faces(secret_vector, "forget", crops=True), MODEL)
        store.delete_subject("g", gone.subject.id)
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    data = path.read_bytes()
    assert b"Forget Me" not in data and secret_vector.astype("<f4").tobytes() not in data and b"png-forget" not in data


def test_keys_are_stored_as_hashes(tmp_path: Path) -> None:
    import hashlib

    path = tmp_path / "g.sqlite"
    with SQLiteStore(path) as store:
        _key, secret = store.create_key("admin")
    db = sqlite3.connect(path)
    assert db.execute("SELECT secret_sha256 FROM api_keys").fetchall() == [
        (hashlib.sha256(secret.encode()).hexdigest(),)
    ]
    db.close()
    assert all(secret.encode() not in p.read_bytes() for p in tmp_path.iterdir())


def test_files_that_are_not_galleries(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no such gallery file"):
        SQLiteStore(tmp_path / "missing.sqlite", create=False)
    assert not (tmp_path / "missing.sqlite").exists()
    junk = tmp_path / "photo.sqlite"
    junk.write_bytes(b"\xff\xd8\xff\xe0" + bytes(2000))
    with pytest.raises(GalleryError, match="not a usable gallery"):
        SQLiteStore(junk)
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(GalleryError, match="not a ghostfacenets gallery"):
        SQLiteStore(other)
    newer = tmp_path / "newer.sqlite"
    db = sqlite3.connect(newer)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(GalleryError, match="schema v99 is newer"):
        SQLiteStore(newer)
    with pytest.raises(GalleryError, match="is a folder"):
        SQLiteStore(tmp_path)
    with pytest.raises(GalleryError, match="apply to PostgreSQL"):
        open_store(str(tmp_path / "g.sqlite"), ef_search=10)
    store = SQLiteStore(tmp_path / "g.sqlite")
    store.close()
    with pytest.raises(GalleryError, match="closed"):
        store.galleries()


@pytest.fixture
def locked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A gallery file while another connection holds its write lock (busy timeout cut to 50 ms)."""
    import ghostfacenets.gallery.sqlite.connection as sqlite_module

    monkeypatch.setattr(sqlite_module, "BUSY_TIMEOUT_S", 0.05)
    path = tmp_path / "g.sqlite"
    with SQLiteStore(path) as store:
        store.enroll(DEFAULT_GALLERY, "ann", faces(unit(np.random.default_rng(4), 1), "ann"), MODEL)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    yield path
    other.execute("ROLLBACK")
    other.close()


def test_a_locked_file_gives_one_clear_error(locked: Path) -> None:
    with SQLiteStore(locked) as store:
        with pytest.raises(GalleryError, match="database is locked"):  # not "cannot rollback" on top of it
            store.enroll(DEFAULT_GALLERY, "eve", faces(unit(np.random.default_rng(5), 1), "eve"), MODEL)
        ann = store.find_subject(DEFAULT_GALLERY, "ann")  # reading still works
        assert ann is not None
        with pytest.raises(GalleryError, match="database is locked"):
            store.delete_subject(DEFAULT_GALLERY, ann.id)


def test_a_locked_file_through_the_cli(locked: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ghostfacenets.cli import main

    assert main(["gallery", "--db", str(locked), "remove", "ann"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "database is locked" in err and err.startswith("ghostfacenets gallery: error:")


def test_a_v2_file_gains_the_epoch(tmp_path: Path) -> None:
    path = tmp_path / "v2.sqlite"
    vectors = unit(np.random.default_rng(6), 3)
    v3_sqlite_file(path, vectors)
    db = sqlite3.connect(path)
    db.executescript("DROP INDEX faces_gallery; ALTER TABLE galleries DROP COLUMN epoch; PRAGMA user_version = 2;")
    db.close()
    with SQLiteStore(path) as store:
        assert store.search("g", vectors[1], MODEL, 1)[0][0].name == "ann" and store.gallery("g").faces == 3
        ann = store.find_subject("g", "ann")
        assert ann is not None
        store.delete_face("g", store.faces("g", ann.id)[0].id)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("SELECT generation, epoch FROM galleries").fetchall() == [(1, 1)]  # the deletion
    plan = db.execute("EXPLAIN QUERY PLAN SELECT embedding FROM faces WHERE gallery_id = 1 AND id > 0 ORDER BY id")
    assert [row[-1] for row in plan] == ["SEARCH faces USING INDEX faces_gallery (gallery_id=? AND rowid>?)"]
    db.close()


def test_a_v3_file_gains_people_and_keeps_its_faces_crops_and_ids(tmp_path: Path) -> None:
    """The people step rebuilds faces: every face and crop stays, ids are never reused, enrolled images stay
    unique, and the file's references hold."""
    path = tmp_path / "v3.sqlite"
    vectors = unit(np.random.default_rng(8), 4)
    v3_sqlite_file(path, vectors, crops=True)
    db = sqlite3.connect(path)
    db.execute("PRAGMA foreign_keys = ON")
    db.execute("DELETE FROM faces WHERE id = 4")  # the highest id: its number must not come back
    db.commit()
    db.close()
    with SQLiteStore(path) as store:
        ann = store.find_subject("g", "ann")
        assert ann is not None and [f.id for f in store.faces("g", ann.id)] == [1, 2, 3]
        assert dict(store.crops("g")) == {i: f"png-{i}".encode() for i in (1, 2, 3)}
        assert store.search("g", vectors[2], MODEL, 1)[0][0].similarity == pytest.approx(1.0, abs=1e-6)
        assert store.enroll("g", "ann", faces(vectors[:1], "ann-x"), MODEL).added[0].id == 5
        with pytest.raises(GalleryError, match="already enrolled"):
            store.enroll("g", "bob", faces(vectors[1:2], "ann-x"), MODEL)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    assert {"photos", "people", "people_rejections"} <= {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    db.close()


def _cache(store: SQLiteStore) -> Any:
    """The one gallery matrix the store holds in memory."""
    (matrix,) = store._matrices.values()
    return matrix


def test_the_search_cache_appends_what_another_process_enrols(tmp_path: Path) -> None:
    """Faces added by another process are appended to the cache (the same buffer, no reload); deletions,
    re-embeddings and renames reload it whole. Every search equals brute force over what is stored."""
    db = str(tmp_path / "g.sqlite")
    rng = np.random.default_rng(7)
    people = {f"p{i}": unit(rng, 1 + i % 3) for i in range(30)}
    queries = unit(rng, 8)
    elsewhere = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))

    def check(store: SQLiteStore) -> None:
        for query, found in zip(queries, store.search("g", queries, MODEL, 5)):
            expected = brute_force({n: v for n, v in people.items() if len(v)}, query, 5)
            assert [c.name for c in found] == [n for n, _ in expected]
            np.testing.assert_allclose([c.similarity for c in found], [s for _, s in expected], atol=1e-5)

    with elsewhere, SQLiteStore(db) as store:
        store.enroll_many("g", [Enrolment(n, faces(v, n)) for n, v in people.items()], MODEL)
        store.add_subject("g", "late")  # no face yet
        check(store)
        loaded = _cache(store)
        # another process: new subjects, a face for an old subject (rows no longer grouped), one for "late"
        people["new"], people["late"] = unit(rng, 2), unit(rng, 1)
        more = unit(rng, 1)
        people["p3"] = np.concatenate([people["p3"], more])
        enrolments = [Enrolment("new", faces(people["new"], "new")), Enrolment("late", faces(people["late"], "late")),
                      Enrolment("p3", faces(more, "p3-more"))]  # fmt: skip
        elsewhere.submit(call_store, db, "enroll_many", "g", enrolments, MODEL).result()
        check(store)
        appended = _cache(store)
        assert appended.rows is loaded.rows and appended.count == loaded.count + 4 and appended.order is not None
        assert loaded.count == sum(len(v) for n, v in people.items()) - 4  # the earlier snapshot is unchanged
        # deleting a face reloads
        p5 = store.find_subject("g", "p5")
        assert p5 is not None
        elsewhere.submit(call_store, db, "delete_face", "g", store.faces("g", p5.id)[0].id).result()
        people["p5"] = people["p5"][1:]
        check(store)
        assert _cache(store).rows is not appended.rows
        # renaming reloads the names
        elsewhere.submit(call_store, db, "update_subject", "g", p5.id, "Pam").result()
        people["Pam"] = people.pop("p5")
        check(store)
        # re-embedding reloads the vectors
        ids = [f.id for s in store.subjects("g", limit=1000) for f in store.faces("g", s.id)]
        names = [s.name for s in store.subjects("g", limit=1000) for _ in store.faces("g", s.id)]
        new_vectors = unit(rng, len(ids))
        elsewhere.submit(call_store, db, "replace_embeddings", "g", dict(zip(ids, new_vectors)), MODEL).result()
        people = {n: np.stack([v for m, v in zip(names, new_vectors) if m == n]) for n in set(names)}
        check(store)


def test_a_search_sees_each_enrolment_whole(tmp_path: Path) -> None:
    """Another process enrols pairs of near-identical subjects, one transaction per pair, while this one searches
    with the caching store: a search finds both of a pair or neither, never one alone."""
    db = str(tmp_path / "g.sqlite")
    rng = np.random.default_rng(8)
    pairs = unit(rng, 60).reshape(30, 2, MODEL.dim)
    pairs[:, 1] = pairs[:, 0] + 0.05 * pairs[:, 1]
    pairs /= np.linalg.norm(pairs, axis=2, keepdims=True)
    seen: list[int] = []  # how many of the pair each search found
    with SQLiteStore(db) as store:
        background = [Enrolment(f"bg{i}", faces(v[None], f"bg{i}")) for i, v in enumerate(unit(rng, 50))]
        store.enroll_many("g", background, MODEL)
        context = multiprocessing.get_context("spawn")
        writer = context.Process(target=enrol_pairs, args=(db, "g", pairs, 0.02))
        writer.start()
        while writer.is_alive():
            i = len(seen) % len(pairs)
            top = {c.name for c in store.search("g", pairs[i, 0], MODEL, 2)[0]}
            seen.append(len(top & {f"pair{i}-a", f"pair{i}-b"}))
        writer.join()
        assert writer.exitcode == 0
        assert 1 not in seen and {0, 2} <= set(seen)  # searches ran while the pairs went in
        for i in range(len(pairs)):
            assert {c.name for c in store.search("g", pairs[i, 0], MODEL, 2)[0]} == {f"pair{i}-a", f"pair{i}-b"}
