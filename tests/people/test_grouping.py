"""The grouping rules and corrections in memory (the reference the gallery backends are tested against)."""

from __future__ import annotations

import numpy as np
import pytest

from ghostfacenets.gallery import ConflictError, NotFoundError
from ghostfacenets.people.corrections import (
    CorrectionError,
    ignore_faces,
    merge_people,
    move_faces,
    name_person,
    reject_face,
    split_person,
)
from ghostfacenets.people.evaluation import cosine_distances, dbscan_labels
from ghostfacenets.people.grouping import GroupingError, GroupingSettings, partition
from ghostfacenets.people.memory import MemoryPeople
from ghostfacenets.people.metrics import clustering_scores
from tests.helpers.people import DIM, SETTINGS, identities, siblings, unit


def _groups(people: MemoryPeople) -> set[frozenset[int]]:
    return partition({i: s.person for i, s in people.states.items()})


def _library(rng: np.random.Generator, n: int = 240) -> tuple[np.ndarray, np.ndarray, list[int], list[float]]:
    """Faces of 8 people; every third photo holds two faces; one face in ten is of low quality."""
    embeddings, labels = identities(rng, 8, n)
    photos = [i // 2 if i % 3 == 0 else 10_000 + i for i in range(n)]
    quality = np.where(rng.random(n) < 0.1, 0.1, 0.9).tolist()
    return embeddings, labels, photos, quality


@pytest.mark.parametrize("seed", range(4))
def test_incremental_equals_full(seed: int) -> None:
    rng = np.random.default_rng(seed)
    embeddings, labels, photos, quality = _library(rng)
    whole = MemoryPeople(DIM)
    whole.add(embeddings, photos, quality)
    whole.place(SETTINGS)
    incremental = MemoryPeople(DIM)
    cuts = np.sort(rng.choice(np.arange(1, len(labels)), 9, replace=False)).tolist()
    for start, end in zip([0, *cuts], [*cuts, len(labels)]):
        incremental.add(embeddings[start:end], photos[start:end], quality[start:end])
        incremental.place(SETTINGS, batch_size=int(rng.integers(1, 40)))
    assert _groups(incremental) == _groups(whole)
    assert clustering_scores(labels, whole.labels()).bcubed_f > 0.8  # not trivially equal: the groups are real
    incremental.reset()  # the full re-run of the incremental library
    incremental.place(SETTINGS, batch_size=64)
    assert _groups(incremental) == _groups(whole)


def test_the_same_faces_give_the_same_groups() -> None:
    rng = np.random.default_rng(7)
    embeddings, _, photos, quality = _library(rng)
    runs = []
    for _ in range(2):
        people = MemoryPeople(DIM)
        people.add(embeddings, photos, quality)
        people.place(SETTINGS)
        runs.append(people.labels())
    np.testing.assert_array_equal(runs[0], runs[1])


def test_two_faces_of_one_photo_are_never_one_person() -> None:
    rng = np.random.default_rng(3)
    embeddings, _ = identities(rng, 4, 60)
    twins = unit(embeddings + rng.normal(size=embeddings.shape) * 0.01)  # each face twice, in one photo
    people = MemoryPeople(DIM)
    people.add(np.concatenate([embeddings, twins]), [*range(60), *range(60)], [1.0] * 120)
    people.place(SETTINGS)
    labels = people.labels()
    assert np.sum(labels >= 0) > 100  # grouped: a face and its twin in two people
    for i in range(60):
        assert labels[i] == -1 or labels[i] != labels[60 + i]


def test_low_quality_faces_never_start_or_join_a_group() -> None:
    rng = np.random.default_rng(4)
    embeddings, _ = identities(rng, 3, 90)
    quality = [0.1 if i % 3 == 0 else 0.8 for i in range(90)]
    people = MemoryPeople(DIM)
    people.add(embeddings, range(90), quality)
    summary = people.place(SETTINGS)
    labels = people.labels()
    assert summary.low_quality == 30
    assert np.all(labels[::3] == -1) and np.mean(labels >= 0) > 0.6
    smears = MemoryPeople(DIM)  # a tight cluster of smears forms no person
    smears.add(np.repeat(embeddings[:1], 10, axis=0), range(10), [0.2] * 10)
    smears.place(SETTINGS)
    assert np.all(smears.labels() == -1)


@pytest.mark.parametrize("seed", [0, 3, 5, 6, 7])
def test_look_alikes_are_not_merged(seed: int) -> None:
    """Two similar people whose faces link across, so that DBSCAN chains them into one: the mean cosine keeps them
    apart."""
    rng = np.random.default_rng(seed)
    embeddings, labels = siblings(rng, 20)
    settings = GroupingSettings(link=0.6, join=0.75)
    people = MemoryPeople(DIM)
    people.add(embeddings, range(40), [1.0] * 40)
    people.place(settings)
    scores = clustering_scores(labels, people.labels())
    assert scores.bcubed_precision == 1.0 and scores.bcubed_recall > 0.9
    cross = (embeddings[labels == 0] @ embeddings[labels == 1].T).max()
    assert cross >= settings.link  # faces of the two do link
    merged = dbscan_labels(cosine_distances(embeddings), 1 - settings.link, 3)
    assert clustering_scores(labels, merged).bcubed_precision == 0.5


def test_a_face_joins_with_enough_links_and_a_high_mean() -> None:
    """The join rule by hand: person of three faces; one face links to one of them, another to two."""
    rng = np.random.default_rng(5)
    base = unit(rng.normal(size=DIM))
    side = unit(rng.normal(size=DIM) - (rng.normal(size=DIM) @ base) * base)

    def at(cosine: float, direction: np.ndarray) -> np.ndarray:
        return unit(cosine * base + np.sqrt(1 - cosine**2) * direction)

    others = [unit(rng.normal(size=DIM) - (rng.normal(size=DIM) @ base) * base) for _ in range(3)]
    person = np.stack([at(0.9, d) for d in others])
    people = MemoryPeople(DIM)
    people.add(person, range(3), [1.0] * 3)
    people.place(GroupingSettings(link=0.7, join=0.6, min_faces=3, join_links=2))
    assert len(_groups(people)) == 1
    one_link = unit(0.8 * person[0] + 0.6 * side)  # like face 0 only
    sims = person @ one_link
    assert sims[0] >= 0.7 and np.sum(sims >= 0.7) == 1
    people.add(one_link[None], [3], [1.0])
    people.place(GroupingSettings(link=0.7, join=0.6, min_faces=3, join_links=2))
    assert people.states[3].person is None
    two_links = at(0.95, side)
    assert np.sum(person @ two_links >= 0.7) >= 2 and (person @ two_links).mean() >= 0.6
    people.add(two_links[None], [4], [1.0])
    people.place(GroupingSettings(link=0.7, join=0.6, min_faces=3, join_links=2))
    assert people.states[4].person == people.states[0].person


def _grouped(seed: int = 11) -> tuple[MemoryPeople, np.ndarray]:
    rng = np.random.default_rng(seed)
    embeddings, labels = identities(rng, 5, 100)
    people = MemoryPeople(DIM)
    people.add(embeddings, range(100), [1.0] * 100)
    people.place(SETTINGS)
    return people, labels


def _full_rerun(people: MemoryPeople) -> None:
    people.reset()
    people.place(SETTINGS)


def test_a_named_person_keeps_its_faces_and_absorbs_new_ones() -> None:
    people, labels = _grouped()
    person = people.states[0].person
    assert person is not None
    with people.correcting() as session:
        name_person(session, person, "Ada")
    named = set(people.members(person))
    assert all(people.states[i].pinned for i in named)
    rng = np.random.default_rng(12)
    more = unit(people.states[0].embedding + rng.normal(size=(5, DIM)) * 0.02)
    people.add(more, range(200, 205), [1.0] * 5)
    people.place(SETTINGS)
    assert {people.states[i].person for i in range(100, 105)} == {person}
    _full_rerun(people)
    assert set(people.members(person)) >= named and people.name_of(person) == "Ada"
    with pytest.raises(ConflictError, match="called 'Ada' already"), people.correcting() as session:
        name_person(session, people.states[int(np.flatnonzero(labels != labels[0])[0])].person or 0, "Ada")


def test_not_this_person_sticks_through_full_reruns() -> None:
    people, _ = _grouped()
    face = 0
    person = people.states[face].person
    assert person is not None
    with people.correcting() as session:
        reject_face(session, face, person)
    assert people.states[face].person is None and not people.states[face].placed  # queued again
    people.place(SETTINGS)
    assert people.states[face].person != person
    _full_rerun(people)
    assert people.states[face].person != person
    assert person in people.persons  # the reviewed person stays, with its other faces
    assert len(people.members(person)) > 5


def test_merges_and_splits_stick_through_full_reruns() -> None:
    people, labels = _grouped()
    a = people.states[int(np.flatnonzero(labels == 0)[0])].person
    b = people.states[int(np.flatnonzero(labels == 1)[0])].person
    assert a is not None and b is not None and a != b
    with people.correcting() as session:
        merge_people(session, a, [b])
    merged = set(people.members(a))
    _full_rerun(people)
    assert set(people.members(a)) >= merged and b not in people.persons
    part = sorted(merged)[:4]
    with people.correcting() as session:
        new = split_person(session, a, part)
    _full_rerun(people)
    assert set(people.members(new)) >= set(part)
    assert not set(part) & set(people.members(a))


def test_moved_and_ignored_faces_stay_where_the_user_put_them() -> None:
    people, labels = _grouped()
    a = people.states[int(np.flatnonzero(labels == 0)[0])].person
    b = people.states[int(np.flatnonzero(labels == 1)[0])].person
    face = int(np.flatnonzero(labels == 0)[1])
    ignored = int(np.flatnonzero(labels == 2)[0])
    with people.correcting() as session:
        move_faces(session, [face], b)  # type: ignore[arg-type]
        ignore_faces(session, [ignored])
    _full_rerun(people)
    assert people.states[face].person == b and a in people.rejected[face]
    assert people.states[ignored].person is None and people.states[ignored].pinned


def test_bad_settings_and_corrections_are_refused() -> None:
    with pytest.raises(GroupingError):
        GroupingSettings(link=1.5)
    with pytest.raises(GroupingError):
        GroupingSettings(min_faces=1)
    people, _ = _grouped()
    person = people.states[0].person
    with people.correcting() as session:
        with pytest.raises(CorrectionError, match="keeps at least one face"):
            split_person(session, person, session.members(person))  # type: ignore[arg-type]
        with pytest.raises(NotFoundError, match="no face"):
            reject_face(session, 10_000)
        with pytest.raises(CorrectionError, match="besides the target"):
            merge_people(session, person, [person])  # type: ignore[list-item]
