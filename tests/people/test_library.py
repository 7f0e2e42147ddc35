"""People in real galleries (SQLite and PostgreSQL): the stores group exactly as the in-memory reference, re-runs
skip photos, corrections stick through full re-runs, named people are found by identify."""

from __future__ import annotations

import numpy as np
import pytest

from ghostfacenets.gallery import GalleryError, NotFoundError, open_store
from ghostfacenets.gallery.people import PhotoFaces, UnlabelledFace, read_view
from ghostfacenets.people import PeopleLibrary
from ghostfacenets.people import library as library_module
from ghostfacenets.people.grouping import partition
from ghostfacenets.people.memory import MemoryPeople
from tests.helpers.galleries import MODEL, faces, unit
from tests.helpers.people import SETTINGS, identities

DIM = MODEL.dim


def _photos(embeddings: np.ndarray, quality: list[float], per_photo: list[int], tag: str) -> list[PhotoFaces]:
    """Photos holding consecutive faces, ``per_photo[i]`` faces in photo i."""
    photos, start = [], 0
    for i, count in enumerate(per_photo):
        found = [UnlabelledFace(embeddings[j], quality[j], box=[1, 2, 30, 40]) for j in range(start, start + count)]
        photos.append(PhotoFaces(f"{tag}/{i}.jpg", found))
        start += count
    return photos


def _library_data(seed: int, n: int = 120) -> tuple[np.ndarray, list[float], list[int], np.ndarray]:
    rng = np.random.default_rng(seed)
    embeddings, labels = identities(rng, 6, n, dim=DIM, spread=0.45)
    quality = np.where(rng.random(n) < 0.1, 0.1, 0.9).tolist()
    per_photo = []
    while sum(per_photo) < n:
        per_photo.append(min(int(rng.choice([1, 1, 2, 3])), n - sum(per_photo)))
    return embeddings, quality, per_photo, labels


def _reference(embeddings: np.ndarray, quality: list[float], per_photo: list[int]) -> set[frozenset[int]]:
    people = MemoryPeople(DIM)
    people.add(embeddings, [i for i, c in enumerate(per_photo) for _ in range(c)], quality)
    people.place(SETTINGS)
    return partition({i: s.person for i, s in people.states.items()})


def _groups(library: PeopleLibrary, ids: list[int]) -> set[frozenset[int]]:
    """The store's groups in terms of the faces' positions in ``ids``."""
    position = {face: i for i, face in enumerate(ids)}
    groups = set()
    for person in library.people(limit=1000):
        groups.add(frozenset(position[f.id] for f in library.faces(person.id, limit=1000)))
    return groups


def _added_ids(results: list) -> list[int]:  # type: ignore[type-arg]
    return [face for result in results for ids in result.added.values() for face in ids]


def test_stores_group_as_the_reference_incrementally_and_in_full(store) -> None:  # type: ignore[no-untyped-def]
    embeddings, quality, per_photo, _ = _library_data(1)
    photos = _photos(embeddings, quality, per_photo, "lib")
    library = PeopleLibrary(store, "family", model=MODEL, settings=SETTINGS)
    results = [library.add(photos[start : start + 9]) for start in range(0, len(photos), 9)]
    ids = _added_ids(results)
    expected = _reference(embeddings, quality, per_photo)
    assert len(expected) >= 5 and sum(len(g) for g in expected) > 80  # real groups
    assert _groups(library, ids) == expected
    summary = library.summary()
    assert summary.faces == len(ids) and summary.pending == 0 and summary.people == len(expected)
    assert summary.low_quality == sum(q < SETTINGS.min_quality for q in quality)
    library.cluster(full=True)
    assert _groups(library, ids) == expected


def test_a_rerun_skips_photos_already_added(store) -> None:  # type: ignore[no-untyped-def]
    embeddings, quality, per_photo, _ = _library_data(2, 30)
    photos = _photos(embeddings, quality, per_photo, "again")
    library = PeopleLibrary(store, "family", model=MODEL, settings=SETTINGS)
    first = library.add(photos)
    again = library.add([*photos, PhotoFaces("empty.jpg")])
    assert first.faces == 30 and again.faces == 0 and len(again.skipped) == len(photos)
    assert list(again.added) == ["empty.jpg"] and library.known([photos[0].photo_key]) == {photos[0].photo_key}
    assert library.summary().photos == len(photos) + 1


def test_two_faces_of_one_photo_never_join_one_person(store) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    embeddings, _ = identities(rng, 3, 40, dim=DIM, spread=0.45)
    twins = unit(rng, 40)  # the same face twice in every photo, barely changed
    twins = (embeddings + 0.01 * twins).astype(np.float32)
    twins /= np.linalg.norm(twins, axis=1, keepdims=True)
    photos = [
        PhotoFaces(f"pair/{i}.jpg", [UnlabelledFace(embeddings[i], 1.0), UnlabelledFace(twins[i], 1.0)])
        for i in range(40)
    ]
    library = PeopleLibrary(store, "family", model=MODEL, settings=SETTINGS)
    library.add(photos)
    grouped = 0
    for person in library.people(limit=100):
        references = [f.reference for f in library.faces(person.id, limit=1000)]
        grouped += len(references)
        assert len(references) == len(set(references))
    assert grouped > 60


