"""The gallery interface, one suite run on both backends (SQLite file, real PostgreSQL + pgvector): galleries,
subjects, faces, transactions, model binding, search against brute force, export, crops, re-embedding, API keys,
several threads and several processes."""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from ghostfacenets.gallery import (
    ConflictError,
    Enrolment,
    GalleryError,
    GalleryStore,
    ModelId,
    ModelMismatchError,
    NewFace,
    NotFoundError,
    open_store,
)
from tests.helpers.galleries import MODEL, batch_worker, brute_force, enrol_worker, faces, sha, unit

PEOPLE = (("ann", 3), ("bob", 1), ("cy", 4), ("dee", 2))


@pytest.fixture
def people(store: GalleryStore) -> dict[str, np.ndarray]:
    """Four subjects enrolled in gallery ``main``."""
    rng = np.random.default_rng(0)
    enrolled = {name: unit(rng, n) for name, n in PEOPLE}
    for name, vectors in enrolled.items():
        result = store.enroll("main", name, faces(vectors, name), MODEL, metadata={"team": name[0]})
        assert len(result.added) == len(vectors) and result.skipped == []
    return enrolled


# ------------------------------------------------------------------------------------------------ galleries
def test_galleries_are_named_collections(store: GalleryStore) -> None:
    assert store.galleries() == []
    created = store.create_gallery("staff")
    assert (created.name, created.model, created.subjects, created.faces, created.crops) == ("staff", None, 0, 0, 0)
    with pytest.raises(ConflictError, match="exists already"):
        store.create_gallery("staff")
    assert store.create_gallery("staff", exist_ok=True).name == "staff"
    store.create_gallery("visitors")
    assert [g.name for g in store.galleries()] == ["staff", "visitors"]
    for bad in ("", "a b", "-x", "x" * 65, "../etc"):
        with pytest.raises(GalleryError, match="gallery name"):
            store.create_gallery(bad)
    with pytest.raises(NotFoundError, match="no gallery named 'nobody'"):
        store.gallery("nobody")
    store.delete_gallery("visitors")
    assert [g.name for g in store.galleries()] == ["staff"]
    with pytest.raises(NotFoundError):
        store.delete_gallery("visitors")


def test_gallery_info_counts_and_binds_to_the_first_model(store: GalleryStore, people: dict[str, np.ndarray]) -> None:
    info = store.gallery("main")
    assert (info.subjects, info.faces, info.crops) == (4, 10, 0)
    assert info.model == MODEL
    assert info.created.endswith("+00:00")


def test_deleting_a_gallery_deletes_everything_in_it(store: GalleryStore, people: dict[str, np.ndarray]) -> None:
    store.enroll("other", "ann", faces(people["ann"], "ann"), MODEL)  # the same images in another gallery are fine
    key, _secret = store.create_key("identify", "main")
    store.delete_gallery("main")
    assert [g.name for g in store.galleries()] == ["other"]
    assert store.gallery("other").faces == 3
    remaining = store.keys()
    assert key.id not in [k.id for k in remaining]  # a key for a deleted gallery goes with it
    store.enroll("main", "ann", faces(people["ann"], "ann"), MODEL)  # recreated, empty and unbound before this
    assert store.gallery("main").faces == 3


