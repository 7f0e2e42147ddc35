"""Whether detections of concurrent requests would gain from sharing one call (issue 22, point 3), measured in one
run: RetinaFace-MobileNet0.25 on onnxruntime (its ONNX file has a dynamic batch), photos of one detection size.

For each size it times, in alternating rounds so that the machine's load hits every variant alike:

  single      one photo per call, one thread (what each of the service's compute slots does today);
  batch N     N photos in one call, one thread: the per-photo time (a batch would only gain from a lower fixed
              cost per call);
  2 slots     two threads each detecting single photos at once (the service with 2 compute slots) against one
              call of a batch of 2 on 2 intra-op threads: per-photo wall time of the pair.

    python bench/detection_batching.py [--sizes 320 640] [--rounds 7] [--repeats 10]

Prints medians in milliseconds and the ratios (< 1: batching is faster), with the CPU and the load average.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import threading
import time
from typing import Any

import numpy as np
import onnxruntime as ort

from ghostfacenets.inference.detection import padded_side
from ghostfacenets.models.retinaface import shipped_onnx


def session(threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(shipped_onnx(), options, providers=["CPUExecutionProvider"])


def per_photo(run, photos: int, repeats: int) -> float:
    """Milliseconds per photo of ``repeats`` calls of ``run``, each detecting ``photos`` photos."""
    started = time.perf_counter()
    for _ in range(repeats):
        run()
    return (time.perf_counter() - started) * 1000 / (repeats * photos)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def measure_size(
    size: int, rng: np.random.Generator, args: argparse.Namespace, one: Any, two: Any, slots: list[Any]
) -> None:
    """Times and ratios of the variants for photos of one detection size."""
    side = padded_side(size)
    photo = rng.normal(0, 60, (1, 3, padded_side(size * 3 // 4), side)).astype(np.float32)  # 4:3, landscape
    inputs = {n: {"input": np.repeat(photo, n, axis=0)} for n in [1, 2, *args.batches]}
    for s in (one, two, *slots):  # warm-up: first calls allocate
        s.run(None, inputs[1])
        s.run(None, inputs[2])

    def two_slots() -> None:
        threads = [threading.Thread(target=s.run, args=(None, inputs[1])) for s in slots]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    variants = {
        "single": lambda: per_photo(lambda: one.run(None, inputs[1]), 1, args.repeats),
        **{
            f"batch {n}": (lambda n=n: per_photo(lambda: one.run(None, inputs[n]), n, args.repeats))
            for n in args.batches
        },
        "2 slots, singles": lambda: per_photo(two_slots, 2, args.repeats),
        "2 threads, batch 2": lambda: per_photo(lambda: two.run(None, inputs[2]), 2, args.repeats),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, measure in variants.items():
            times[name].append(measure())
    medians = {k: statistics.median(v) for k, v in times.items()}
    print(f"\ndetection input {side}x{photo.shape[2]} (size {size}), ms per photo, median of {args.rounds} rounds:")
    for name, value in medians.items():
        print(f"  {name:20s} {value:8.2f}")
    for n in args.batches:
        ratios = [b / s for b, s in zip(times[f"batch {n}"], times["single"])]
        print(f"  batch {n} / single (1 thread): {statistics.median(ratios):.3f}")
    ratios = [b / s for b, s in zip(times["2 threads, batch 2"], times["2 slots, singles"])]
    print(f"  batch 2 on 2 threads / 2 slots of singles: {statistics.median(ratios):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[320, 640])
    parser.add_argument("--batches", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    print(f"{cpu_name()}, {os.cpu_count()} cores, onnxruntime {ort.__version__}, load {os.getloadavg()[0]:.2f}")
    one, two = session(1), session(2)
    slots = [session(1), session(1)]
    rng = np.random.default_rng(0)
    for size in args.sizes:
        measure_size(size, rng, args, one, two, slots)
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
