"""The browser module against the native runtimes, in one run: embedding (batch 1) and detection (a 640x480 selfie, at
640 and with the single-face fast path) in headless Chromium with onnxruntime-web at 1 and 2 threads, and natively
(ExecuTorch/XNNPACK and onnxruntime for the embedder, onnxruntime for RetinaFace) on the same files; a whole verify of
two photos in the page; the first visit's time and bytes, cold and from the cache.

Native and browser take turns in rounds, so that they share whatever load the machine has; each figure is the median
of its rounds' medians, and each ratio is taken within a round. The 1-minute load average is recorded before and
after. Weights are random (speed does not depend on them), with BatchNorm statistics measured on random images
(``tests.helpers.models.randomized``) so that activations keep a trained model's scale: the int8 weights'
agreement with float32 means something only then (an untrained model's embeddings are 1e6 long and chaotic).

    python bench/browser.py [--model ghostfacenetv1-1.3-1] [--rounds 5] [--repeats 20] [--json out.json]
    python bench/browser.py --onnx model-int8.onnx     # serve (and time) a given ONNX file, e.g. an int8 export
    python bench/browser.py --web-weights float32     # browsers get the float32 file (default: int8 weights)
    python bench/browser.py --litert-js     # also LiteRT.js (@litertjs/core from npm) on the model's .tflite export

With ``--litert-js`` the same rounds also time LiteRT.js (``npm pack @litertjs/core@2.5.3`` and its wasm-utils,
fetched into the work folder, served to the page by Playwright; its WASM/XNNPACK CPU path, the single-threaded build
in the 1-thread page and the threaded one in the 2-thread page) on the ``.tflite`` export of the same weights, beside
onnxruntime-web: the measurement behind the choice of runtime (docs/browser.md). ``bench/browser_kernels.py`` shows
where onnxruntime-web's time goes, operator by operator.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
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

from tests.helpers.browser import chromium  # noqa: E402
from tests.helpers.models import randomized  # noqa: E402
from tests.helpers.service import start_service  # noqa: E402

PHOTOS = ROOT.parent / "shared" / "data" / "deepface_testpairs"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


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


def native_reference(onnx: bytes) -> np.ndarray:
    """The raw embedding of the bench crop by onnxruntime, natively, from an ONNX file's bytes."""
    import onnxruntime as ort

    from ghostfacenets.data.transforms import to_array

    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": to_array(bench_crop())})[0][0]


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
  const input = g.embedderInput([crop], 112, 127.5, 128, false);
  const feeds = {input: new model.ort.Tensor("float32", input.tensor, input.dims)};
  const verify = async () => {
    const [fa, fb] = [await model.largestFace(a, {singleFace: false}), await model.largestFace(b, {singleFace: false})];
    return model.verify(fa.embedding, fb.embedding);
  };
  const raw = (await model.embedder.run(feeds)).embedding.data;
  return {
    "raw embedding": Array.from(raw),
    "embed": await median(() => model.embedder.run(feeds)),
    "detect 640": await median(() => model.detect(selfie, {maxSize: 640})),
    "detect fast path": await median(() => model.detect(selfie, {singleFace: true})),
    "verify two photos": await median(verify),
  };
}"""

LITERT_VERSION = "2.5.3"
LITERT_SETUP = """async (threads) => {
  const lt = await import("/litert-bench/core/dist/index.js");
  await lt.loadLiteRt("/litert-bench/core/wasm/", {threads: threads > 1});
  const model = await lt.loadAndCompile("/litert-bench/model.tflite", {accelerator: "wasm"});
  const data = new Float32Array(112 * 112 * 3).map((_, i) => (((i * 7919) % 256) - 127.5) / 128);
  window.litert = {model, input: new lt.Tensor(data, [1, 112, 112, 3])};
  return true;
}"""

LITERT_TIMES = """async (repeats) => {
  const {model, input} = window.litert;
  const once = async () => { for (const t of await model.run(input)) t.delete(); };
  await once();
  const times = [];
  for (let i = 0; i < repeats; i++) { const t = performance.now(); await once(); times.push(performance.now() - t); }
  times.sort((x, y) => x - y);
  return times[Math.floor(times.length / 2)];
}"""


def litert_files(work: Path) -> dict[str, Path]:
    """@litertjs/core and @litertjs/wasm-utils from the npm registry, unpacked into ``work``."""
    import subprocess
    import tarfile

    out = {}
    for package in ("core", "wasm-utils"):
        subprocess.run(
            ["npm", "pack", f"@litertjs/{package}@{LITERT_VERSION}", "--pack-destination", str(work), "--silent"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        tarball = next(work.glob(f"litertjs-{package}-*.tgz"))
        with tarfile.open(tarball) as archive:
            archive.extractall(work / package, filter="data")
        out[package] = work / package / "package"
    return out


ISOLATED = {"Cross-Origin-Embedder-Policy": "require-corp", "Cross-Origin-Resource-Policy": "same-origin"}


def serve_litert(page: Any, folders: dict[str, Path], tflite: Path) -> None:
    """Answer /litert-bench/... from the unpacked packages (the bare import of wasm-utils made relative), with the
    headers a worker of a cross-origin isolated page needs."""

    def answer(route: Any) -> None:
        path = route.request.url.split("/litert-bench/", 1)[1]
        if path == "model.tflite":
            route.fulfill(body=tflite.read_bytes(), content_type="application/octet-stream")
            return
        package, rest = path.split("/", 1)
        body = (folders[package] / rest).read_bytes()
        if rest.endswith(".js"):
            body = body.replace(b'from "@litertjs/wasm-utils"', b'from "/litert-bench/wasm-utils/dist/index.js"')
        types = {".js": "text/javascript", ".wasm": "application/wasm"}
        route.fulfill(
            body=body,
            content_type=types.get(Path(rest).suffix, "application/octet-stream"),
            headers=ISOLATED,  # the threaded build's workers load this script: without these it never starts
        )

    page.route("**/litert-bench/**", answer)


FIRST_VISIT = """async () => {
  const t = performance.now();
  const g = await import("/web/ghostfacenets.mjs");
  await g.load();
  return performance.now() - t;
}"""


def first_visit(browser: Any, url: str) -> dict[str, Any]:
    """Time to a loaded model and bytes over the wire (compressed), in a fresh profile and then from its cache."""
    context = browser.new_context()
    out = {}
    for visit in ("cold", "cached"):
        page = context.new_page()
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        received: list[float] = []
        cdp.on("Network.loadingFinished", lambda event, into=received: into.append(event["encodedDataLength"]))
        page.goto(url + "/")
        ms = page.evaluate(FIRST_VISIT)
        page.wait_for_timeout(200)
        out[visit] = {"ms": round(ms), "bytes": int(sum(received)), "requests": len(received)}
        page.close()
    context.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ghostfacenetv1-1.3-1", help="architecture (random weights)")
    parser.add_argument("--onnx", type=Path, help="serve and time this ONNX file instead of exporting --model")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--web-weights",
        choices=("int8", "float32"),
        default="int8",
        help="the embedder browsers get (serve --web-weights; default int8 weights, as serve)",
    )
    parser.add_argument("--litert-js", action="store_true", help="also time LiteRT.js on the .tflite export")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import ghostfacenets as gfn
    from ghostfacenets.export.executorch import executorch_available, export_executorch
    from ghostfacenets.export.onnx import export_onnx

    work = Path(tempfile.mkdtemp(prefix="bench-browser-"))
    model = randomized(gfn.create_model(args.model))
    onnx = args.onnx or export_onnx(model, work / "model.onnx")
    pte = export_executorch(model, work / "model.pte") if executorch_available() and not args.onnx else None
    tflite = None
    if args.litert_js:
        from ghostfacenets.export.litert import export_litert

        tflite = export_litert(model, work / "model.tflite")
        litert = litert_files(work)
    photo = selfie()
    photos = {
        "selfie": base64.b64encode(cv2.imencode(".jpg", photo[..., ::-1])[1].tobytes()).decode(),
        "a": base64.b64encode((PHOTOS / "img1.jpg").read_bytes()).decode(),
        "b": base64.b64encode((PHOTOS / "img2.jpg").read_bytes()).decode(),
    }
    native = native_runners(onnx, pte, photo)
    loads = [os.getloadavg()[0]]
    service = start_service(onnx, work / "gallery.sqlite", work / "serve.log", "--web-weights", args.web_weights)
    rows: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}
    agreement: list[float] = []
    versus_float32: list[float] = []
    try:
        with service.client() as http:  # the embedder exactly as the service gives it to browsers
            served = http.get(f"/web/{http.get('/web/manifest.json').json()['embedder']['url']}").content
        reference, float32_reference = native_reference(served), native_reference(Path(onnx).read_bytes())
        with chromium() as browser:
            visits = first_visit(browser, service.url)
            pages = {}
            for threads in (1, 2):
                page = browser.new_page()
                page.goto(service.url + "/")
                got = page.evaluate(BROWSER_SETUP, [threads, photos])
                pages[threads] = page
                print(f"browser page with {got} thread(s) ready", file=sys.stderr)
                if tflite is not None:
                    serve_litert(page, litert, tflite)
                    page.evaluate(LITERT_SETUP, threads)
            for r in range(args.rounds):
                mine = {name: median_ms(f, args.repeats) for name, f in native.items()}
                for threads, page in pages.items():
                    timed = page.evaluate(BROWSER_TIMES, args.repeats)
                    if tflite is not None:
                        mine[f"embed litert.js browser {threads}t"] = page.evaluate(LITERT_TIMES, args.repeats)
                    raw = timed.pop("raw embedding")
                    agreement.append(cosine(raw, reference))
                    versus_float32.append(cosine(raw, float32_reference))
                    for name, ms in timed.items():
                        mine[f"{name} browser {threads}t"] = ms
                for name, ms in mine.items():
                    rows.setdefault(name, []).append(ms)
                for t in (1, 2):
                    pairs = {
                        f"embed browser {t}t / executorch": ("embed browser", "embed executorch"),
                        f"embed litert.js {t}t / executorch": ("embed litert.js browser", "embed executorch"),
                        f"embed litert.js {t}t / onnxruntime-web {t}t": (
                            "embed litert.js browser",
                            f"embed browser {t}t",
                        ),
                        f"embed browser {t}t / onnxruntime {t}t": ("embed browser", f"embed onnxruntime {t}t"),
                        f"detect 640 browser {t}t / onnxruntime {t}t": (
                            "detect 640 browser",
                            f"detect 640 onnxruntime {t}t",
                        ),
                        f"fast path browser {t}t / onnxruntime {t}t": (
                            "detect fast path browser",
                            f"detect fast path onnxruntime {t}t",
                        ),
                    }
                    for label, (top, bottom) in pairs.items():
                        if f"{top} {t}t" in mine and bottom in mine:
                            ratios.setdefault(label, []).append(mine[f"{top} {t}t"] / mine[bottom])
                loads.append(os.getloadavg()[0])
                print(f"round {r + 1}/{args.rounds} done (load {loads[-1]:.1f})", file=sys.stderr)
    finally:
        service.stop()
    sizes = Path(onnx).stat().st_size
    result = {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform()},
        "model": args.model if not args.onnx else str(args.onnx),
        "onnx_bytes": sizes,
        "web_weights": args.web_weights,
        "served_embedder_bytes": len(served),
        "loadavg_1min": loads,
        "median_ms": {name: round(statistics.median(v), 2) for name, v in sorted(rows.items())},
        "ratio_median": {name: round(statistics.median(v), 2) for name, v in ratios.items()},
        "browser_vs_native_cosine_min": round(min(agreement), 7),  # the same file
        "browser_vs_float32_cosine_min": round(min(versus_float32), 7),
        "first_visit": visits,
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