# ------------------------------------------------------------------------------------------------ subjects
def test_subjects_with_metadata(store: GalleryStore) -> None:
    store.create_gallery("g")
    ann = store.add_subject("g", "  Ann  ", {"employee": 17, "tags": ["a", "b"]})
    assert (ann.name, ann.metadata, ann.faces, ann.gallery) == ("Ann", {"employee": 17, "tags": ["a", "b"]}, 0, "g")
    assert store.subject("g", ann.id) == ann
    assert store.find_subject("g", "Ann") == ann and store.find_subject("g", "nobody") is None
    with pytest.raises(ConflictError, match="subject named 'Ann'"):
        store.add_subject("g", "Ann")
    with pytest.raises(NotFoundError):
        store.add_subject("nogallery", "x")
    for bad in ("", "   ", "a\nb", "x" * 201):
        with pytest.raises(GalleryError, match="subject name"):
            store.add_subject("g", bad)
    with pytest.raises(GalleryError, match="not JSON"):
        store.add_subject("g", "x", {"when": object()})
    with pytest.raises(GalleryError, match="above the limit"):
        store.add_subject("g", "x", {"blob": "x" * 70_000})
    with pytest.raises(GalleryError, match="JSON object"):
        store.add_subject("g", "x", ["not", "a", "dict"])  # type: ignore[arg-type]
    bob = store.add_subject("g", "Bob")
    renamed = store.update_subject("g", bob.id, name="Robert", metadata={"x": 1})
    assert (renamed.id, renamed.name, renamed.metadata) == (bob.id, "Robert", {"x": 1})
    assert store.update_subject("g", bob.id, metadata={}).name == "Robert"  # metadata replaced, name kept
    with pytest.raises(ConflictError):
        store.update_subject("g", bob.id, name="Ann")
    with pytest.raises(NotFoundError):
        store.update_subject("g", 10_000, name="x")


def test_subjects_page_by_id(store: GalleryStore) -> None:
    store.create_gallery("g")
    ids = [store.add_subject("g", f"s{i:02d}").id for i in range(7)]
    assert ids == sorted(ids) and len(set(ids)) == 7
    pages, after = [], None
    while page := store.subjects("g", after=after, limit=3):
        pages.append([s.id for s in page])
        after = page[-1].id
    assert pages == [ids[:3], ids[3:6], ids[6:]]


def test_ids_are_never_reused(store: GalleryStore) -> None:
    store.create_gallery("g")
    first = store.add_subject("g", "a")
    store.delete_subject("g", first.id)
    assert store.add_subject("g", "a").id > first.id


def test_a_subject_belongs_to_its_gallery(store: GalleryStore, people: dict[str, np.ndarray]) -> None:
    store.create_gallery("other")
    ann = store.find_subject("main", "ann")
    assert ann is not None
    for call in (
        lambda: store.subject("other", ann.id),
        lambda: store.faces("other", ann.id),
        lambda: store.delete_subject("other", ann.id),
        lambda: store.update_subject("other", ann.id, name="x"),
        lambda: store.delete_face("other", store.faces("main", ann.id)[0].id),
    ):
        with pytest.raises(NotFoundError):
            call()
    assert store.gallery("main").faces == 10


def test_deleting_a_subject_removes_its_faces(store: GalleryStore, people: dict[str, np.ndarray]) -> None:
    cy = store.find_subject("main", "cy")
    assert cy is not None and cy.faces == 4
    assert store.delete_subject("main", cy.id) == 4
    assert store.find_subject("main", "cy") is None
    assert store.gallery("main").faces == 6
    assert all(image != sha(f"cy-{i}") for i in range(4) for image in store.enrolled_images("main"))
    found = store.search("main", people["cy"], MODEL, 10)
    assert all(c.name != "cy" for row in found for c in row)
    with pytest.raises(NotFoundError):
        store.delete_subject("main", cy.id)


# ------------------------------------------------------------------------------------------------ faces
def test_enrolment_records_faces(store: GalleryStore) -> None:
    vectors = unit(np.random.default_rng(1), 2)
    result = store.enroll("g", "ann", faces(vectors, "ann"), MODEL, metadata={"badge": 7})
    assert result.subject.name == "ann" and result.subject.faces == 2 and result.subject.metadata == {"badge": 7}
    assert [f.image_sha256 for f in result.added] == [sha("ann-0"), sha("ann-1")]
    face = result.added[0]
    assert (face.subject_id, face.source, face.model_name, face.model_sha256, face.has_crop) == (
        result.subject.id,
        "ann/0.jpg",
        MODEL.name,
        MODEL.sha256,
        False,
    )
    assert face.detection == {"box": [0.0, 0.0, 10.0, 10.0], "score": 0.99}
    assert store.faces("g", result.subject.id) == result.added
    # metadata is for new subjects only
    again = store.enroll("g", "ann", faces(unit(np.random.default_rng(2), 1), "ann-more"), MODEL, {"badge": 9})
    assert again.subject.metadata == {"badge": 7} and again.subject.faces == 3


