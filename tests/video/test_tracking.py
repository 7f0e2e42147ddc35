"""The tracker and the identity decision on sightings written out by hand: crossing, occlusion, leaving, someone
stepping into a place just left, false detections, weak detections, and the exclusive assignment against a
brute-force search of every assignment."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ghostfacenets.gallery import Candidate
from ghostfacenets.video import FaceTracker, TrackerSettings
from ghostfacenets.video.identity import assign
from ghostfacenets.video.tracking import Sighting, box_iou

RATE = 5.0  # detection frames per second


def unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector)).astype(np.float32)


@pytest.fixture(scope="module")
def people() -> dict[str, np.ndarray]:
    """Embeddings of three people: ``b`` is 0.6 like ``a`` (a look-alike above a threshold of 0.3), ``c`` 0.1."""
    rng = np.random.default_rng(0)
    a = unit(rng.normal(size=128))
    other = unit(rng.normal(size=128))
    other = unit(other - (other @ a) * a)
    return {"a": a, "b": unit(0.6 * a + 0.8 * other), "c": unit(0.1 * a + 0.995 * other)}


def sighting(
    t: float, x: float, person: np.ndarray, rng: np.random.Generator, score: float = 0.99, size: float = 100.0
) -> Sighting:
    box = np.array([x - size / 2, 100.0, x + size / 2, 100.0 + size * 1.3])
    landmarks = np.tile([[x, 150.0]], (5, 1)) + rng.normal(0, 1, (5, 2))
    embedding = unit(person + rng.normal(0, 0.03, person.shape))
    return Sighting(t, round(t * 25), box, landmarks, score, quality=0.5 + 0.1 * rng.random(), embedding=embedding)


def run(tracker: FaceTracker, frames: list[list[Sighting]]) -> tuple[dict[int, list[float]], list, list]:
    """Feed detection frames; (track id -> times seen, appeared tracks, left tracks)."""
    seen: dict[int, list[float]] = {}
    appeared, left = [], []
    for i, sightings in enumerate(frames):
        changes = tracker.update(i / RATE, i * 5, sightings)
        appeared += changes.appeared
        left += changes.left
        for track in changes.seen:
            seen.setdefault(track.id, []).append(i / RATE)
    left += tracker.finish()
    return seen, appeared, left


def test_crossing_keeps_each_person_on_their_track(people: dict[str, np.ndarray]) -> None:
    """A walks right and B walks left along one line: at the crossing their boxes cover each other, and one of them
    is not detected for a frame (hidden)."""
    rng = np.random.default_rng(1)
    frames = []
    for i in range(20):
        t = i / RATE
        xa, xb = 100 + 30 * i, 670 - 30 * i
        frame = [sighting(t, xa, people["a"], rng), sighting(t, xb, people["b"], rng)]
        if i == 10:  # A behind B
            frame = frame[1:]
        frames.append(frame)
    tracker = FaceTracker(TrackerSettings(same_person=0.3))
    owner: dict[int, set[str]] = {}
    for i, sightings in enumerate(frames):
        tracker.update(i / RATE, i * 5, sightings)
        for track in tracker.visible:
            if track.end == i / RATE:
                who = "a" if float(track.appearance @ people["a"]) > float(track.appearance @ people["b"]) else "b"
                owner.setdefault(track.id, set()).add(who)
                x = (track.box[0] + track.box[2]) / 2
                expected = 100 + 30 * i if who == "a" else 670 - 30 * i
                assert abs(x - expected) < 1.0  # the box of that person, not of the other
    assert sorted(owner.values(), key=sorted) == [{"a"}, {"b"}]


def test_occlusion_within_max_lost_keeps_the_track_and_longer_ends_it(people: dict[str, np.ndarray]) -> None:
    rng = np.random.default_rng(2)
    settings = TrackerSettings(max_lost=1.5, same_person=0.3)
    short = [[sighting(i / RATE, 200 + 10 * i, people["a"], rng)] if not 5 <= i < 10 else [] for i in range(20)]
    seen, appeared, left = run(FaceTracker(settings), short)
    assert len(seen) == 1 and len(appeared) == 1 and len(left) == 1  # 1 s hidden: one track
    assert left[0].start == 0.0 and left[0].end == pytest.approx(19 / RATE)
    long = [[sighting(i / RATE, 200 + 10 * i, people["a"], rng)] if not 5 <= i < 15 else [] for i in range(25)]
    seen, appeared, left = run(FaceTracker(settings), long)
    assert len(appeared) == 2 and [(t.start, t.end) for t in left] == [(0.0, pytest.approx(4 / RATE)), (3.0, 4.8)]


def test_someone_stepping_into_a_place_just_left(people: dict[str, np.ndarray]) -> None:
    """C appears where A was 0.4 s earlier (A's track is still lost, not left): below the same-person threshold,
    C gets a track of their own. A look-alike above it (B) continues A's track: the model's threshold decides."""
    rng = np.random.default_rng(3)
    before = [[sighting(i / RATE, 300, people["a"], rng)] for i in range(8)] + [[], []]
    for newcomer, tracks in (("c", 2), ("b", 1)):
        frames = before + [[sighting((10 + i) / RATE, 305, people[newcomer], rng)] for i in range(8)]
        _, appeared, left = run(FaceTracker(TrackerSettings(same_person=0.3)), frames)
        assert len(appeared) == len(left) == tracks
    assert [(t.start, t.end) for t in left] == [(0.0, pytest.approx(17 / RATE))]


def test_a_single_false_detection_is_never_reported(people: dict[str, np.ndarray]) -> None:
    rng = np.random.default_rng(4)
    frames = [[sighting(i / RATE, 300, people["a"], rng)] for i in range(6)]
    frames[3].append(sighting(3 / RATE, 600, people["b"], rng))
    tracker = FaceTracker(TrackerSettings())
    _, appeared, left = run(tracker, frames)
    assert len(appeared) == 1 and len(left) == 1
    assert next(tracker._ids) == 3  # the false detection did start a track, which was never confirmed


def test_weak_detections_continue_a_track_but_never_start_one(people: dict[str, np.ndarray]) -> None:
    rng = np.random.default_rng(5)
    settings = TrackerSettings(det_threshold=0.9, low_threshold=0.6, max_lost=0.3)
    frames = [[sighting(i / RATE, 300 + 5 * i, people["a"], rng, score=0.99 if i < 3 else 0.7)] for i in range(10)]
    frames[5].append(sighting(5 / RATE, 700, people["b"], rng, score=0.7))
    frames[6].append(sighting(6 / RATE, 700, people["b"], rng, score=0.7))
    _, appeared, left = run(FaceTracker(settings), frames)
    assert len(appeared) == 1 and left[0].end == pytest.approx(9 / RATE)  # followed through the weak frames
    assert left[0].hits == 10


def test_best_faces_and_identity_embedding(people: dict[str, np.ndarray]) -> None:
    rng = np.random.default_rng(6)
    tracker = FaceTracker(TrackerSettings(best_faces=3))
    sightings = [sighting(i / RATE, 300, people["a"], rng) for i in range(8)]
    for i, s in enumerate(sightings):
        s.quality = [0.2, 0.9, 0.1, 0.5, 0.8, 0.3, 0.95, 0.4][i]
        tracker.update(s.time, s.frame, [s])
    (track,) = tracker.tracks
    assert [b.quality for b in track.best] == [0.95, 0.9, 0.8]
    expected = np.mean([sightings[i].embedding for i in (6, 1, 4)], axis=0)
    np.testing.assert_allclose(track.embedding, expected / np.linalg.norm(expected), atol=1e-6)


def test_box_iou_against_pixel_counting() -> None:
    rng = np.random.default_rng(7)
    a = np.sort(rng.integers(0, 60, (5, 2, 2)), axis=1).transpose(0, 2, 1).reshape(5, 4)[:, [0, 2, 1, 3]]
    b = np.sort(rng.integers(0, 60, (4, 2, 2)), axis=1).transpose(0, 2, 1).reshape(4, 4)[:, [0, 2, 1, 3]]
    iou = box_iou(a, b)
    for i, j in itertools.product(range(5), range(4)):
        ma, mb = np.zeros((60, 60), bool), np.zeros((60, 60), bool)
        ma[a[i, 1] : a[i, 3], a[i, 0] : a[i, 2]] = True
        mb[b[j, 1] : b[j, 3], b[j, 0] : b[j, 2]] = True
        union = (ma | mb).sum()
        assert iou[i, j] == pytest.approx((ma & mb).sum() / union if union else 0.0)


# ---------------------------------------------------------------------------------------------------- identity
def brute_force(candidates: list[list[Candidate]], threshold: float) -> float:
    """The best total similarity of any assignment giving each track one subject or none, no subject twice."""
    options = [[None] + [c for c in found if c.similarity > threshold] for found in candidates]
    best = 0.0
    for choice in itertools.product(*options):
        subjects = [c.subject_id for c in choice if c is not None]
        if len(subjects) == len(set(subjects)):
            best = max(best, sum(c.similarity for c in choice if c is not None))
    return best


def test_assignment_is_exclusive_and_optimal() -> None:
    rng = np.random.default_rng(8)
    for _ in range(200):
        tracks, subjects = int(rng.integers(1, 5)), int(rng.integers(1, 6))
        candidates = [
            [Candidate(int(s), f"s{s}", float(rng.uniform(-0.2, 1.0))) for s in rng.permutation(subjects)[:3]]
            for _ in range(tracks)
        ]
        chosen = assign(candidates, 0.3)
        picked = [c.subject_id for c in chosen if c is not None]
        assert len(picked) == len(set(picked))
        assert all(c is None or c.similarity > 0.3 for c in chosen)
        assert all(c is None or c in found for c, found in zip(chosen, candidates))
        total = sum(c.similarity for c in chosen if c is not None)
        assert total == pytest.approx(brute_force(candidates, 0.3))


def test_two_tracks_wanting_one_person() -> None:
    alice, bob = Candidate(1, "alice", 0.8), Candidate(2, "bob", 0.5)
    chosen = assign([[alice, bob], [Candidate(1, "alice", 0.7), Candidate(2, "bob", 0.2)]], 0.3)
    assert [c.name if c else None for c in chosen] == ["bob", "alice"]  # 0.5 + 0.7 beats 0.8 + nothing
    chosen = assign([[alice, Candidate(2, "bob", 0.1)], [Candidate(1, "alice", 0.6)]], 0.3)
    assert [c.name if c else None for c in chosen] == ["alice", None]  # the other is an unknown person
