"""Video speed: frames per second and the share of decode, detect, embed and track, at 480p and 1080p, for the
default sampling and its neighbours, with each run's accuracy against the scripted timeline; and how closely optical
flow follows faces between detections (IoU of the followed box with the detector's box in the same frame).

The videos are the tests' scripted door timeline (four people from ../shared's photos appearing, crossing, two at
once, leaving) rendered at each size and encoded as H.264 with PyAV; the gallery holds those four people and six
others. The model is the official code's V1-1.3-1 test model (the architecture of the released weights, random
weights, the same cost) run as ``ghostfacenets watch`` runs it (``backend="auto"``). The variants take turns, round
after round, so that they share whatever load the machine has; the table gives each one's median.

    python bench/video_speed.py [--rounds 2] [--sizes 480 1080] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.helpers.photos import photo  # noqa: E402
from tests.helpers.videos import DOOR_SCRIPT, PEOPLE, render  # noqa: E402

SHARED = Path(os.environ.get("GHOSTFACENETS_SHARED", ROOT.parent / "shared"))
SIZES = {480: (854, 480), 720: (1280, 720), 1080: (1920, 1080)}
VARIANTS = {  # name: (fps, detect_every)
    "10 fps, detect every 2nd (default)": (10.0, 2),
    "10 fps, detect every frame": (10.0, 1),
    "10 fps, detect every 3rd": (10.0, 3),
    "10 fps, detect every 5th": (10.0, 5),
    "5 fps, detect every frame": (5.0, 1),
}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def accuracy(analysis: Any, fps: float) -> dict[str, Any]:
    """Worst start and end error (seconds) over the script's appearances, and whether each got exactly one track
    with its person's identity."""
    worst_start = worst_end = 0.0
    right = 0
    for appearance in DOOR_SCRIPT.appearances:
        first, last = DOOR_SCRIPT.visible(appearance)
        mine = [t for t in analysis.tracks if t.identity is not None and t.identity.name == appearance.person]
        if len(mine) == 1:
            right += 1
            worst_start = max(worst_start, abs(mine[0].start - first))
            worst_end = max(worst_end, abs(mine[0].end - last))
    return {
        "tracks": len(analysis.tracks),
        "appearances": len(DOOR_SCRIPT.appearances),
        "right_identity": right,
        "worst_start_error_s": round(worst_start, 3),
        "worst_end_error_s": round(worst_end, 3),
        "one_sampled_frame_s": round(1 / fps + 1 / DOOR_SCRIPT.fps, 3),
    }