def test_an_image_is_enrolled_once_per_gallery(store: GalleryStore, people: dict[str, np.ndarray]) -> None:
    extra = faces(unit(np.random.default_rng(3), 1), "ann-extra")
    result = store.enroll("main", "ann", faces(people["ann"], "ann") + extra, MODEL)
    assert [f.image_sha256 for f in result.added] == [extra[0].image_sha256]
    assert result.skipped == [sha(f"ann-{i}") for i in range(3)]
    assert store.enrolled_images("main") == {sha(f"{n}-{i}"): n for n, c in PEOPLE for i in range(c)} | {
        extra[0].image_sha256: "ann"
    }
    with pytest.raises(ConflictError, match="already enrolled as 'bob'"):
        store.enroll("main", "eve", faces(people["bob"], "bob"), MODEL)


def test_an_enrolment_is_all_or_nothing(store: GalleryStore, people: dict[str, np.ndarray]) -> None:
    rng = np.random.default_rng(4)
    good = faces(unit(rng, 2), "eve")
    clash = faces(people["bob"], "bob")  # already bob's
    with pytest.raises(ConflictError):
        store.enroll("main", "eve", good + clash, MODEL)
    with pytest.raises(GalleryError, match="16-d"):
        store.enroll("main", "eve", [*good, NewFace(np.ones(7, np.float32) / np.sqrt(7), sha("x"))], MODEL)
    with pytest.raises(GalleryError, match="L2-normalised"):
        store.enroll("main", "eve", [*good, NewFace(np.ones(16, np.float32), sha("y"))], MODEL)
    with pytest.raises(GalleryError, match="sha256"):
        store.enroll("main", "eve", [NewFace(good[0].embedding, "not-a-hash")], MODEL)
    with pytest.raises(GalleryError, match="nothing to enrol"):
        store.enroll("main", "eve", [], MODEL)
    assert store.find_subject("main", "eve") is None and store.gallery("main").faces == 10
    with pytest.raises(ConflictError):  # several subjects in one transaction: the last one's clash undoes all
        store.enroll_many("main", [Enrolment("fay", faces(unit(rng, 2), "fay")), Enrolment("gus", good + clash)], MODEL)
    assert store.find_subject("main", "fay") is None and store.gallery("main").faces == 10
    with pytest.raises(NotFoundError):
        store.enroll("new", "x", good, MODEL, create_gallery=False)
    assert [g.name for g in store.galleries()] == ["main"]


def test_enrol_many_subjects_in_one_transaction(store: GalleryStore) -> None:
    rng = np.random.default_rng(5)
    results = store.enroll_many(
        "g", [Enrolment(f"p{i}", faces(unit(rng, i + 1), f"p{i}"), {"i": i}) for i in range(3)], MODEL
    )
    assert [(r.subject.name, r.subject.faces, r.subject.metadata) for r in results] == [
        ("p0", 1, {"i": 0}),
        ("p1", 2, {"i": 1}),
        ("p2", 3, {"i": 2}),
    ]


def test_add_faces_and_delete_a_face(store: GalleryStore, people: dict[str, np.ndarray]) -> None:
    bob = store.find_subject("main", "bob")
    assert bob is not None
    added = store.add_faces("main", bob.id, faces(unit(np.random.default_rng(6), 2), "bob-new"), MODEL)
    assert added.subject.faces == 3 and len(added.added) == 2
    with pytest.raises(NotFoundError):
        store.add_faces("main", 10_000, faces(unit(np.random.default_rng(7), 1), "x"), MODEL)
    store.delete_face("main", added.added[0].id)
    assert [f.id for f in store.faces("main", bob.id)][1:] == [added.added[1].id]
    with pytest.raises(NotFoundError):
        store.delete_face("main", added.added[0].id)


