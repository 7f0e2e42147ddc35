"""How many live faces of the shared photo sets pass the liveness check at its default threshold, with every
failure listed for examination: its score, the photo's and face's size, and how much of each patch's scale the photo
allowed (a patch that cannot reach 2.7x or 4x the face box is shrunk to fit, so the network sees less context than
it was trained on).

    python bench/liveness_live_rate.py [--sets deepface orl] [--threshold T] [--json out.json]

Sets: ``deepface`` (../shared/data/deepface_testpairs, 25 colour photos; the largest face of each) and ``orl``
(../shared/data/att_faces, 400 grey 92x112 face images of 40 people).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ghostfacenets.data.images import load_image
from ghostfacenets.liveness import LivenessChecker
from ghostfacenets.liveness.crop import patch_box, reference_box
from ghostfacenets.liveness.model import PATCHES
from ghostfacenets.pipeline.detect import RetinaFaceDetector

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = {"deepface": ("deepface_testpairs", "*.jpg"), "orl": ("att_faces", "s*/*.pgm")}


def reached_scales(width: int, height: int, box: tuple[int, int, int, int]) -> list[float]:
    """The scale each patch really has (the patch's width over the face box's)."""
    return [
        round((patch_box(width, height, box, p.scale)[2] - patch_box(width, height, box, p.scale)[0]) / box[2], 2)
        for p in PATCHES
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--threshold", type=float, help="default: the checker's (0.915)")
    parser.add_argument("--backend", default="fused")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    checker = LivenessChecker(threshold=args.threshold, backend=args.backend)
    detector = RetinaFaceDetector()
    report = {"threshold": checker.threshold.value, "threshold_source": checker.threshold.source, "sets": {}}
    for name in args.sets:
        folder, pattern = SETS[name]
        rows, no_face = [], []
        for path in sorted((SHARED / folder).glob(pattern)):
            pixels = load_image(path)
            faces = sorted(detector.detect(pixels), key=lambda f: -f.area)
            if not faces:
                no_face.append(str(path.relative_to(SHARED)))
                continue
            (result,) = checker.check(pixels, faces[:1])
            box = reference_box(faces[0].box)
            rows.append(
                {
                    "image": str(path.relative_to(SHARED)),
                    "score": round(result.score, 4),
                    "live": result.is_live,
                    "image_size": [pixels.shape[1], pixels.shape[0]],
                    "face_box": list(box[2:]),
                    "patch_scales": reached_scales(pixels.shape[1], pixels.shape[0], box),
                }
            )
        passed = sum(r["live"] for r in rows)
        scores = np.array([r["score"] for r in rows])
        report["sets"][name] = {
            "faces": len(rows),
            "passed": passed,
            "pass_rate": passed / len(rows) if rows else None,
            "no_face": no_face,
            "median_score": float(np.median(scores)) if rows else None,
            "failures": [r for r in rows if not r["live"]],
        }
        print(
            f"{name}: {passed} of {len(rows)} live faces pass at {checker.threshold.value:g} "
            f"({100 * passed / max(len(rows), 1):.1f} %); no face found in {len(no_face)} images"
        )
        for r in sorted(report["sets"][name]["failures"], key=lambda r: r["score"]):
            print(
                f"  {r['image']}: score {r['score']:.4f}, image {r['image_size']}, face {r['face_box']}, "
                f"patch scales reached {r['patch_scales']} of [2.7, 4.0]"
            )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