def test_corrections_stick_and_named_people_are_identified(store) -> None:  # type: ignore[no-untyped-def]
    embeddings, quality, per_photo, _ = _library_data(4)
    quality = [1.0] * len(quality)
    library = PeopleLibrary(store, "family", model=MODEL, settings=SETTINGS)
    ids = _added_ids([library.add(_photos(embeddings, quality, per_photo, "fix"))])
    people = library.people()
    big, second = people[0], people[1]
    # name: identify finds the person; its faces are pinned
    named = library.name(big.id, "Ada")
    assert named.name == "Ada" and named.pinned == named.faces
    member = library.faces(big.id)[0]
    probe = embeddings[ids.index(member.id)]
    (best, *_), *_ = store.search("family", probe, MODEL, 3)
    assert best.name == "Ada" and best.similarity == pytest.approx(1.0, abs=1e-5)
    assert store.find_subject("family", "Ada").faces == named.faces
    # not this person: the face goes elsewhere and never comes back, even after a full re-run
    rejected = library.faces(second.id)[0].id
    library.reject(rejected)
    assert library.face(rejected).person_id != second.id
    # merge and split
    third = library.people()[2]
    library.merge(second.id, [third.id])
    merged = {f.id for f in library.faces(second.id, limit=1000)}
    part = sorted(merged)[:3]
    new = library.split(second.id, part)
    library.cluster(full=True)
    assert library.face(rejected).person_id != second.id
    assert {f.id for f in library.faces(new.id)} >= set(part)
    assert not set(part) & {f.id for f in library.faces(second.id, limit=1000)}
    assert library.person(big.id).name == "Ada" and library.person(big.id).faces >= named.faces
    with pytest.raises(NotFoundError):
        library.person(third.id)
    # a named person absorbs new faces like its own
    more = (probe + 0.02 * unit(np.random.default_rng(9), 4)).astype(np.float32)
    more /= np.linalg.norm(more, axis=1, keepdims=True)
    added = library.add([PhotoFaces(f"new/{i}.jpg", [UnlabelledFace(v, 1.0)]) for i, v in enumerate(more)])
    assert {library.face(f).person_id for ids_ in added.added.values() for f in ids_} == {big.id}
    assert store.find_subject("family", "Ada").faces == library.person(big.id).faces
    with pytest.raises(GalleryError, match="called 'Ada' already"):
        library.name(second.id, "Ada")


def test_moves_ignores_and_deletions_keep_people_exact(store) -> None:  # type: ignore[no-untyped-def]
    embeddings, quality, per_photo, _ = _library_data(5)
    library = PeopleLibrary(store, "family", model=MODEL, settings=SETTINGS)
    library.add(_photos(embeddings, [1.0] * len(quality), per_photo, "mv"))
    a, b = library.people()[:2]
    moved = library.faces(a.id)[0].id
    ignored = library.faces(b.id)[0].id
    library.move([moved], b.id)
    library.ignore([ignored])
    library.cluster(full=True)
    assert library.face(moved).person_id == b.id and library.face(moved).pinned
    assert library.face(ignored).person_id is None and library.face(ignored).pinned
    before = library.person(b.id).faces
    store.delete_face("family", moved)
    assert library.person(b.id).faces == before - 1
    library.name(b.id, "Bo")
    subject = store.find_subject("family", "Bo")
    store.delete_subject("family", subject.id)  # erasing the named person erases their faces
    with pytest.raises(NotFoundError):
        library.person(b.id)
    assert library.summary().faces == sum(per_photo) - 1 - before + 1


def test_enrolled_faces_and_unlabelled_faces_live_side_by_side(store) -> None:  # type: ignore[no-untyped-def]
    """An enrolled photo may also be in the library (its faces share the photo's sha256); enrolments, export and
    resumed bulk enrolments see only the enrolled faces; identify sees only named faces."""
    vectors = unit(np.random.default_rng(6), 4)
    enrolled = faces(vectors[:2], "ann")
    store.enroll("family", "ann", enrolled, MODEL)
    library = PeopleLibrary(store, "family", model=MODEL, settings=SETTINGS)
    library.add([PhotoFaces("ann-0.jpg", [UnlabelledFace(vectors[2], 1.0), UnlabelledFace(vectors[3], 1.0)],
                            key=enrolled[0].image_sha256)])  # fmt: skip
    assert store.enrolled_images("family") == {f.image_sha256: "ann" for f in enrolled}
    assert [e.subject for e in store.export_faces("family")] == ["ann", "ann"]
    assert {c.name for c in store.search("family", vectors[3], MODEL, 5)[0]} == {"ann"}
    assert store.gallery("family").faces == 4