# ------------------------------------------------------------------------------------------------ models
def test_other_models_are_refused(store: GalleryStore, people: dict[str, np.ndarray]) -> None:
    others = (
        ModelId("other", "c" * 64, 16, True),  # other weights
        ModelId(MODEL.name, MODEL.sha256, 16, False),  # flip off
    )
    for model in others:
        with pytest.raises(ModelMismatchError, match="holds embeddings of"):
            store.enroll("main", "zed", faces(people["bob"][:1], "zed"), model)
        with pytest.raises(ModelMismatchError, match="holds embeddings of"):
            store.search("main", people["bob"], model)
    wider = ModelId("wide", "d" * 64, 32, True)
    with pytest.raises(ModelMismatchError):
        store.enroll("main", "zed", faces(unit(np.random.default_rng(8), 1, 32), "zed"), wider)
    with pytest.raises(ModelMismatchError):
        store.search("main", unit(np.random.default_rng(8), 1, 32), wider)
    with pytest.raises(ModelMismatchError):  # queries of another size than the model says
        store.search("main", unit(np.random.default_rng(8), 1, 8), MODEL)
    renamed = ModelId("a copy of the same weights", MODEL.sha256, 16, True)
    assert store.enroll("main", "zed", faces(people["bob"][:1], "zed"), renamed).added
    # another gallery in the same store may hold another model's embeddings
    assert store.enroll("wide", "w", faces(unit(np.random.default_rng(9), 2, 32), "w"), wider).subject.faces == 2
    assert store.search("wide", unit(np.random.default_rng(9), 2, 32)[:1], wider, 1)[0][0].name == "w"


# ------------------------------------------------------------------------------------------------ search
def test_search_equals_brute_force(store: GalleryStore, people: dict[str, np.ndarray]) -> None:
    queries = unit(np.random.default_rng(10), 6)
    ids = {s.name: s.id for s in store.subjects("main")}
    for k in (1, 3, 10):
        results = store.search("main", queries, MODEL, k)
        assert len(results) == len(queries)
        for query, found in zip(queries, results):
            expected = brute_force(people, query, k)
            assert [c.name for c in found] == [n for n, _ in expected]
            assert [c.subject_id for c in found] == [ids[n] for n, _ in expected]
            np.testing.assert_allclose([c.similarity for c in found], [s for _, s in expected], atol=1e-5)


def test_an_enrolled_face_finds_itself(store: GalleryStore, people: dict[str, np.ndarray]) -> None:
    (best, second), *_ = store.search("main", people["cy"][2], MODEL, 2)
    assert best.name == "cy" and best.similarity == pytest.approx(1.0, abs=1e-5)
    assert second.name != "cy"  # one candidate per subject: cy's other faces do not fill the list


def test_search_is_filtered_by_gallery(store: GalleryStore, people: dict[str, np.ndarray]) -> None:
    rng = np.random.default_rng(11)
    twins = unit(rng, 3)
    store.enroll("other", "twin", faces(twins, "twin"), MODEL)
    found = store.search("main", twins, MODEL, 10)
    assert all(c.name != "twin" for row in found for c in row)
    assert all(row[0].name == "twin" for row in store.search("other", twins, MODEL, 10))
    assert len(store.search("other", twins, MODEL, 10)[0]) == 1


def test_search_of_empty_and_missing_galleries(store: GalleryStore) -> None:
    store.create_gallery("empty")
    assert store.search("empty", unit(np.random.default_rng(12), 2), MODEL, 3) == [[], []]
    with pytest.raises(NotFoundError):
        store.search("missing", unit(np.random.default_rng(12), 1), MODEL)
    with pytest.raises(GalleryError, match="k must be"):
        store.search("empty", unit(np.random.default_rng(12), 1), MODEL, 0)