def flow_against_detection(recognizer: Any, video: Path, fps: float) -> dict[str, Any]:
    """IoU of the box optical flow carries from one sampled frame to the next with the detector's box there."""
    from ghostfacenets.video import VideoSource
    from ghostfacenets.video.motion import face_patch, follow, grey_frame
    from ghostfacenets.video.tracking import box_iou

    overlaps, lost, previous, faces = [], 0, None, []
    for frame in VideoSource(video, fps=fps):
        grey = grey_frame(frame.pixels)
        found = [f for f in recognizer.detect(frame.pixels) if f.score >= 0.9]
        if previous is not None and faces:
            moves = follow(previous, grey, [(f.box, f.landmarks, face_patch(previous, f.box)) for f in faces])
            for move in moves:
                if move.box is None:
                    lost += 1
                elif found:
                    overlaps.append(float(box_iou(move.box[None], np.stack([f.box for f in found])).max()))
        previous, faces = grey, found
    return {
        "followed": len(overlaps),
        "lost": lost,
        "iou_mean": round(statistics.fmean(overlaps), 3) if overlaps else None,
        "iou_p10": round(float(np.percentile(overlaps, 10)), 3) if overlaps else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="times each variant runs, in turn (default 2)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[480, 1080], choices=sorted(SIZES))
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--backend", default="auto", help="how the model runs (default auto, as the CLI)")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    args = parser.parse_args()

    import torch

    from ghostfacenets.model_io import convert_keras
    from ghostfacenets.pipeline import FaceRecognizer
    from ghostfacenets.video import TrackerSettings, VideoSource, VideoWatcher

    torch.set_num_threads(1)
    machine = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }
    print(f"{machine['cpu']}, {machine['cores']} cores, load {machine['loadavg_before']}", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="video-bench-"))
    model = convert_keras(SHARED / "fixtures" / "keras_reference" / "v1_w1.3_s1" / "model.h5", work / "v1.safetensors")
    recognizer = FaceRecognizer(model, backend=args.backend, score_threshold=0.6)
    db = work / "gallery.sqlite"
    for name, image in PEOPLE.items():
        recognizer.enroll(db, name, photo(image))
    for image in ("img2.jpg", "img8.jpg", "img18.jpg", "img20.jpg", "img22.jpg", "img24.jpg"):
        recognizer.enroll(db, f"other-{Path(image).stem}", photo(image))
    videos = {}
    for size in args.sizes:
        width, height = SIZES[size]
        started = time.perf_counter()
        videos[size] = render(replace(DOOR_SCRIPT, width=width, height=height), work / f"door-{size}p.mp4")
        print(f"rendered {size}p ({width}x{height}) in {time.perf_counter() - started:.0f} s", file=sys.stderr)

    runs: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for round_ in range(args.rounds):
        for size in args.sizes:
            for variant in args.variants:
                fps, every = VARIANTS[variant]
                watcher = VideoWatcher(
                    recognizer, db, detect_every=every, tracker=TrackerSettings(det_threshold=0.9, low_threshold=0.6)
                )
                started, cpu = time.perf_counter(), time.process_time()
                analysis = watcher.analyze(VideoSource(videos[size], fps=fps))
                wall, cpu = time.perf_counter() - started, time.process_time() - cpu
                times = analysis.times.to_dict()
                record = {
                    "wall_s": round(wall, 3),
                    "video_s": DOOR_SCRIPT.duration,
                    "frames_per_s": round(analysis.times.frames_decoded / wall, 1),
                    "analysed_per_s": round(analysis.times.frames_analysed / wall, 1),
                    "realtime_factor": round(DOOR_SCRIPT.duration / wall, 2),
                    "cpu_s_per_video_s": round(cpu / DOOR_SCRIPT.duration, 3),
                    **times,
                    "accuracy": accuracy(analysis, fps),
                }
                runs.setdefault((size, variant), []).append(record)
                print(
                    f"round {round_ + 1} {size}p {variant}: {record['realtime_factor']}x real time, "
                    f"shares {times['share']}",
                    file=sys.stderr,
                )
    flow = {size: flow_against_detection(recognizer, videos[size], 10.0) for size in args.sizes}
    machine["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]

    print(
        f"\n{machine['cpu']}, {machine['cores']} cores; load average {machine['loadavg_before']} before, "
        f"{machine['loadavg_after']} after; backend {args.backend}; {DOOR_SCRIPT.duration} s of 25 fps video\n"
    )
    print(
        "| size | sampling | video frames/s | x real time | CPU s per video s | decode | detect | embed | track "
        "| tracks right "
        "| worst start / end error, s (one sampled frame) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    summary = []
    for (size, variant), records in runs.items():
        share = {k: statistics.median(r["share"][k] for r in records) for k in ("decode", "detect", "embed", "track")}
        acc = records[-1]["accuracy"]
        row = {
            "size": size,
            "variant": variant,
            "frames_per_s": statistics.median(r["frames_per_s"] for r in records),
            "realtime_factor": statistics.median(r["realtime_factor"] for r in records),
            "cpu_s_per_video_s": statistics.median(r["cpu_s_per_video_s"] for r in records),
            "share": share,
            "accuracy": acc,
            "runs": records,
        }
        summary.append(row)
        print(
            f"| {size}p | {variant} | {row['frames_per_s']:.0f} | {row['realtime_factor']:.2f} | "
            f"{row['cpu_s_per_video_s']:.2f} | "
            + " | ".join(f"{share[k]:.0%}" for k in ("decode", "detect", "embed", "track"))
            + f" | {acc['right_identity']}/{acc['appearances']} ({acc['tracks']} tracks) | "
            f"{acc['worst_start_error_s']} / {acc['worst_end_error_s']} ({acc['one_sampled_frame_s']}) |"
        )
    print("\nOptical flow between sampled frames (10 fps) against the detector in the next frame:")
    for size, result in flow.items():
        print(f"  {size}p: {result}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "results": summary, "flow": flow}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
