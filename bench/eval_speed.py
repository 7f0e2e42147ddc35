"""Evaluation speed: images/s of embed_images (flip TTA on, as in evaluation), .bin decoding and the metrics.

Prints one table from one run, with ratios to the naive baseline (one image per forward pass) measured in the same
run. Runs on CPU, and on CUDA when available. Weights are random (speed does not depend on them).

    python bench/eval_speed.py [--model ghostfacenetv1-1.3-1] [--images 256] [--batch-size 128] [--onnx M.onnx]
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ghostfacenets import create_model
from ghostfacenets.data.verification_bin import load_verification_bin, write_verification_bin
from ghostfacenets.evaluate.metrics import verification_metrics
from ghostfacenets.inference import embed_images, load_embedder

CPU_SECONDS: list[float] = []  # process CPU time of the fastest run of the latest _best_of call


def _best_of(fn, repeats: int) -> float:
    """Fastest wall time of ``repeats`` runs after one warm-up run (other processes disturb single runs).

    The process CPU time of that run goes to ``CPU_SECONDS``: on a shared machine, images per CPU-second are steadier.
    """
    fn()
    best = (float("inf"), 0.0)
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - start, time.process_time() - cpu))
    CPU_SECONDS[:] = [best[1]]
    return best[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ghostfacenetv1-1.3-1", help="architecture name (random weights)")
    parser.add_argument("--images", type=int, default=256, help="images per measurement on CPU (x8 on CUDA)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--onnx", help="also time this .onnx file with onnxruntime")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {os.cpu_count()} cores"
        + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no CUDA")
    )
    print(f"model {args.model} (random weights), flip TTA on (2 forward passes per image)\n")
    rows = []

    def seconds_per_image(embedder: object, images: np.ndarray, batch_size: int) -> float:
        run = functools.partial(embed_images, embedder, images, batch_size=batch_size, progress=False)
        return _best_of(run, args.repeats) / len(images)

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        n = args.images * (8 if device == "cuda" else 1)
        images = rng.integers(0, 256, (n, 112, 112, 3), dtype=np.uint8)
        model = create_model(args.model).eval()
        embedder = load_embedder(model, device, backend="eager")
        n_naive = min(n, 64)
        naive = seconds_per_image(embedder, images[:n_naive], 1)
        rows.append((device, "eager, batch 1 (baseline)", 1 / naive, 1.0, n_naive / CPU_SECONDS[0]))
        paths = [(f"eager, batch {args.batch_size} (embed_images)", embedder)]
        paths.append((f"BN-fused, batch {args.batch_size}", load_embedder(model, device, backend="fused")))
        if device == "cpu":  # what `ghostfacenets evaluate` runs on a CPU
            fast = load_embedder(model, "cpu")
            paths.append((f"{getattr(fast, 'backend', 'eager')} (the auto rule on a CPU)", fast))
            if getattr(fast, "backend", "") == "executorch":  # the runtime it replaced, in the same run
                paths.append(("onnxruntime", load_embedder(model, "cpu", backend="onnxruntime")))
        for label, path_embedder in paths:
            seconds = seconds_per_image(path_embedder, images, args.batch_size)
            rows.append((device, label, 1 / seconds, naive / seconds, n / CPU_SECONDS[0]))
    if args.onnx:
        images = rng.integers(0, 256, (args.images, 112, 112, 3), dtype=np.uint8)
        seconds = seconds_per_image(load_embedder(args.onnx, "cpu"), images, args.batch_size)
        rows.append(
            ("cpu", f"onnxruntime, batch {args.batch_size}", 1 / seconds, float("nan"), len(images) / CPU_SECONDS[0])
        )
    print(f"{'device':<6}  {'path':<36}  {'images/s':>9}  {'x baseline':>10}  {'images/CPU-s':>12}")
    for device, path, rate, ratio, per_cpu_second in rows:
        print(f"{device:<6}  {path:<36}  {rate:9.1f}  {ratio:10.2f}  {per_cpu_second:12.1f}")

    # the parts around the network: decoding a LFW-sized .bin (6000 pairs of 112x112 JPEGs) and the metrics
    with tempfile.TemporaryDirectory() as tmp:
        crops = [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(64)]
        path = write_verification_bin(
            Path(tmp) / "lfw_like.bin",
            [crops[i % 64] for i in range(12000)],
            rng.random(6000) < 0.5,
            image_format=".jpg",
        )
        decode = _best_of(lambda: load_verification_bin(path), 1)
    a, b = rng.normal(size=(6000, 512)), rng.normal(size=(6000, 512))
    metrics = _best_of(lambda: verification_metrics(a, b, rng.random(6000) < 0.5), 1)
    print(f"\n.bin load + decode, 12000 JPEGs: {12000 / decode:,.0f} images/s ({decode:.2f} s)")
    print(f"all metrics of 6000 pairs (10-fold, exact sweep, ROC, TAR@FAR): {metrics * 1000:.0f} ms")


if __name__ == "__main__":
    main()