def test_search_sees_changes_made_through_another_store(
    store: GalleryStore, db: str, people: dict[str, np.ndarray]
) -> None:
    vector = unit(np.random.default_rng(13), 1)
    assert store.search("main", vector, MODEL, 1)[0][0].name != "fay"  # fills any cache
    with open_store(db) as writer:
        writer.enroll("main", "fay", faces(vector, "fay"), MODEL)
    assert store.search("main", vector, MODEL, 1)[0][0].name == "fay"
    with open_store(db) as writer:
        fay = writer.find_subject("main", "fay")
        assert fay is not None
        writer.update_subject("main", fay.id, name="Fay")
    assert store.search("main", vector, MODEL, 1)[0][0].name == "Fay"


# ---------------------------------------------------------------------------------------- crops, export, re-embedding
def test_crops_are_kept_only_when_given(store: GalleryStore) -> None:
    rng = np.random.default_rng(14)
    with_crops = store.enroll("g", "a", faces(unit(rng, 2), "a", crops=True), MODEL)
    without = store.enroll("g", "b", faces(unit(rng, 1), "b"), MODEL)
    assert [f.has_crop for f in with_crops.added] == [True, True] and not without.added[0].has_crop
    assert store.gallery("g").crops == 2
    assert dict(store.crops("g")) == {f.id: f"png-a-{i}".encode() for i, f in enumerate(with_crops.added)}
    store.delete_subject("g", with_crops.subject.id)
    assert list(store.crops("g")) == [] and store.gallery("g").crops == 0


def test_export_into_another_backend_keeps_everything(store: GalleryStore, tmp_path) -> None:
    from ghostfacenets.gallery.sqlite import SQLiteStore

    rng = np.random.default_rng(15)
    store.enroll("g", "a", faces(unit(rng, 2), "a", crops=True), MODEL, {"k": "v"})
    store.enroll("g", "b", faces(unit(rng, 3), "b"), MODEL)
    exported = list(store.export_faces("g"))
    assert len(exported) == 5 and {e.model for e in exported} == {MODEL}
    assert [(e.subject, e.subject_metadata) for e in exported[:2]] == [("a", {"k": "v"})] * 2
    with SQLiteStore(tmp_path / "copy.sqlite") as copy:
        for e in exported:
            copy.enroll("copied", e.subject, [e.face], e.model, e.subject_metadata)
        again = list(copy.export_faces("copied"))
        queries = unit(rng, 4)
        expected = [[(c.name, round(c.similarity, 5)) for c in row] for row in store.search("g", queries, MODEL, 2)]
        assert [
            [(c.name, round(c.similarity, 5)) for c in row] for row in copy.search("copied", queries, MODEL, 2)
        ] == (expected)
    for a, b in zip(exported, again):
        assert (a.subject, a.subject_metadata, a.face.image_sha256, a.face.source, a.face.detection, a.face.crop) == (
            b.subject,
            b.subject_metadata,
            b.face.image_sha256,
            b.face.source,
            b.face.detection,
            b.face.crop,
        )
        np.testing.assert_allclose(a.face.embedding, b.face.embedding, atol=1e-6)


