"""The door video end to end against its script: one track per appearance with the right identity and times
within one sampled frame, no identity switch within a track, never one identity on two tracks at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from ghostfacenets.video import DEFAULT_FPS, TrackerSettings, VideoAnalysis, VideoSource, VideoWatcher
from tests.helpers.videos import DOOR_SCRIPT, Script


@pytest.fixture(scope="module")
def door_analysis(recognizer, door_video: Path, door_gallery: Path) -> VideoAnalysis:
    """The default sampling (10 frames a second, detection in every second one)."""
    watcher = VideoWatcher(recognizer, door_gallery, tracker=TrackerSettings(det_threshold=0.9, low_threshold=0.6))
    return watcher.analyze(VideoSource(door_video, fps=DEFAULT_FPS))


def check_against_script(analysis: VideoAnalysis, script: Script, fps: float, identities: bool) -> None:
    """Each appearance is exactly one track, starting and ending within one sampled frame of the script."""
    tracks = analysis.tracks
    assert len(tracks) == len(script.appearances), [t.to_dict() for t in tracks]
    one_frame = 1 / fps + 1 / script.fps  # a sampled frame, on the video's own frame grid
    unmatched = list(tracks)
    for appearance in script.appearances:
        first, last = script.visible(appearance)
        if identities:
            (track,) = [t for t in unmatched if t.identity is not None and t.identity.name == appearance.person]
        else:  # the one track overlapping the appearance most
            track = max(unmatched, key=lambda t: min(t.end, last) - max(t.start, first))
        unmatched.remove(track)
        assert abs(track.start - first) <= one_frame, (appearance.person, track.start, first)
        assert abs(track.end - last) <= one_frame, (appearance.person, track.end, last)


def test_every_track_matches_the_script(door_analysis: VideoAnalysis) -> None:
    check_against_script(door_analysis, DOOR_SCRIPT, DEFAULT_FPS, identities=True)


def test_no_identity_switch_and_no_identity_twice_at_once(door_analysis: VideoAnalysis) -> None:
    events = door_analysis.events
    for track in door_analysis.tracks:
        mine = [e for e in events if e.track == track.track]
        assert [e.event for e in mine][0] == "appeared" and mine[-1].event == "left"
        names = {e.identity.name for e in mine if e.event in ("identified", "left") and e.identity is not None}
        assert len(names) == 1  # decided once, never switched
        assert sum(e.event == "identified" for e in mine) == 1
    tracks = door_analysis.tracks
    for a in tracks:
        for b in tracks:
            if a.track < b.track and a.start <= b.end and b.start <= a.end:  # on screen together
                assert a.identity is not None and b.identity is not None and a.identity.name != b.identity.name
    times = [e.time for e in events]
    assert times == sorted(times)


def test_event_records(door_analysis: VideoAnalysis) -> None:
    record = door_analysis.to_dict()
    assert record["video"]["width"] == 640 and record["video"]["fps"] == 25.0
    left = record["tracks"][0]
    assert set(left) >= {"event", "track", "time", "start", "end", "box", "quality", "identity", "similarity"}
    assert left["event"] == "left" and left["similarity"] > left["threshold"]
    times = record["times"]
    assert times["frames_analysed"] == pytest.approx(DOOR_SCRIPT.duration * DEFAULT_FPS, abs=2)
    assert times["detection_frames"] == pytest.approx(times["frames_analysed"] / 2, abs=1)
    assert sum(times["share"].values()) == pytest.approx(1.0, abs=1e-3)


def test_tracks_without_a_gallery_detecting_every_frame(recognizer, door_video: Path) -> None:
    watcher = VideoWatcher(recognizer, detect_every=1, tracker=TrackerSettings(det_threshold=0.9, low_threshold=0.6))
    analysis = watcher.analyze(VideoSource(door_video, fps=5))
    check_against_script(analysis, DOOR_SCRIPT, 5, identities=False)
    assert all(e.identity is None and e.event != "identified" for e in analysis.events)
