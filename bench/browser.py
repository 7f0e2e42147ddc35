"""The browser module against the native runtimes, in one run: embedding (batch 1) and detection (a 640x480 selfie, at
640 and with the single-face fast path) in headless Chromium with both of its runtimes, LiteRT.js (the service's
choice for a model it converts) and onnxruntime-web (for an ONNX model), at 1 and 2 threads, and natively
(ExecuTorch/XNNPACK and onnxruntime for the embedder, onnxruntime for RetinaFace, as the package runs them); a whole
verify of two photos in the page; the first visit's time and bytes, cold and from the cache, for each runtime.

Native and browser take turns in rounds, so that they share whatever load the machine has; each figure is the median
of its rounds' medians, and each ratio is taken within a round. The 1-minute load average is recorded before and
after. Weights are random (speed does not depend on them), with BatchNorm statistics measured on random images
(``tests.helpers.models.randomized``) so that activations keep a trained model's scale: the int8 weights'
agreement with float32 means something only then (an untrained model's embeddings are 1e6 long and chaotic).

    python bench/browser.py [--model ghostfacenetv1-1.3-1] [--rounds 5] [--repeats 20] [--json out.json]
    python bench/browser.py --web-weights float32     # browsers get float32 files (default: int8 weights)

``bench/browser_kernels.py`` shows where onnxruntime-web's time goes, operator by operator.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' helpers: the service as a process, Chromium with Playwright

from bench.pipeline import machine  # noqa: E402

from tests.helpers.browser import chromium, first_visit  # noqa: E402
from tests.helpers.models import randomized  # noqa: E402
from tests.helpers.service import start_service  # noqa: E402

PHOTOS = ROOT.parent / "shared" / "data" / "deepface_testpairs"


def selfie() -> np.ndarray:
    """A 640x480 RGB photo with one large face: img2 of the shared photos cut around its face."""
    from ghostfacenets.data.images import load_image
    from ghostfacenets.pipeline.detect import RetinaFaceDetector

    image = load_image(PHOTOS / "img2.jpg")
    face = RetinaFaceDetector().detect(image)[0]
    height, width = image.shape[:2]
    cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
    # a 4:3 window in which the face is about half the height, as in a selfie (smaller where the photo ends)
    h = min(2.0 * face.height, height, width * 3 / 4)
    w = h * 4 / 3
    x0 = int(np.clip(cx - w / 2, 0, width - w))
    y0 = int(np.clip(cy - h / 2, 0, height - h))
    crop = image[y0 : y0 + int(h), x0 : x0 + int(w)]
    return cv2.resize(crop, (640, 480), interpolation=cv2.INTER_AREA)


def median_ms(function: Callable[[], object], repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def bench_crop() -> np.ndarray:
    """The crop the page embeds too: (i * 7919) % 256 over its bytes."""
    return ((np.arange(112 * 112 * 3) * 7919) % 256).astype(np.uint8).reshape(1, 112, 112, 3)


def native_runners(onnx: Path, pte: Path | None, photo: np.ndarray) -> dict[str, Callable[[], object]]:
    import onnxruntime as ort

    from ghostfacenets.data.transforms import to_array
    from ghostfacenets.inference import load_embedder
    from ghostfacenets.pipeline.detect import RetinaFaceDetector
    from ghostfacenets.serve.web import FAST_PATH

    crop = bench_crop()
    x = to_array(crop)
    runners: dict[str, Callable[[], object]] = {}
    for threads in (1, 2):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(onnx), options, providers=["CPUExecutionProvider"])
        runners[f"embed onnxruntime {threads}t"] = lambda s=session: s.run(None, {"input": x})
        full = RetinaFaceDetector(max_size=640, threads=threads)
        small = RetinaFaceDetector(max_size=FAST_PATH["size"], threads=threads)
        runners[f"detect 640 onnxruntime {threads}t"] = lambda d=full: d.detect(photo)
        runners[f"detect fast path onnxruntime {threads}t"] = lambda d=small: d.detect(photo)
    if pte is not None:
        embedder = load_embedder(pte)
        runners["embed executorch"] = lambda: embedder.embed_batch(crop, False)
    return runners


def native_reference(served: bytes, folder: Path) -> np.ndarray:
    """The raw embedding of the bench crop by the embedder file ``served`` (ONNX or .tflite), natively."""
    from ghostfacenets.inference import load_embedder

    path = folder / ("served.tflite" if served[4:8] == b"TFL3" else "served.onnx")
    path.write_bytes(served)
    return load_embedder(path).embed_batch(bench_crop(), False)[0]


def cosine(a: Any, b: Any) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


BROWSER_SETUP = """async ([threads, photos]) => {
  const g = await import("/web/ghostfacenets.mjs");
  const model = await g.load({threads});
  const decode = (b64) => new Blob([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], {type: "image/jpeg"});
  const selfie = await g.readPixels(decode(photos.selfie));
  window.bench = {model, g, selfie, a: decode(photos.a), b: decode(photos.b)};
  return model.threads;
}"""

BROWSER_TIMES = """async (repeats) => {
  const {model, g, selfie, a, b} = window.bench;
  const median = async (f) => {
    await f();
    const times = [];
    for (let i = 0; i < repeats; i++) { const t = performance.now(); await f(); times.push(performance.now() - t); }
    times.sort((x, y) => x - y);
    return times[Math.floor(times.length / 2)];
  };
  const crop = new Uint8Array(112 * 112 * 3).map((_, i) => (i * 7919) % 256);
  const verify = async () => {
    const [fa, fb] = [await model.largestFace(a, {singleFace: false}), await model.largestFace(b, {singleFace: false})];
    return model.verify(fa.embedding, fb.embedding);
  };
  const raw = await model.runtime.embed([crop], false);
  return {
    "raw embedding": Array.from(raw),
    "embed": await median(() => model.runtime.embed([crop], false)),
    "detect 640": await median(() => model.detect(selfie, {maxSize: 640})),
    "detect fast path": await median(() => model.detect(selfie, {singleFace: true})),
    "verify two photos": await median(verify),
  };
}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ghostfacenetv1-1.3-1", help="architecture (random weights)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--web-weights",
        choices=("int8", "float32"),
        default="int8",
        help="the embedder browsers get (serve --web-weights; default int8 weights, as serve)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import ghostfacenets as gfn
    from ghostfacenets.export.executorch import export_executorch
    from ghostfacenets.export.onnx import export_onnx

    work = Path(tempfile.mkdtemp(prefix="bench-browser-"))
    model = randomized(gfn.create_model(args.model))
    models = {  # the same weights: converted to .tflite by the service (LiteRT.js), and as ONNX (onnxruntime-web)
        "litert.js": gfn.save_model(model, work / "model.safetensors"),
        "onnxruntime-web": export_onnx(model, work / "model.onnx"),
    }
    pte = export_executorch(model, work / "model.pte")
    photo = selfie()
    photos = {
        "selfie": base64.b64encode(cv2.imencode(".jpg", photo[..., ::-1])[1].tobytes()).decode(),
        "a": base64.b64encode((PHOTOS / "img1.jpg").read_bytes()).decode(),
        "b": base64.b64encode((PHOTOS / "img2.jpg").read_bytes()).decode(),
    }
    native = native_runners(models["onnxruntime-web"], pte, photo)
    float32_reference = native_reference(models["onnxruntime-web"].read_bytes(), work)
    loads = [os.getloadavg()[0]]
    services = {
        runtime: start_service(
            path, work / f"{runtime}.sqlite", work / f"{runtime}.log", "--web-weights", args.web_weights
        )
        for runtime, path in models.items()
    }
    rows: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}
    agreement: dict[str, list[float]] = {}
    versus_float32: dict[str, list[float]] = {}
    served_bytes, references, visits = {}, {}, {}
    try:
        for runtime, service in services.items():
            with service.client() as http:  # the embedder exactly as the service gives it to browsers
                manifest = http.get("/web/manifest.json", timeout=600).json()
                served = http.get(f"/web/{manifest['embedder']['url']}").content
            served_bytes[runtime], references[runtime] = len(served), native_reference(served, work)
        with chromium() as browser:
            pages = {}
            for runtime, service in services.items():
                visits[runtime] = first_visit(browser, service.url)
                for threads in (1, 2):
                    page = browser.new_page()
                    page.goto(service.url + "/")
                    got = page.evaluate(BROWSER_SETUP, [threads, photos])
                    pages[runtime, threads] = page
                    print(f"{runtime} page with {got} thread(s) ready", file=sys.stderr)
            for r in range(args.rounds):
                mine = {name: median_ms(f, args.repeats) for name, f in native.items()}
                for (runtime, threads), page in pages.items():
                    timed = page.evaluate(BROWSER_TIMES, args.repeats)
                    raw = timed.pop("raw embedding")
                    agreement.setdefault(runtime, []).append(cosine(raw, references[runtime]))
                    versus_float32.setdefault(runtime, []).append(cosine(raw, float32_reference))
                    for name, ms in timed.items():
                        mine[f"{name} {runtime} {threads}t"] = ms
                for name, ms in mine.items():
                    rows.setdefault(name, []).append(ms)
                for runtime, t in pages:
                    pairs = {
                        f"embed {runtime} {t}t / executorch": ("embed", "embed executorch"),
                        f"fast path {runtime} {t}t / onnxruntime {t}t": (
                            "detect fast path",
                            f"detect fast path onnxruntime {t}t",
                        ),
                        f"detect 640 {runtime} {t}t / onnxruntime {t}t": ("detect 640", f"detect 640 onnxruntime {t}t"),
                    }
                    for label, (top, bottom) in pairs.items():
                        ratios.setdefault(label, []).append(mine[f"{top} {runtime} {t}t"] / mine[bottom])
                loads.append(os.getloadavg()[0])
                print(f"round {r + 1}/{args.rounds} done (load {loads[-1]:.1f})", file=sys.stderr)
    finally:
        for service in services.values():
            service.stop()
    result = {
        "machine": machine(),
        "model": args.model,
        "web_weights": args.web_weights,
        "served_embedder_bytes": served_bytes,
        "loadavg_1min": loads,
        "median_ms": {name: round(statistics.median(v), 2) for name, v in sorted(rows.items())},
        "ratio_median": {name: round(statistics.median(v), 2) for name, v in sorted(ratios.items())},
        "browser_vs_native_cosine_min": {k: round(min(v), 7) for k, v in agreement.items()},  # the same file
        "browser_vs_float32_cosine_min": {k: round(min(v), 7) for k, v in versus_float32.items()},
        "first_visit": visits,
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
