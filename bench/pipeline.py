"""The whole pipeline per photo: decode, detect, align, embed and total, for the package's CPU backends and the device
pipeline files, at photo sizes from 320x240 to 4000x3000, as ratios from one run.

    python bench/pipeline.py [--sizes 320x240 640x480 1280x960 4000x3000] [--repeats 20] [--files DIR] [--json out.json]

Variants (each a detector backend and an embedder backend, as ``FaceRecognizer`` runs them for one face):

* ``onnxruntime 640`` / ``onnxruntime fast``: the onnxruntime detector at 640 pixels / with the single-face fast path
  (320 pixels first), the onnxruntime embedder (what a machine without the mobile extra runs);
* ``executorch 640`` / ``executorch fast``: the ExecuTorch detector and embedder (what ``backend="auto"`` runs with
  the mobile extra; ``fast`` is the default of verify, embed, enrol and identify);
* ``files .pte`` / ``.tflite`` / ``.onnx``: the device pipeline files (``export --pipeline``) run by the reference
  runner ``ghostfacenets.mobile`` as an app runs them: detect is the detector file and its decoding, embed is the
  window and the align-and-embed file (alignment inside), so their align column is empty.

The model is the official code's V1-1.3-1 test model (``../shared/fixtures``; random weights, the cost of the released
weights). The photo is a shared one with one face (img4), resized to each size and encoded as JPEG (quality 90).
Embedding uses flip (two crops), the package's default; ``embed 1 crop`` is one float32 embedding of the ExecuTorch
backend, the unit of the issue's aims, timed in the same run. Variants take turns in blocks of a few photos, so that
they share the machine's load; the machine (CPU model, family, model number, AVX flags) and its load average before
and after are printed and kept in the JSON.
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
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GHOSTFACENETS_SHARED", ROOT.parent / "shared"))
STEPS = ("decode", "detect", "align", "embed", "total")


def machine() -> dict[str, object]:
    """The CPU as the kernel reports it and the load average now."""
    info: dict[str, object] = {"platform": platform.platform(), "cores": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        flags = set(fields.get("flags", "").split())
        info.update(
            model_name=fields.get("model name"),
            family=fields.get("cpu family"),
            model=fields.get("model"),
            avx2="avx2" in flags,
            avx512f="avx512f" in flags,
            avx512_vnni="avx512_vnni" in flags,
        )
    except OSError:
        pass
    info["load_average"] = os.getloadavg()
    return info


def photos(sizes: list[tuple[int, int]]) -> dict[str, bytes]:
    """The one-face shared photo resized to each (width, height), as JPEG bytes."""
    source = cv2.imread(str(SHARED / "data" / "deepface_testpairs" / "img4.jpg"))
    out = {}
    for width, height in sizes:
        image = cv2.resize(source, (width, height), interpolation=cv2.INTER_AREA if width < 2500 else cv2.INTER_CUBIC)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        out[f"{width}x{height}"] = data.tobytes()
    return out


def package_variant(model: Path, backend: str, fast: bool) -> Callable[[bytes], dict[str, float]]:
    """One photo through ``FaceRecognizer``'s stages with the given backends, timed per stage (seconds)."""
    from ghostfacenets.data.align import align_face
    from ghostfacenets.data.images import load_image
    from ghostfacenets.pipeline import FaceRecognizer

    recognizer = FaceRecognizer(
        model, backend=backend, device="cpu", detector_backend=backend, fast_size=320 if fast else None
    )

    def run(data: bytes) -> dict[str, float]:
        t0 = time.perf_counter()
        pixels = load_image(data)
        t1 = time.perf_counter()
        face = max(recognizer.detector.detect_largest(pixels), key=lambda f: f.area)
        t2 = time.perf_counter()
        crop = align_face(pixels, face.landmarks)
        t3 = time.perf_counter()
        recognizer.embed_aligned(crop[None])
        t4 = time.perf_counter()
        return {"decode": t1 - t0, "detect": t2 - t1, "align": t3 - t2, "embed": t4 - t3, "total": t4 - t0}

    return run


def files_variant(stem: Path, suffix: str) -> Callable[[bytes], dict[str, float]]:
    """One photo through the device files, as the reference runner (an app) runs them."""
    from ghostfacenets.data.images import load_image
    from ghostfacenets.mobile import MobilePipeline

    pipeline = MobilePipeline.from_stem(stem, suffix)

    def run(data: bytes) -> dict[str, float]:
        t0 = time.perf_counter()
        pixels = load_image(data)
        t1 = time.perf_counter()
        face = max(pipeline.detect(pixels), key=lambda f: f.area)
        t2 = time.perf_counter()
        pipeline.embed(pixels, face)
        t3 = time.perf_counter()
        return {"decode": t1 - t0, "detect": t2 - t1, "align": 0.0, "embed": t3 - t2, "total": t3 - t0}

    return run


