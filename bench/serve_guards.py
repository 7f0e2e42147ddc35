"""What the service's guards cost per request: this tree against a baseline source tree, in one run.

Starts two ``ghostfacenets serve`` processes on 127.0.0.1, one from ``--baseline-src`` (e.g. a checkout of the
commit before the guards: ``git worktree add /tmp/base COMMIT``, then ``--baseline-src /tmp/base/src``) and one from
this tree, with the same model and photos, and measures them alternately, route by route, ``--rounds`` times (so a
change in the machine's load hits both alike). Prints, per route, requests/s at one client, p50 latency and the
server's CPU milliseconds per request (its process and children: the decoding workers count), and the ratios
candidate / baseline (median over the rounds), with the load average.

Routes: ``detect`` and ``verify`` with photos shrunk to 640 pixels (decoded at full size: the guards' fixed cost:
the decoding worker's round trip, the pixel budget, the guard middleware), ``detect-large`` with a 1382x1868,
2.3 MB phone photo (decoded at half size by the candidate) and ``json`` (the same photo as base64 JSON).

    python bench/serve_guards.py --baseline-src /tmp/base/src [--requests 100] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import PHOTOS, ROOT, SHARED, run_load, shrink

sys.path.insert(0, str(ROOT))
from tests.helpers.service import RunningService, create_key, start_service

# the bench is one key sending as fast as answers come: the candidate's per-key limit is raised out of the way
CANDIDATE_ARGS = ("--rate-limit", "1000000", "--rate-burst", "1000000")


def _start(model: str, folder: Path, src: str, *options: str) -> tuple[RunningService, str]:
    folder.mkdir()
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = src
    try:
        key = str(create_key(folder / "bench.sqlite", "admin")["key"])
        return start_service(model, folder / "bench.sqlite", folder / "serve.log", *options), key
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-src", required=True, help="the src folder of the baseline checkout")
    parser.add_argument("--model", help="model file (default: ../shared v1_w1.3_s1 converted)")
    parser.add_argument("--requests", type=int, default=100, help="requests per route, server and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=120, help="time bound of each measurement")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    load_at_start = os.getloadavg()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = args.model
        if model is None:
            from ghostfacenets.model_io import convert_keras

            h5 = SHARED / "fixtures" / "keras_reference" / "v1_w1.3_s1" / "model.h5"
            model = str(convert_keras(h5, folder / "v1_w1.3_s1.safetensors"))
        here = str(ROOT / "src")
        servers = {
            "baseline": _start(model, folder / "baseline", str(Path(args.baseline_src).resolve())),
            "candidate": _start(model, folder / "candidate", here, *CANDIDATE_ARGS),
        }
        try:
            a, b, c = shrink("img1.jpg"), shrink("img2.jpg"), shrink("img3.jpg")
            large = (PHOTOS / "img1.jpg").read_bytes()
            as_json = {"image": base64.b64encode(large).decode()}
            routes: dict[str, Callable[[httpx.Client], httpx.Response]] = {
                "detect": lambda h: h.post("/v1/detect", files={"image": c}),
                "verify": lambda h: h.post("/v1/verify", files={"image_a": a, "image_b": b}),
                "detect-large": lambda h: h.post("/v1/detect", files={"image": large}),
                "json": lambda h: h.post("/v1/detect", json=as_json),
            }
            for service, key in servers.values():  # warm-up
                run_load(service, key, routes["verify"], 1, 10, args.seconds)
            results: dict[str, dict[str, list[dict[str, float]]]] = {r: {s: [] for s in servers} for r in routes}
            for _ in range(args.rounds):
                for route, request in routes.items():
                    for name, (service, key) in servers.items():
                        results[route][name].append(run_load(service, key, request, 1, args.requests, args.seconds))
        finally:
            for service, _ in servers.values():
                service.stop()
    now = os.getloadavg()[0]
    print(f"{os.cpu_count()} cores; 1-minute load average {load_at_start[0]:.1f} at the start, {now:.1f} now")
    print(
        f"{'route':13} {'server':9} {'req/s':>7} {'p50 ms':>8} {'CPU ms/req':>10}   (medians of {args.rounds} rounds)"
    )
    summary = {}
    for route, by_server in results.items():
        for name, runs in by_server.items():
            errors = sum(r["errors"] for r in runs)
            print(
                f"{route:13} {name:9} {statistics.median(r['rps'] for r in runs):7.1f} "
                f"{statistics.median(r['p50_ms'] for r in runs):8.1f} "
                f"{statistics.median(r['server_cpu_ms'] for r in runs):10.1f}"
                + (f"  {errors} errors" if errors else "")
            )
        pairs = list(zip(by_server["baseline"], by_server["candidate"]))
        summary[route] = {
            "rps": statistics.median(c["rps"] / b["rps"] for b, c in pairs),
            "p50": statistics.median(c["p50_ms"] / b["p50_ms"] for b, c in pairs),
            "cpu": statistics.median(c["server_cpu_ms"] / b["server_cpu_ms"] for b, c in pairs),
        }
        print(
            f"{route:13} candidate/baseline: req/s {summary[route]['rps']:.2f}x, p50 {summary[route]['p50']:.2f}x, "
            f"server CPU per request {summary[route]['cpu']:.2f}x"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"load": load_at_start, "results": results, "ratios": summary}, indent=2))


if __name__ == "__main__":
    main()
