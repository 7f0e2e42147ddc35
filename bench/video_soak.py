"""Video soak: a stream of any length in flat memory. The tests' door video (four people from ../shared's photos,
appearing, crossing, leaving) is played in a loop as one endless stream and watched with the default sampling and a
gallery, for ``--seconds`` of video (an hour by default); the process's resident memory is sampled every
``--every`` seconds of video and its growth after the warm-up reported.

    python bench/video_soak.py [--seconds 3600] [--every 60] [--size 480] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.video_speed import SHARED, SIZES, cpu_model  # noqa: E402

from tests.helpers.photos import photo  # noqa: E402
from tests.helpers.videos import DOOR_SCRIPT, PEOPLE, render  # noqa: E402


def rss_mb() -> float:
    """This process's resident memory (Linux)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3600.0, help="seconds of video to watch (default 3600)")
    parser.add_argument("--every", type=float, default=60.0, help="sample memory every this many video seconds")
    parser.add_argument("--size", type=int, default=480, choices=sorted(SIZES))
    parser.add_argument("--json", metavar="OUT", help="also write the samples as JSON")
    args = parser.parse_args()

    import torch

    from ghostfacenets.model_io import convert_keras
    from ghostfacenets.pipeline import FaceRecognizer
    from ghostfacenets.video import DEFAULT_FPS, TrackerSettings, VideoSource, VideoWatcher

    torch.set_num_threads(1)
    load_before = [round(x, 2) for x in os.getloadavg()]
    work = Path(tempfile.mkdtemp(prefix="video-soak-"))
    model = convert_keras(SHARED / "fixtures" / "keras_reference" / "v1_w1.3_s1" / "model.h5", work / "v1.safetensors")
    recognizer = FaceRecognizer(model, score_threshold=0.6)
    db = work / "gallery.sqlite"
    for name, image in PEOPLE.items():
        recognizer.enroll(db, name, photo(image))
    width, height = SIZES[args.size]
    video = render(replace(DOOR_SCRIPT, width=width, height=height), work / "door.mp4")
    watcher = VideoWatcher(recognizer, db, tracker=TrackerSettings(det_threshold=0.9, low_threshold=0.6))
    samples: list[dict[str, float]] = []
    counts = {"appeared": 0, "identified": 0, "left": 0}
    started = time.perf_counter()
    next_sample = 0.0
    events = watcher.watch(VideoSource(video, fps=DEFAULT_FPS, loop=True))
    for event in events:
        counts[event.event] += 1
        if event.time >= next_sample:
            samples.append(
                {"video_s": round(event.time, 1), "wall_s": round(time.perf_counter() - started, 1), "rss_mb": rss_mb()}
            )
            print(f"{samples[-1]} {counts}", file=sys.stderr)
            next_sample += args.every
        if event.time >= args.seconds:
            break
    events.close()
    wall = time.perf_counter() - started
    warm = [s for s in samples if s["video_s"] >= min(300.0, args.seconds / 4)] or samples
    growth = warm[-1]["rss_mb"] - warm[0]["rss_mb"]
    result = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "video_s": args.seconds,
        "wall_s": round(wall, 1),
        "realtime_factor": round(args.seconds / wall, 2),
        "events": counts,
        "rss_mb_first": round(samples[0]["rss_mb"], 1),
        "rss_mb_after_warm_up": round(warm[0]["rss_mb"], 1),
        "rss_mb_last": round(samples[-1]["rss_mb"], 1),
        "rss_mb_max": round(max(s["rss_mb"] for s in samples), 1),
        "growth_after_warm_up_mb": round(growth, 1),
        "samples": samples,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