def test_settings_are_kept_with_the_gallery(db: str) -> None:
    with open_store(db) as store:
        library = PeopleLibrary(store, "family", model=MODEL, settings=SETTINGS)
        library.add([PhotoFaces("one.jpg", [UnlabelledFace(unit(np.random.default_rng(7), 1)[0], 1.0)])])
    with open_store(db) as store:
        assert PeopleLibrary(store, "family", model=MODEL).settings == SETTINGS


@pytest.mark.parametrize("backend_options", [{"exact_limit": 0}])
def test_postgres_index_and_bulk_neighbours_group_as_the_reference(
    pg_url: str, backend_options: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above exact_limit the HNSW index finds the neighbours (one query per face); above BULK_PENDING the whole
    run reads every embedding once. Both give the reference's groups on this small gallery."""
    embeddings, quality, per_photo, _ = _library_data(8)
    expected = _reference(embeddings, quality, per_photo)
    with open_store(pg_url, **backend_options) as store:
        library = PeopleLibrary(store, "hnsw", model=MODEL, settings=SETTINGS)
        ids = _added_ids([library.add(_photos(embeddings, quality, per_photo, "h"), place=False)])
        library.cluster()
        assert _groups(library, ids) == expected
        monkeypatch.setattr(library_module, "BULK_PENDING", 10)
        library.cluster(full=True)
        assert _groups(library, ids) == expected


def test_one_statement_view_reads_what_the_batch_methods_read(pg_url: str) -> None:
    """PostgreSQL's one-statement view of a batch (through the HNSW index) holds what the batch's methods read one
    after another (read_view), with named and pinned faces, a rejection and faces of shared photos in the gallery."""
    embeddings, quality, per_photo, _ = _library_data(9)
    photos = _photos(embeddings, quality, per_photo, "v")
    with open_store(pg_url, exact_limit=0) as store:
        library = PeopleLibrary(store, "view", model=MODEL, settings=SETTINGS)
        library.add(photos[:40])
        named, other = library.people()[:2]
        library.name(named.id, "Ann")
        library.reject(library.faces(other.id)[0].id, other.id)
        library.add(photos[40:], place=False)
        with store.people_batch("view") as batch:
            ids = batch.pending(1000)
            one = batch.view(ids, SETTINGS.neighbours, SETTINGS.link)
            each = read_view(batch, ids, SETTINGS.neighbours, SETTINGS.link)
    assert len(ids) > 20 and any(each.rejected.values()) and any(m for m in each.mates.values())
    assert {f: [o for o, _ in near] for f, near in one.near.items()} == {
        f: [o for o, _ in near] for f, near in each.near.items()
    }
    for face, near in each.near.items():
        np.testing.assert_allclose([s for _, s in one.near[face]], [s for _, s in near], atol=1e-6)
    seen = set(ids) | {o for near in each.near.values() for o, _ in near}
    assert {f: sorted(one.mates[f]) for f in seen} == {f: sorted(each.mates[f]) for f in seen}
    assert {f: one.rejected.get(f, set()) for f in seen} == {f: each.rejected.get(f, set()) for f in seen}
    for face, state in each.states.items():
        mine = one.states[face]
        assert (mine.photo, mine.quality, mine.person, mine.pinned, mine.placed) == (
            state.photo, state.quality, state.person, state.pinned, state.placed
        )  # fmt: skip
        if face in seen:
            np.testing.assert_array_equal(mine.embedding, state.embedding)
    assert one.persons.keys() == each.persons.keys() and len(each.persons) >= 2
    for person, state in each.persons.items():
        assert one.persons[person].count == state.count
        np.testing.assert_array_equal(one.persons[person].total, state.total)


def test_bad_photos_are_refused_whole(store) -> None:  # type: ignore[no-untyped-def]
    library = PeopleLibrary(store, "family", model=MODEL, settings=SETTINGS)
    good = UnlabelledFace(unit(np.random.default_rng(8), 1)[0], 0.5)
    for photo, message in (
        (PhotoFaces("", [good]), "reference"),
        (PhotoFaces("a.jpg", [good], key="not-a-sha"), "sha256"),
        (PhotoFaces("a.jpg", [UnlabelledFace(good.embedding, 1.5)]), "quality"),
        (PhotoFaces("a.jpg", [UnlabelledFace(good.embedding, 0.5, box=[1, 2, 3])]), "box"),
        (PhotoFaces("a.jpg", [UnlabelledFace(good.embedding[:4], 0.5)]), "16-d"),
    ):
        with pytest.raises(GalleryError, match=message):
            library.add([PhotoFaces("fine.jpg", [good]), photo])
    with pytest.raises(NotFoundError):
        library.summary()  # nothing was written, not even the gallery