def test_replacing_embeddings_rebinds_the_gallery(store: GalleryStore) -> None:
    rng = np.random.default_rng(16)
    store.enroll("g", "a", faces(unit(rng, 2), "a", crops=True), MODEL)
    store.enroll("g", "b", faces(unit(rng, 1), "b", crops=True), MODEL)
    new_model = ModelId("new", "e" * 64, 32, False)
    ids = [face_id for face_id, _ in store.crops("g")]
    replacement = dict(zip(ids, unit(rng, 3, 32)))
    with pytest.raises(ConflictError, match="no new embedding"):
        store.replace_embeddings("g", dict(list(replacement.items())[:2]), new_model)
    with pytest.raises(NotFoundError):
        store.replace_embeddings("g", {**replacement, 10_000: replacement[ids[0]]}, new_model)
    assert store.gallery("g").model == MODEL  # refused: nothing changed
    store.replace_embeddings("g", replacement, new_model)
    assert store.gallery("g").model == new_model
    best = store.search("g", replacement[ids[2]], new_model, 1)[0][0]
    assert best.name == "b" and best.similarity == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ModelMismatchError):
        store.search("g", unit(rng, 1), MODEL)
    assert {f.model_sha256 for s in store.subjects("g") for f in store.faces("g", s.id)} == {"e" * 64}


# ------------------------------------------------------------------------------------------------ API keys
def test_api_keys(store: GalleryStore) -> None:
    store.create_gallery("g")
    admin, admin_secret = store.create_key("admin", label="ops laptop")
    reader, reader_secret = store.create_key("identify", "g")
    assert (admin.role, admin.gallery, admin.label, admin.revoked, admin.last_used) == (
        "admin",
        None,
        "ops laptop",
        False,
        None,
    )
    assert (reader.role, reader.gallery) == ("identify", "g")
    assert admin_secret != reader_secret and len(admin_secret) > 40
    assert store.keys() == [admin, reader]
    used = store.authenticate(reader_secret)
    assert used is not None and used.id == reader.id and used.last_used is not None
    assert store.authenticate("gfn_wrong") is None and store.authenticate("") is None
    revoked = store.revoke_key(reader.id)
    assert revoked.revoked and store.authenticate(reader_secret) is None
    assert store.authenticate(admin_secret) is not None
    with pytest.raises(NotFoundError):
        store.revoke_key(10_000)
    with pytest.raises(NotFoundError):
        store.create_key("identify", "missing")
    with pytest.raises(GalleryError, match="role"):
        store.create_key("root")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ concurrency
def test_several_threads_share_one_store(store: GalleryStore) -> None:
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        rng = np.random.default_rng(100 + worker)
        try:
            for i in range(5):
                vectors = unit(rng, 2)
                store.enroll("t", f"t{worker}-{i}", faces(vectors, f"t{worker}-{i}"), MODEL)
                assert store.search("t", vectors[:1], MODEL, 1)[0][0].name == f"t{worker}-{i}"
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    info = store.gallery("t")
    assert (info.subjects, info.faces) == (20, 40)


def test_several_processes_enrol_and_search_one_database(store: GalleryStore, db: str) -> None:
    workers, subjects, faces_each = 3, 8, 2
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        found = list(
            pool.map(enrol_worker, [db] * workers, range(workers), [subjects] * workers, [faces_each] * workers)
        )
    assert found == [subjects] * workers  # each process found every subject it had just enrolled
    info = store.gallery("shared")
    assert (info.subjects, info.faces) == (workers * subjects, workers * subjects * faces_each)
    assert len(set(store.enrolled_images("shared"))) == workers * subjects * faces_each


def test_a_killed_enrolment_leaves_nothing_half_done(store: GalleryStore, db: str) -> None:
    subjects, faces_each = 40, 4  # per transaction; the third, killed, has 2500 subjects
    context = multiprocessing.get_context("spawn")
    started = context.Event()
    process = context.Process(target=batch_worker, args=(db, subjects, faces_each, started))
    process.start()
    assert started.wait(120), "the worker never reached its third transaction"
    process.kill()  # SIGKILL: no cleanup, no rollback by the client
    process.join()
    assert process.exitcode == -9
    info = store.gallery("batches")
    assert info.faces == 2 * subjects * faces_each  # the first two transactions, nothing of the third
    assert info.subjects == 2 * subjects
    assert all(s.faces == faces_each for page in [store.subjects("batches", limit=1000)] for s in page)
