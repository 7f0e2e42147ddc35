"""Where the browser's time goes: the embedder's and the detector's operators, one thread, in onnxruntime-web
(WebAssembly SIMD, in headless Chromium) and in onnxruntime natively, on the very files the service gives browsers.

Native onnxruntime runs each file twice: with the same NCHW kernels as WebAssembly (graph optimisation "extended":
the same operators, fusions and algorithms, compiled for x86 instead of WebAssembly) and as it runs by default
("all": its blocked NCHWc layout on x86). The time of every operator comes from each runtime's own profiler; they
are summed by class (depthwise, pointwise and full convolutions, the rest), per call, and each class's browser time
is given as a ratio of the native NCHW time: how much slower the same kernel is in WebAssembly. Native and browser
take turns in rounds; the medians of the rounds are printed, with the 1-minute load average.

    python bench/browser_kernels.py [--model ghostfacenetv1-1.3-1] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' helpers (the service, Chromium) and bench/pipeline.py's machine()

from bench.pipeline import machine  # noqa: E402

from tests.helpers.browser import chromium  # noqa: E402
from tests.helpers.models import randomized  # noqa: E402
from tests.helpers.service import start_service  # noqa: E402

CALLS = 30
WARMUP = 5
DETECTOR_INPUT = (1, 3, 256, 320)  # the fast path's input for a 640x480 selfie (320x240, padded to 32)
EMBEDDER_INPUT = (1, 3, 112, 112)

BROWSER_PROFILE = """async ([url, dims, calls]) => {
  const g = await import("/web/ghostfacenets.mjs");
  const ort = (await g.load({threads: 1})).runtime.ort;
  const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
  const options = {executionProviders: ["wasm"], graphOptimizationLevel: "all", enableProfiling: true};
  const session = await ort.InferenceSession.create(bytes, options);
  const size = dims.reduce((a, b) => a * b, 1);
  const data = new Float32Array(size).map((_, i) => ((i * 7919) % 256 - 127.5) / 128);
  const feeds = {[session.inputNames[0]]: new ort.Tensor("float32", data, dims)};
  for (let i = 0; i < calls; i++) await session.run(feeds);
  await session.endProfiling();  // onnxruntime-web writes the profile to the console, one event a line
  await session.release();
  return true;
}"""


def kernel_class(event: dict[str, Any]) -> str:
    """depthwise / pointwise / full convolution, or the operator's own name, from a profiler event's shapes."""
    args = event["args"]
    op = args["op_name"]
    shapes = [next(iter(shape.values())) for shape in args.get("input_type_shape", [])]
    if op not in ("Conv", "FusedConv") or len(shapes) < 2 or len(shapes[1]) != 4:
        return op
    weight, channels = shapes[1], shapes[0][1]
    if weight[1] == 1 and weight[0] == channels and weight[2] * weight[3] > 1:
        return "conv depthwise"
    if weight[2] == weight[3] == 1:
        return "conv pointwise"
    return "conv full"


def per_call_ms(events: list[dict[str, Any]], calls: int) -> dict[str, float]:
    """Milliseconds per call by kernel class, over the calls after the warm-up ones."""
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_call = len(kernels) // calls
    if per_call == 0:
        raise SystemExit("the profiler wrote no operator events")
    steady = kernels[per_call * WARMUP :]
    times: Counter[str] = Counter()
    for event in steady:
        times[kernel_class(event)] += event["dur"]
    runs = len(steady) / per_call
    out = {name: us / runs / 1000 for name, us in times.items()}
    out["all operators"] = sum(out.values())
    return out


def native_profile(model: bytes, dims: tuple[int, ...], level: str, folder: Path) -> dict[str, float]:
    """Milliseconds per call by kernel class in onnxruntime on this CPU, one thread, at graph optimisation ``level``
    ("extended": NCHW, the browser's kernels; "all": the NCHWc layout, whose operators are classed as "Conv")."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = {
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    options.enable_profiling = True
    options.profile_file_prefix = str(folder / f"native-{level}")
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    data = (((np.arange(int(np.prod(dims))) * 7919) % 256 - 127.5) / 128).astype(np.float32).reshape(dims)
    for _ in range(CALLS):
        session.run(None, {session.get_inputs()[0].name: data})
    profile = Path(session.end_profiling())
    events = json.loads(profile.read_text())
    profile.unlink()
    return per_call_ms(events, CALLS)


def browser_profile(page: Any, url: str, dims: tuple[int, ...]) -> dict[str, float]:
    """Milliseconds per call by kernel class in onnxruntime-web, one thread (``page``: a fresh page of the service)."""
    lines: list[str] = []
    page.on("console", lambda message: lines.append(message.text))
    page.evaluate(BROWSER_PROFILE, [url, list(dims), CALLS])
    page.wait_for_timeout(300)
    events = []
    for line in lines:
        line = line.strip().rstrip(",")
        if line.startswith('{"cat"'):
            events.append(json.loads(line))
    return per_call_ms(events, CALLS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ghostfacenetv1-1.3-1", help="architecture (random weights)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import ghostfacenets as gfn
    from ghostfacenets.export.onnx import export_onnx

    work = Path(tempfile.mkdtemp(prefix="bench-kernels-"))
    onnx = export_onnx(randomized(gfn.create_model(args.model)), work / "model.onnx")
    service = start_service(onnx, work / "gallery.sqlite", work / "serve.log", "--web-weights", "float32")
    loads = [os.getloadavg()[0]]
    rows: dict[str, dict[str, list[float]]] = {}
    try:
        with service.client() as http:
            manifest = http.get("/web/manifest.json").json()
            files = {
                "embedder": (f"/web/{manifest['embedder']['url']}", EMBEDDER_INPUT),
                "detector": (f"/web/{manifest['detector']['url']}", DETECTOR_INPUT),
            }
            served = {name: http.get(url).content for name, (url, _) in files.items()}
        with chromium() as browser:
            for r in range(args.rounds):
                for name, (url, dims) in files.items():
                    page = browser.new_page()
                    page.goto(service.url + "/")
                    measured = {
                        "native NCHW": native_profile(served[name], dims, "extended", work),
                        "native default": native_profile(served[name], dims, "all", work),
                        "browser": browser_profile(page, url, dims),
                    }
                    page.close()
                    for runtime, classes in measured.items():
                        for kernel, ms in classes.items():
                            rows.setdefault(f"{name} {kernel}", {}).setdefault(runtime, []).append(ms)
                loads.append(os.getloadavg()[0])
                print(f"round {r + 1}/{args.rounds} done (load {loads[-1]:.1f})", file=sys.stderr)
    finally:
        service.stop()
    table = {}
    print(f"{'ms per call, 1 thread':32s} {'browser':>8s} {'native NCHW':>12s} {'ratio':>6s} {'native default':>15s}")
    for row, runtimes in sorted(rows.items()):
        medians = {runtime: statistics.median(v) for runtime, v in runtimes.items()}
        browser_ms, nchw = medians.get("browser", 0.0), medians.get("native NCHW", 0.0)
        ratio = browser_ms / nchw if nchw else None
        table[row] = {**{k: round(v, 3) for k, v in medians.items()}, "browser / native NCHW": ratio}
        if browser_ms >= 0.2:  # operators of weight in the browser; the native default's total only (NCHWc)
            default = f"{medians['native default']:15.2f}" if row.endswith("all operators") else ""
            print(f"{row:32s} {browser_ms:8.2f} {nchw:12.2f} {ratio or 0:6.2f} {default}")
    cpu = machine()
    result = {"machine": cpu, "model": args.model, "loadavg_1min": loads, "calls": CALLS, "per_call_ms": table}
    print(f"{cpu['model_name']} (family {cpu['family']}, model {cpu['model']}), {cpu['cores']} cores")
    print(f"load average (1 min): {', '.join(f'{x:.1f}' for x in loads)}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