def one_crop(model: Path) -> Callable[[bytes], dict[str, float]]:
    """One float32 embedding of one aligned crop by the ExecuTorch backend, no flip: the unit of the aims."""
    from ghostfacenets.inference import load_embedder
    from ghostfacenets.model_io import load_model

    embedder = load_embedder(load_model(model), "cpu", "executorch")
    crop = np.full((1, 112, 112, 3), 128, np.uint8)

    def run(_: bytes) -> dict[str, float]:
        start = time.perf_counter()
        embedder.embed_batch(crop, False)
        elapsed = time.perf_counter() - start
        return {"decode": 0.0, "detect": 0.0, "align": 0.0, "embed": elapsed, "total": elapsed}

    return run


def measure(
    variants: dict[str, Callable[[bytes], dict[str, float]]], data: bytes, repeats: int, block: int = 4
) -> dict[str, dict[str, list[float]]]:
    """Stage times of each variant on one photo, in blocks that take turns, after two untimed runs per block."""
    times: dict[str, dict[str, list[float]]] = {name: {s: [] for s in STEPS} for name in variants}
    while any(len(t["total"]) < repeats for t in times.values()):
        for name, run in variants.items():
            run(data)
            run(data)
            for _ in range(min(block, repeats - len(times[name]["total"]))):
                for step, seconds in run(data).items():
                    times[name][step].append(seconds)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["320x240", "640x480", "1280x960", "1920x1440", "4000x3000"])
    parser.add_argument("--repeats", type=int, default=20, help="timed photos per variant and size (20)")
    parser.add_argument("--files", type=Path, help="folder of pipeline files (STEM gfn; exported there when missing)")
    parser.add_argument("--no-files", action="store_true", help="time the package's backends only")
    parser.add_argument(
        "--variants", nargs="+", help="only the variants whose names contain one of these strings (and the unit)"
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    from ghostfacenets.export.executorch import executorch_available
    from ghostfacenets.model_io import convert_keras

    before = machine()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    encoded = photos(sizes)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as tmp:
        model = convert_keras(
            SHARED / "fixtures" / "keras_reference" / "v1_w1.3_s1" / "model.h5", Path(tmp) / "v1.safetensors"
        )
        variants: dict[str, Callable[[bytes], dict[str, float]]] = {}
        backends = ["onnxruntime"] + (["executorch"] if executorch_available() else [])
        for backend in backends:
            variants[f"{backend} 640"] = package_variant(model, backend, fast=False)
            variants[f"{backend} fast"] = package_variant(model, backend, fast=True)
        if not args.no_files and executorch_available():
            folder = args.files or Path(tmp) / "files"
            folder.mkdir(parents=True, exist_ok=True)
            stem = folder / "gfn"
            from ghostfacenets.export.pipeline import RUNTIMES, export_pipeline
            from ghostfacenets.model_io import load_model

            for runtime, suffix in RUNTIMES.items():
                if not stem.with_name(f"gfn.align_embed{suffix}").is_file():
                    print(f"exporting the {runtime} pipeline files to {folder}", file=sys.stderr)
                    export_pipeline(load_model(model), stem, runtime)
                variants[f"files {suffix}"] = files_variant(stem, suffix)
        if args.variants:
            variants = {k: v for k, v in variants.items() if any(s in k for s in args.variants)}
        if executorch_available():
            variants["embed 1 crop (executorch)"] = one_crop(model)
        results: dict[str, dict[str, dict[str, float]]] = {}
        for label, data in encoded.items():
            print(f"{label}: timing {len(variants)} variants", file=sys.stderr)
            times = measure(variants, data, args.repeats)
            results[label] = {
                name: {step: 1000 * statistics.median(values) for step, values in steps.items()}
                for name, steps in times.items()
            }
    after = machine()
    print(
        f"CPU: {before.get('model_name')} (family {before.get('family')}, model {before.get('model')}; "
        f"AVX2 {before.get('avx2')}, AVX-512 {before.get('avx512f')}), {before.get('cores')} cores; load average "
        f"{before['load_average'][0]:.2f} before, {after['load_average'][0]:.2f} after"
    )  # type: ignore[index]
    print("median ms per photo (one face):")
    header = f"{'photo':<10} {'variant':<28}" + "".join(f"{s:>9}" for s in STEPS) + f"{'detect/unit':>13}"
    print(header)
    for label, by_variant in results.items():
        unit = by_variant.get("embed 1 crop (executorch)", {}).get("embed")
        for name, steps in by_variant.items():
            ratio = f"{steps['detect'] / unit:>12.2f}x" if unit and steps["detect"] else f"{'':>13}"
            print(f"{label:<10} {name:<28}" + "".join(f"{steps[s]:>9.2f}" for s in STEPS) + ratio)
    if args.json:
        args.json.write_text(
            json.dumps({"machine_before": before, "machine_after": after, "results": results}, indent=1)
        )


if __name__ == "__main__":
    main()
