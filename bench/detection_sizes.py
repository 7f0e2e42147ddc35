"""What the detection size changes: faces found on the shared photos at each size, and what the single-face fast path
finds against the full detection (the same largest face?), with the time of each choice from one run.

    python bench/detection_sizes.py [--sizes 320 480 640 960 1280 0] [--fast 320] [--backend onnxruntime]

Size 0 is the photo's full resolution. Photos: every deepface test photo and the ORL faces (``../shared/data``). The
fast path detects at ``--fast`` first and at 640 only when no face of 48 pixels (at that size) is found; "same
largest" counts photos whose largest face is the one the 640 detection calls largest (IoU > 0.5).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GHOSTFACENETS_SHARED", ROOT.parent / "shared"))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[320, 480, 640, 960, 1280, 0])
    parser.add_argument("--fast", type=int, default=320)
    parser.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "executorch"))
    args = parser.parse_args()

    from ghostfacenets.data.images import load_image
    from ghostfacenets.pipeline.detect import RetinaFaceDetector

    sets = {
        "deepface (25 photos)": sorted((SHARED / "data" / "deepface_testpairs").glob("*.jpg")),
        "ORL (400 photos)": sorted((SHARED / "data" / "att_faces").glob("s*/*.pgm")),
    }
    for label, paths in sets.items():
        photos = [load_image(p) for p in paths]
        print(f"{label}: {os.getloadavg()[0]:.1f} load average")
        print(f"{'size':<14}{'faces':>7}{'photos without':>16}{'ms per photo':>14}")
        reference: list[list] = []
        for size in args.sizes:
            detector = RetinaFaceDetector(max_size=size or 100_000, backend=args.backend, fast_size=None)
            detector.detect(photos[0])  # programs and sessions made before timing
            start = time.perf_counter()
            found = [detector.detect(p) for p in photos]
            ms = 1000 * (time.perf_counter() - start) / len(photos)
            if size == 640:
                reference = found
            name = str(size) if size else "full"
            print(f"{name:<14}{sum(map(len, found)):>7}{sum(not f for f in found):>16}{ms:>14.1f}")
        fast = RetinaFaceDetector(max_size=640, fast_size=args.fast, backend=args.backend)
        fast.detect_largest(photos[0])
        start = time.perf_counter()
        largest = [fast.detect_largest(p) for p in photos]
        ms = 1000 * (time.perf_counter() - start) / len(photos)
        same = sum(
            bool(f and r) and iou(max(f, key=lambda x: x.area).box, max(r, key=lambda x: x.area).box) > 0.5
            for f, r in zip(largest, reference)
        )
        fell_back = sum(len(f) > 0 and p.shape[0] > args.fast for f, p in zip(largest, photos))
        print(
            f"fast {args.fast}: largest face the same as at 640 on {same} of {sum(bool(r) for r in reference)} "
            f"photos with a face, none lost: {all(bool(f) for f, r in zip(largest, reference) if r)}; "
            f"{ms:.1f} ms per photo ({fell_back} photos larger than {args.fast})"
        )


if __name__ == "__main__":
    main()
