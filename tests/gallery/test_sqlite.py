"""SQLite gallery: storage format, transactions, model binding, and search against brute force."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from ghostfacenets.gallery.base import GalleryError, ModelId
from ghostfacenets.gallery.sqlite import Enrolment, Gallery
from tests.helpers import require_module

MODEL = ModelId("test-model", "a" * 64, 8, True)


def _unit(rng: np.random.Generator, n: int, dim: int = 8) -> np.ndarray:
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _faces(vectors: np.ndarray, tag: str) -> list[Enrolment]:
    return [
        Enrolment(v, f"{tag}-{i}".ljust(64, "0"), f"{tag}{i}.jpg", {"box": [0, 0, 1, 1]}) for i, v in enumerate(vectors)
    ]


@pytest.fixture
def filled(tmp_path: Path) -> tuple[Gallery, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    people = {name: _unit(rng, n) for name, n in (("ann", 3), ("bob", 1), ("cy", 4), ("dee", 2))}
    gallery = Gallery(tmp_path / "g.sqlite")
    for name, vectors in people.items():
        assert gallery.enroll(name, _faces(vectors, name), MODEL) == len(vectors)
    yield gallery, people
    gallery.close()


def test_exact_search_equals_brute_force(filled: tuple[Gallery, dict[str, np.ndarray]]) -> None:
    gallery, people = filled
    queries = _unit(np.random.default_rng(1), 6)
    for k in (1, 3, 10):
        results = gallery.search(queries, MODEL, k)
        for query, found in zip(queries, results):
            best = {n: max(float(v @ query) for v in vs) for n, vs in people.items()}
            expected = sorted(best.items(), key=lambda item: -item[1])[:k]
            assert [n for n, _ in found] == [n for n, _ in expected]
            np.testing.assert_allclose([s for _, s in found], [s for _, s in expected], atol=1e-6)


def test_enrolled_face_finds_itself(filled: tuple[Gallery, dict[str, np.ndarray]]) -> None:
    gallery, people = filled
    (name, score), *_ = gallery.search(people["cy"][2], MODEL, 2)[0]
    assert name == "cy" and score == pytest.approx(1.0, abs=1e-6)


def test_faiss_backend_agrees_with_exact_search(tmp_path: Path) -> None:
    require_module("faiss")
    rng = np.random.default_rng(2)
    model = ModelId("m", "b" * 64, 32, False)
    with Gallery(tmp_path / "g.sqlite") as gallery:
        for i in range(60):
            gallery.enroll(f"person{i:02d}", _faces(_unit(rng, 3, 32), f"p{i}"), model)
        queries = _unit(rng, 20, 32)
        exact = gallery.search(queries, model, 5)
        approximate = gallery.search(queries, model, 5, backend="faiss")
    assert [[n for n, _ in r] for r in approximate] == [[n for n, _ in r] for r in exact]
    np.testing.assert_allclose([[s for _, s in r] for r in approximate], [[s for _, s in r] for r in exact], atol=1e-5)


def test_storage_is_float32_blobs_with_model_and_hash(
    filled: tuple[Gallery, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    _gallery, people = filled
    db = sqlite3.connect(tmp_path / "g.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rows = db.execute(
        "SELECT i.name, e.embedding, e.dim, e.model_name, e.model_sha256, e.image_sha256 FROM embeddings"
        " e JOIN identities i ON i.id = e.identity_id WHERE i.name = 'ann' ORDER BY e.id"
    ).fetchall()
    db.close()
    assert len(rows) == 3
    for i, (_, blob, dim, model_name, model_sha, image_sha) in enumerate(rows):
        assert dim == 8 and len(blob) == 32 and (model_name, model_sha) == (MODEL.name, MODEL.sha256)
        np.testing.assert_array_equal(np.frombuffer(blob, "<f4"), people["ann"][i])
        assert image_sha.startswith(f"ann-{i}")


def test_list_remove_and_reopen(filled: tuple[Gallery, dict[str, np.ndarray]], tmp_path: Path) -> None:
    gallery, _ = filled
    assert [(r.name, r.embeddings) for r in gallery.identities()] == [("ann", 3), ("bob", 1), ("cy", 4), ("dee", 2)]
    assert gallery.remove("cy") == 4
    with pytest.raises(GalleryError, match="no identity named"):
        gallery.remove("cy")
    assert len(gallery) == 6
    assert "cy" not in [n for n, _ in gallery.search(np.ones(8, np.float32) / np.sqrt(8), MODEL, 10)[0]]
    with Gallery(tmp_path / "g.sqlite", create=False) as again:
        assert again.model == MODEL
        assert [r.name for r in again.identities()] == ["ann", "bob", "dee"]


def test_enrolment_is_one_transaction(filled: tuple[Gallery, dict[str, np.ndarray]]) -> None:
    gallery, people = filled
    rng = np.random.default_rng(3)
    good = _faces(_unit(rng, 2), "new")
    clash = Enrolment(people["bob"][0], "bob-0".ljust(64, "0"), "bob0.jpg")  # already enrolled as bob
    with pytest.raises(GalleryError, match="already enrolled as 'bob'"):
        gallery.enroll("eve", [*good, clash], MODEL)
    assert "eve" not in [r.name for r in gallery.identities()] and len(gallery) == 10
    with pytest.raises(GalleryError, match="8-d"):
        gallery.enroll("eve", [good[0], Enrolment(np.ones(7, np.float32), "x" * 64)], MODEL)
    assert len(gallery) == 10


def test_reenrolling_the_same_image_is_skipped(filled: tuple[Gallery, dict[str, np.ndarray]]) -> None:
    gallery, people = filled
    extra = _faces(_unit(np.random.default_rng(4), 1), "ann-extra")
    assert gallery.enroll("ann", _faces(people["ann"], "ann") + extra, MODEL) == 1
    assert dict((r.name, r.embeddings) for r in gallery.identities())["ann"] == 4


def test_other_models_embeddings_are_refused(filled: tuple[Gallery, dict[str, np.ndarray]]) -> None:
    gallery, people = filled
    other = ModelId("other", "c" * 64, 8, True)
    no_flip = ModelId(MODEL.name, MODEL.sha256, 8, False)
    for model in (other, no_flip):
        with pytest.raises(GalleryError, match="holds embeddings of"):
            gallery.enroll("zed", _faces(people["bob"], "zed"), model)
        with pytest.raises(GalleryError, match="holds embeddings of"):
            gallery.search(people["bob"], model)


def test_a_second_connection_sees_new_enrolments(filled: tuple[Gallery, dict[str, np.ndarray]], tmp_path: Path) -> None:
    gallery, _ = filled
    vector = _unit(np.random.default_rng(5), 1)
    assert gallery.search(vector, MODEL, 1)[0][0][0] != "fay"  # fills the search cache
    with Gallery(tmp_path / "g.sqlite") as writer:
        writer.enroll("fay", _faces(vector, "fay"), MODEL)
    assert gallery.search(vector, MODEL, 1)[0][0][0] == "fay"


def test_unusable_files_and_names(tmp_path: Path) -> None:
    with pytest.raises(GalleryError, match="no such gallery"):
        Gallery(tmp_path / "missing.sqlite", create=False)
    junk = tmp_path / "photo.sqlite"
    junk.write_bytes(b"\xff\xd8\xff\xe0" + bytes(2000))
    with pytest.raises(GalleryError, match="not a usable gallery"):
        Gallery(junk)
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(GalleryError, match="not a ghostfacenets gallery"):
        Gallery(other)
    with Gallery(tmp_path / "g.sqlite") as gallery:
        with pytest.raises(GalleryError, match="identity name"):
            gallery.enroll("  ", _faces(_unit(np.random.default_rng(6), 1), "x"), MODEL)
        assert gallery.search(_unit(np.random.default_rng(7), 1), MODEL) == [[]]


class _EnrolsAfterFirstRead:
    """Wraps a gallery's connection: another connection commits an enrolment right after the first read of the
    identities or embeddings, i.e. between the reads of one search."""

    def __init__(self, db: sqlite3.Connection, enrol: object) -> None:
        self._db, self._enrol, self.fired = db, enrol, False

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        cursor = self._db.execute(sql, *args)
        if not self.fired and ("FROM identities" in sql or "FROM embeddings" in sql):
            self.fired = True
            self._enrol()
        return cursor

    def __getattr__(self, name: str) -> object:
        return getattr(self._db, name)


def test_search_reads_a_consistent_snapshot(filled: tuple[Gallery, dict[str, np.ndarray]], tmp_path: Path) -> None:
    gallery, _people = filled
    newcomer = _unit(np.random.default_rng(8), 1)

    def enrol() -> None:
        with Gallery(tmp_path / "g.sqlite") as writer:
            writer.enroll("zed", _faces(newcomer, "zed"), MODEL)

    wrapper = _EnrolsAfterFirstRead(gallery._db, enrol)
    gallery._db = wrapper
    try:
        (found,) = gallery.search(newcomer, MODEL, 10)
    finally:
        gallery._db = wrapper._db
    assert wrapper.fired and {n for n, _ in found} <= {"ann", "bob", "cy", "dee", "zed"}
    assert gallery.search(newcomer, MODEL, 1)[0][0][0] == "zed"  # the next search sees the new enrolment


@pytest.fixture
def locked(filled: tuple[Gallery, dict[str, np.ndarray]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The gallery of ``filled`` while another connection holds its write lock (busy timeout cut to 50 ms)."""
    import ghostfacenets.gallery.sqlite as gallery_module

    monkeypatch.setattr(gallery_module, "BUSY_TIMEOUT_S", 0.05)
    gallery, people = filled
    gallery._db.execute("PRAGMA busy_timeout = 50")
    other = sqlite3.connect(tmp_path / "g.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    yield gallery, people
    other.execute("ROLLBACK")
    other.close()


def test_a_locked_gallery_gives_a_gallery_error(locked: tuple[Gallery, dict[str, np.ndarray]]) -> None:
    gallery, _people = locked
    with pytest.raises(GalleryError, match="database is locked"):  # not "cannot rollback" on top of it
        gallery.enroll("eve", _faces(_unit(np.random.default_rng(9), 1), "eve"), MODEL)
    with pytest.raises(GalleryError, match="database is locked"):
        gallery.remove("ann")
    assert [r.name for r in gallery.identities()] == ["ann", "bob", "cy", "dee"]  # reading still works


def test_a_locked_gallery_through_the_cli(
    locked: tuple[Gallery, dict[str, np.ndarray]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ghostfacenets.cli import main

    assert main(["gallery", "--db", str(tmp_path / "g.sqlite"), "remove", "ann"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "database is locked" in err and err.startswith("ghostfacenets gallery: error:")
