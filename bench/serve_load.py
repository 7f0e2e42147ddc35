"""Load on the face recognition service: N concurrent clients on 127.0.0.1, bounded in count and time.

Starts ``ghostfacenets serve`` as a real process (a GhostFaceNet converted from ../shared, by default the official
code's V1-1.3-1 test model: the architecture of the released weights, random weights, same cost), a fresh SQLite
gallery and an API key; enrols a few people; then, per route, 1 client and N clients in turn send requests as fast
as answers come, and a soak of ``--soak`` verify requests at N clients watches the server's memory. Prints
requests/s, p50 and p99 latency per route and the ratios the service is held to, from this one run.

    python bench/serve_load.py [--clients 8] [--requests 300] [--soak 5000] [--seconds 120] [--json out.json]

Photos are the deepface test pairs shrunk to 640 pixels on their longer side (as apps send them; the detector
works at 640 anyway).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.helpers.service import RunningService, create_key, start_service  # noqa: E402

SHARED = Path(os.environ.get("GHOSTFACENETS_SHARED", ROOT.parent / "shared"))
PHOTOS = SHARED / "data" / "deepface_testpairs"


def shrink(name: str, side: int = 640) -> bytes:
    image = cv2.imread(str(PHOTOS / name))
    scale = side / max(image.shape[:2])
    image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return data.tobytes()


def run_load(
    service: RunningService,
    key: str,
    request: Callable[[httpx.Client], httpx.Response],
    clients: int,
    count: int,
    seconds: float,
    every: int = 0,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """``count`` requests (or until ``seconds`` pass) from ``clients`` threads, each with its own connection."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    issued = 0
    deadline = time.monotonic() + seconds

    def client() -> None:
        nonlocal issued
        with service.client(key, timeout=60) as http:
            while True:
                with lock:
                    if issued >= count or time.monotonic() > deadline:
                        return
                    issued += 1
                start = time.perf_counter()
                try:
                    r = request(http)
                    ok = r.status_code < 300
                    detail = "" if ok else f"{r.status_code} {r.text[:100]}"
                except httpx.HTTPError as exc:
                    ok, detail = False, repr(exc)
                elapsed = time.perf_counter() - start
                with lock:
                    if ok:
                        latencies.append(elapsed)
                    else:
                        errors.append(detail)
                    done = len(latencies) + len(errors)
                if on_progress and every and done % every == 0:
                    on_progress(done)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    cpu = service.cpu_seconds()  # the server, its uvicorn workers and decoding workers
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    cpu = service.cpu_seconds() - cpu
    latencies.sort()
    n = len(latencies)
    return {
        "clients": clients,
        "requests": n + len(errors),
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
        "seconds": wall,
        "rps": n / wall if wall else 0.0,
        "server_cpu_ms": 1000 * cpu / max(n + len(errors), 1),
        "p50_ms": 1000 * statistics.median(latencies) if n else float("nan"),
        "p99_ms": 1000 * latencies[min(n - 1, int(0.99 * n))] if n else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model file (default: ../shared v1_w1.3_s1 converted)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=300, help="requests per route and client count")
    parser.add_argument("--soak", type=int, default=5000, help="verify requests while watching memory (0: none)")
    parser.add_argument("--seconds", type=float, default=120, help="time bound of each measurement")
    parser.add_argument(
        "--rounds", type=int, default=3, help="verify at 1 and N clients alternately this many times (median ratio)"
    )
    parser.add_argument("--serve-args", default="", help="extra `ghostfacenets serve` options, one string")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = args.model
        if model is None:
            from ghostfacenets.model_io import convert_keras

            h5 = SHARED / "fixtures" / "keras_reference" / "v1_w1.3_s1" / "model.h5"
            model = str(convert_keras(h5, folder / "v1_w1.3_s1.safetensors"))
        db = folder / "bench.sqlite"
        key = str(create_key(db, "admin")["key"])
        # one key sending as fast as answers come: the per-key rate limit is raised out of the way
        unlimited = ("--rate-limit", "1000000", "--rate-burst", "1000000")
        service = start_service(model, db, folder / "serve.log", *unlimited, *args.serve_args.split())
        try:
            a, b, c = shrink("img1.jpg"), shrink("img2.jpg"), shrink("img3.jpg")
            with service.client(key) as http:
                info = http.get("/v1/info").json()
                http.post("/v1/galleries", json={"name": "bench"})
                for i, name in enumerate(["img4.jpg", "img13.jpg", "img16.jpg", "img18.jpg", "img20.jpg"]):
                    sid = http.post("/v1/galleries/bench/subjects", json={"name": f"person {i}"}).json()["id"]
                    http.post(f"/v1/galleries/bench/subjects/{sid}/faces", files={"image": shrink(name)})
            routes: dict[str, Callable[[httpx.Client], httpx.Response]] = {
                "verify": lambda h: h.post("/v1/verify", files={"image_a": a, "image_b": b}),
                "detect": lambda h: h.post("/v1/detect", files={"image": c}),
                "identify": lambda h: h.post("/v1/galleries/bench/identify", files={"image": c}),
            }
            run_load(service, key, routes["verify"], args.clients, 40, args.seconds)  # warm-up
            print(f"model {info['model']} ({info['embedding_dim']}-d, flip {info['flip']}), {os.cpu_count()} cores")
            results: dict[str, dict[str, dict[str, float]]] = {}
            header = (
                f"{'route':9} {'clients':>7} {'requests':>8} {'errors':>6} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8}"
            )
            print(header)
            for route, request in routes.items():
                results[route] = {}
                for clients in (1, args.clients):
                    r = run_load(service, key, request, clients, args.requests, args.seconds)
                    results[route][str(clients)] = r
                    print(
                        f"{route:9} {clients:7d} {r['requests']:8d} {r['errors']:6d} {r['rps']:7.1f} "
                        f"{r['p50_ms']:8.1f} {r['p99_ms']:8.1f} {r['server_cpu_ms']:18.1f}"
                        + (f"  {r['first_error']}" if r["errors"] else "")
                    )
            # the ratio from alternating pairs, so that a change in the machine's load hits both sides alike
            pairs = []
            for _ in range(args.rounds):
                one = run_load(service, key, routes["verify"], 1, args.requests, args.seconds)
                many = run_load(service, key, routes["verify"], args.clients, args.requests, args.seconds)
                pairs.append(
                    {
                        "throughput": many["rps"] / one["rps"],
                        "cpu_per_request": many["server_cpu_ms"] / one["server_cpu_ms"],
                        "p99_over_p50": many["p99_ms"] / many["p50_ms"],
                        "errors": one["errors"] + many["errors"],
                        "one": one,
                        "many": many,
                    }
                )
            median = {
                k: statistics.median(p[k] for p in pairs) for k in ("throughput", "cpu_per_request", "p99_over_p50")
            }
            print(
                f"\nverify, {args.rounds} alternating rounds of 1 and {args.clients} clients: throughput ratio "
                + ", ".join(f"{p['throughput']:.2f}x" for p in pairs)
                + f" (median {median['throughput']:.2f}x); server CPU per request {median['cpu_per_request']:.2f}x; "
                f"p99/p50 at {args.clients} clients {median['p99_over_p50']:.2f}; "
                f"errors {sum(p['errors'] for p in pairs)}; "
                f"1-minute load average at the start {load_at_start:.1f}, now {os.getloadavg()[0]:.1f}"
            )
            results["verify_rounds"] = {"pairs": pairs, "median": median}  # type: ignore[assignment]
            soak: dict[str, object] = {}
            if args.soak:
                samples = [(0, service.memory_mib())]
                r = run_load(
                    service,
                    key,
                    routes["verify"],
                    args.clients,
                    args.soak,
                    max(args.seconds, 1800),
                    every=500,
                    on_progress=lambda done: samples.append((done, service.memory_mib())),
                )
                soak = {"result": r, "rss_mib": samples}
                print(
                    f"soak: {r['requests']} verify requests at {args.clients} clients, {r['errors']} errors, "
                    f"{r['rps']:.1f} req/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms; server RSS "
                    + ", ".join(f"{m:.0f} MiB@{n}" for n, m in samples)
                )
            if args.json:
                Path(args.json).write_text(json.dumps({"info": info, "routes": results, "soak": soak}, indent=2))
        finally:
            service.stop()


if __name__ == "__main__":
    if subprocess.run([sys.executable, "-c", "import fastapi"], capture_output=True).returncode:
        sys.exit("bench/serve_load.py needs the serve extra: pip install 'ghostfacenets[serve]'")
    main()
