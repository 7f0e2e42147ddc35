"""A stream of any length in flat memory, short: a 2-second clip (one person in, one person out) played in a loop as
one stream for a minute of video; a new track every pass, and the process's memory flat after the first quarter.
bench/video_soak.py runs the same for an hour (docs/benchmarks.md)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from ghostfacenets.video import TrackerSettings, VideoSource, VideoWatcher
from tests.helpers.videos import Appearance, Script, render

CLIP = Script(
    (Appearance("angelina", 0.3, 1.5, (0.4, 0.5), (0.55, 0.5), size=0.4),), duration=2.0, width=320, height=240
)
MINUTE = 60.0


def rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_a_looped_clip_watched_for_a_minute_stays_flat(recognizer, door_gallery: Path, tmp_path: Path) -> None:
    clip = render(CLIP, tmp_path / "clip.mp4")
    watcher = VideoWatcher(recognizer, door_gallery, tracker=TrackerSettings(max_lost=0.3, low_threshold=0.6))
    events = watcher.watch(VideoSource(clip, fps=5, loop=True))
    left, memory = [], []
    for event in events:
        if event.event == "left":
            left.append(event)
            memory.append((event.time, rss_mb()))
        if event.time >= MINUTE:
            break
    events.close()
    passes = int(MINUTE // CLIP.duration)
    assert len(left) >= passes - 1  # one track each pass: none merged into an endless one, none kept
    assert {e.identity.name for e in left if e.identity is not None} == {"angelina"}
    after_warm_up = [rss for t, rss in memory if t >= MINUTE / 4]
    assert after_warm_up[-1] - after_warm_up[0] < 8.0, memory  # MB
