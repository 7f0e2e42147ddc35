"""What int8 changes in the device pipeline files (ExecuTorch): faces found, landmark error in pixels, embedding
agreement with the float32 files, and verification accuracy on the shared labelled pairs, through the reference runner.

    python bench/pipeline_int8.py [--model M.safetensors] [--files DIR] [--json out.json]

The model defaults to the official code's V1-1.3-1 test model (random weights: its accuracies are not meaningful,
their change is). Calibration never touches the evaluation photos: the GhostFaceNet on 200 ORL faces of people s1-s20,
the detector on the ORL photos of s1-s20 enlarged 2, 3 and 4 times (faces of 180 to 450 pixels). Evaluation: the 25
deepface photos (faces, landmarks, embeddings) with the 300 pairs of master.csv, and the ORL photos of s31-s40 with all
their same-person pairs (450) and as many different-person pairs.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GHOSTFACENETS_SHARED", ROOT.parent / "shared"))


def best_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy at the best threshold (every midpoint tried)."""
    order = np.sort(scores)
    candidates = np.concatenate([[order[0] - 1], (order[1:] + order[:-1]) / 2, [order[-1] + 1]])
    return float(max(np.mean((scores > t) == labels) for t in candidates))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="model file (default: ../shared V1-1.3-1 test model)")
    parser.add_argument("--files", type=Path, help="keep the exported files here (reused when present)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from ghostfacenets.data.crops import load_face_crops
    from ghostfacenets.data.images import load_image
    from ghostfacenets.export.pipeline import export_pipeline
    from ghostfacenets.mobile import MobilePipeline
    from ghostfacenets.model_io import convert_keras, load_model

    orl = SHARED / "data" / "att_faces"
    with tempfile.TemporaryDirectory() as tmp:
        source = args.model or convert_keras(
            SHARED / "fixtures" / "keras_reference" / "v1_w1.3_s1" / "model.h5", Path(tmp) / "v1.safetensors"
        )
        model = load_model(source)
        folder = args.files or Path(tmp) / "files"
        folder.mkdir(parents=True, exist_ok=True)
        stem = folder / "gfn"
        if not stem.with_name("gfn.align_embed.pte").is_file():
            export_pipeline(model, stem, "executorch")
        if not stem.with_name("gfn.align_embed.int8.pte").is_file():
            faces = Path(tmp) / "faces"
            for s in range(1, 21):
                (faces / f"s{s}").mkdir(parents=True)
                for k in range(1, 11):
                    cv2.imwrite(str(faces / f"s{s}" / f"{k}.png"), cv2.imread(str(orl / f"s{s}" / f"{k}.pgm")))
            calibration = load_face_crops(faces, 200)
            photos = [
                cv2.resize(load_image(orl / f"s{s}" / f"{k}.pgm"), None, fx=f, fy=f, interpolation=cv2.INTER_CUBIC)
                for s in range(1, 21)
                for k in (1, 5, 9)
                for f in (2, 3, 4)
            ]
            print(f"calibrating on {len(calibration)} ORL faces and {len(photos)} enlarged ORL photos", file=sys.stderr)
            export_pipeline(model, stem, "executorch", "int8", calibration=calibration, detector_calibration=photos)
        pipelines = {p: MobilePipeline.from_stem(stem, ".pte", p) for p in ("float32", "int8")}
        sizes = {
            p: pipeline.detector.path.stat().st_size + pipeline.align_embed.path.stat().st_size
            for p, pipeline in pipelines.items()
        }

        report: dict[str, object] = {"model": str(args.model or "V1-1.3-1 test model (random weights)")}
        deepface = SHARED / "data" / "deepface_testpairs"
        names = [f"img{i}.jpg" for i in range(1, 26)]
        found: dict[str, dict[str, list]] = {p: {} for p in pipelines}
        embeddings: dict[str, dict[str, np.ndarray]] = {p: {} for p in pipelines}
        landmark_px, crop_px, cosines = [], [], []
        for name in names:
            photo = load_image(deepface / name)
            for precision, pipeline in pipelines.items():
                faces = pipeline.detect(photo)
                found[precision][name] = faces
                if faces:
                    largest = max(faces, key=lambda f: f.area)
                    embeddings[precision][name] = pipeline.embed(photo, largest)
            a, b = found["float32"][name], found["int8"][name]
            if a and b:
                fa, fb = max(a, key=lambda f: f.area), max(b, key=lambda f: f.area)
                width = fa.box[2] - fa.box[0]
                landmark_px.append(float(np.abs(fa.landmarks - fb.landmarks).max()))
                crop_px.append(float(np.abs(fa.landmarks - fb.landmarks).max() * 112 / max(width, 1)))
                cosines.append(float(embeddings["float32"][name] @ embeddings["int8"][name]))
        report["deepface_faces_found"] = {p: sum(map(len, f.values())) for p, f in found.items()}
        report["deepface_photos_without_face"] = {p: sum(not v for v in f.values()) for p, f in found.items()}
        report["landmark_error_px"] = {"max": max(landmark_px), "median": float(np.median(landmark_px))}
        report["landmark_error_per_112_px_of_box_width"] = {"max": max(crop_px), "median": float(np.median(crop_px))}
        report["embedding_cosine_int8_vs_float32"] = {"min": min(cosines), "mean": float(np.mean(cosines))}
        with open(deepface / "master.csv") as f:
            pairs = [(r["file_x"], r["file_y"], r["Decision"] == "Yes") for r in csv.DictReader(f)]
        report["deepface_pairs"] = {}
        for precision in pipelines:
            e = embeddings[precision]
            kept = [(x, y, same) for x, y, same in pairs if x in e and y in e]
            scores = np.array([e[x] @ e[y] for x, y, _ in kept])
            labels = np.array([same for _, _, same in kept])
            report["deepface_pairs"][precision] = {"pairs": len(kept), "best_accuracy": best_accuracy(scores, labels)}
        orl_embeddings: dict[str, dict[tuple[int, int], np.ndarray]] = {p: {} for p in pipelines}
        orl_missing = dict.fromkeys(pipelines, 0)
        for s in range(31, 41):
            for k in range(1, 11):
                photo = load_image(orl / f"s{s}" / f"{k}.pgm")
                for precision, pipeline in pipelines.items():
                    result = pipeline.largest(photo)
                    if result is None:
                        orl_missing[precision] += 1
                    else:
                        orl_embeddings[precision][(s, k)] = result[1]
        same = [((s, a), (s, b)) for s in range(31, 41) for a, b in itertools.combinations(range(1, 11), 2)]
        rng = np.random.default_rng(0)
        different = []
        while len(different) < len(same):
            s, t = rng.choice(np.arange(31, 41), 2, replace=False)
            different.append(((int(s), int(rng.integers(1, 11))), (int(t), int(rng.integers(1, 11)))))
        report["orl_photos_without_face"] = orl_missing
        report["orl_pairs"] = {}
        for precision in pipelines:
            e = orl_embeddings[precision]
            labelled = [(a, b, True) for a, b in same] + [(a, b, False) for a, b in different]
            kept = [(a, b, lab) for a, b, lab in labelled if a in e and b in e]
            scores = np.array([e[a] @ e[b] for a, b, _ in kept])
            labels = np.array([lab for _, _, lab in kept])
            report["orl_pairs"][precision] = {"pairs": len(kept), "best_accuracy": best_accuracy(scores, labels)}
        report["file_bytes"] = sizes
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
