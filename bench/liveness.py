"""What the liveness check adds per face, against embedding the face with GhostFaceNetV1-1.3-1, as ratios from one
run on this CPU.

For one face of a real photo, the variants take turns in blocks of a few runs (so that they share whatever load the
machine has): ``embed`` aligns the face and embeds it as the pipeline does (V1-1.3-1, flip test-time augmentation,
the package's backend rule: ExecuTorch/XNNPACK with the mobile extra), ``liveness`` crops the two patches and runs both
MiniFASNets (same rule), ``detect`` runs RetinaFace on the photo, for scale. The table gives the median and fastest
batch-1 times and the ratio of the medians; the aim is liveness <= 1x embed.

    python bench/liveness.py [--photo PATH] [--repeats 50] [--threads 1] [--backend auto] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ghostfacenets.data.images import load_image
from ghostfacenets.liveness import LivenessChecker
from ghostfacenets.models.registry import create_model
from ghostfacenets.pipeline import FaceRecognizer

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT.parent / "shared" / "data" / "deepface_testpairs" / "img1.jpg"
BLOCK = 5


def measure(variants: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Batch-1 times in ms, the variants interleaved in blocks of ``BLOCK`` runs after a warm-up."""
    for run in variants.values():
        for _ in range(3):
            run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    while min(len(t) for t in times.values()) < repeats:
        for name, run in variants.items():
            for _ in range(BLOCK):
                start = time.perf_counter()
                run()
                times[name].append(1000 * (time.perf_counter() - start))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photo", type=Path, default=PHOTO)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="threads of torch, onnxruntime and XNNPACK calls (1)")
    parser.add_argument("--backend", default="auto", help="backend of both models (auto: the package's rule)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recognizer = FaceRecognizer(
        create_model("ghostfacenetv1-1.3-1"), device="cpu", backend=args.backend, threads=args.threads
    )
    checker = LivenessChecker(backend=args.backend, threads=args.threads)
    pixels = load_image(args.photo)
    face = recognizer.detect(pixels)[0]
    variants = {
        "embed (align + V1-1.3-1, flip)": lambda: recognizer.embed_aligned(recognizer.align(pixels, face)[None]),
        "liveness (2 patches + 2 MiniFASNets)": lambda: checker.scores(pixels, [face]),
        "detect (RetinaFace, whole photo)": lambda: recognizer.detect(pixels),
    }
    times = measure(variants, args.repeats)
    medians = {name: statistics.median(t) for name, t in times.items()}
    embed = next(iter(medians.values()))
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()}")
    print(f"embedder backend: {recognizer.embedder.name}; liveness backend: {checker.model.backend}")
    print(f"{'variant':40s} {'median ms':>10s} {'fastest ms':>10s} {'x embed':>8s}")
    for name, t in times.items():
        print(f"{name:40s} {medians[name]:10.2f} {min(t):10.2f} {medians[name] / embed:8.2f}")
    if args.json:
        record = {
            "load_average": os.getloadavg(),
            "cpu_count": os.cpu_count(),
            "backends": {"embedder": recognizer.embedder.name, "liveness": checker.model.backend},
            "median_ms": medians,
            "fastest_ms": {n: min(t) for n, t in times.items()},
            "liveness_over_embed": medians["liveness (2 patches + 2 MiniFASNets)"] / embed,
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
