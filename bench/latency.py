"""Inference speed: batch-1 latency and batch-64 throughput on the CPU, or batch-1 latency and batch-1024 throughput
on a GPU, for PyTorch eager, the fused model and onnxruntime float32 / int8, as ratios measured in one run.

The variants take turns in blocks of a few runs, so that they share whatever load the machine has; the table gives the
median and the fastest run. Weights are random but every BatchNorm is calibrated on face crops (so activations have
realistic ranges, as int8 calibration needs); speed does not depend on the weights' values.

    python bench/latency.py [--models ghostfacenetv1-1.3-1 ...] [--threads 2] [--repeats 30] [--json out.json]
    python bench/latency.py --device cuda [--gpu-batch 1024]
    python bench/latency.py --mobile    # also the on-device files and the ExecuTorch backend (the mobile extra)
    python bench/latency.py --mobile --models ghostfacenetv1-1.3-1 --variants "backend executorch"  # two alone

With ``--mobile`` the same run times the files ``ghostfacenets export`` writes for phones, as their runtimes run them on
this CPU: ExecuTorch ``.pte`` (XNNPACK) float32 and int8, LiteRT ``.tflite`` (XNNPACK delegate) float32, float16 weights
and int8, each batch 1 (the batch column runs them image by image), plus the package's ``"executorch"`` backend (what
``backend="auto"`` picks on a CPU); the file sizes are printed and kept in the JSON.

When TensorFlow is importable (never a dependency) the official Keras model (``--keras-h5``, by default the
V1-1.3-1 reference model of ../shared/fixtures) is timed too, as the baseline of the ratios.
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

import numpy as np
import torch

from ghostfacenets.data.crops import load_face_crops
from ghostfacenets.export.onnx import INPUT_NAME, OUTPUT_NAME, export_onnx, open_session, quantize_int8
from ghostfacenets.files import atomic_write
from ghostfacenets.inference.fast import FastEmbedder
from ghostfacenets.models.registry import create_model

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MODELS = ["ghostfacenetv1-1.3-1", "ghostfacenetv1-1.3-2", "ghostfacenetv2-1.3-2"]
KERAS_CALL = "keras model(x) (tensorflow)"
KERAS_GRAPH = "keras tf.function (tensorflow)"
WARM_S = 0.05


def faces(count: int) -> np.ndarray:
    """ORL faces padded to 112x112 when ../shared is there, else smooth random images."""
    att = SHARED / "data" / "att_faces"
    if att.is_dir():
        return load_face_crops(att, count)
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (count, 14, 14, 3), dtype=np.uint8)
    return np.repeat(np.repeat(small, 8, axis=1), 8, axis=2)


@torch.no_grad()
def calibrated(name: str, crops: np.ndarray) -> torch.nn.Module:
    """A random-weight model whose BatchNorm statistics are the averages over ``crops``."""
    torch.manual_seed(0)
    model = create_model(name)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    model.train()
    x = (torch.from_numpy(crops).permute(0, 3, 1, 2).float() - 127.5) / 128
    for batch in x.split(32):
        model(batch)
    return model.eval()


def keras_runners(h5: Path, threads: int) -> dict[str, Callable[[np.ndarray], object]]:
    """The official Keras model as functions of NCHW float32 input: a plain call, as the official code runs it, and
    the same call compiled into a graph with ``tf.function`` (the faster; it is the baseline of the ratios).
    Empty without TensorFlow."""
    try:
        import tensorflow as tf
    except ImportError:
        return {}
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    try:
        import tf_keras as keras  # Keras 2 API, as the official code uses
    except ImportError:
        keras = tf.keras
    model = keras.models.load_model(str(h5), compile=False)
    graph = tf.function(lambda x: model(x, training=False))

    def nhwc(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))

    return {KERAS_CALL: lambda x: model(nhwc(x), training=False), KERAS_GRAPH: lambda x: graph(tf.constant(nhwc(x)))}


def measure(
    variants: dict[str, Callable[[], object]], repeats: int, sync: Callable[[], None], block: int = 5
) -> dict[str, list[float]]:
    """Wall times of each variant, in blocks of ``block`` runs that take turns (so that every variant sees the
    machine's changing load), each block after untimed runs for ``WARM_S``: the previous variant's thread pool
    (onnxruntime, OpenMP, TensorFlow) may still be spinning, which slowed a following 2 ms ExecuTorch call up to
    threefold (a pause instead of the warm-up was worse: every runtime's first calls after it were slow)."""
    times: dict[str, list[float]] = {k: [] for k in variants}
    while any(len(t) < repeats for t in times.values()):
        for name, fn in variants.items():
            warm_until = time.perf_counter() + WARM_S
            fn()
            sync()
            while time.perf_counter() < warm_until:
                fn()
                sync()
            for _ in range(min(block, repeats - len(times[name]))):
                start = time.perf_counter()
                fn()
                sync()
                times[name].append(time.perf_counter() - start)
    return times


def cpu_variants(
    name: str, crops: np.ndarray, threads: int, workdir: Path, keras: dict[str, Callable[[np.ndarray], object]]
) -> dict[str, Callable[[np.ndarray], object]]:
    model = calibrated(name, crops)
    fp32 = export_onnx(model, workdir / f"{name}.onnx")
    int8 = quantize_int8(fp32, workdir / f"{name}.int8.onnx", crops[:64], method="minmax")
    sessions = {"onnxruntime fp32": open_session(fp32, threads), "onnxruntime int8": open_session(int8, threads)}
    fused = FastEmbedder(model)
    x_cache: dict[int, torch.Tensor] = {}

    def eager(x: np.ndarray) -> object:
        with torch.inference_mode():
            return model(x_cache.setdefault(x.shape[0], torch.from_numpy(x)))

    variants: dict[str, Callable[[np.ndarray], object]] = dict(keras)
    variants["pytorch eager"] = eager
    variants["pytorch fused"] = lambda x: fused(x_cache.setdefault(x.shape[0], torch.from_numpy(x)))
    for label, session in sessions.items():
        variants[label] = lambda x, s=session: s.run([OUTPUT_NAME], {INPUT_NAME: x})
    return variants


def mobile_variants(
    name: str, model: torch.nn.Module, crops: np.ndarray, threads: int, workdir: Path
) -> tuple[dict[str, Callable[[np.ndarray], object]], dict[str, int]]:
    """The on-device files of ``model`` (int8 calibrated on ``crops``) as functions of NCHW float32 input, run image
    by image as on a phone, the ExecuTorch backend of the package, and the size of each file in bytes."""
    from ghostfacenets.export.executorch import export_executorch
    from ghostfacenets.export.litert import export_litert
    from ghostfacenets.inference.mobile import ExecuTorchEmbedder, LiteRTEmbedder

    calibration = crops[:64]
    files = {
        "executorch fp32": export_executorch(model, workdir / f"{name}.pte"),
        "executorch int8": export_executorch(model, workdir / f"{name}.int8.pte", "int8", calibration),
        "litert fp32": export_litert(model, workdir / f"{name}.tflite"),
        "litert fp16": export_litert(model, workdir / f"{name}.fp16.tflite", "float16"),
        "litert int8": export_litert(model, workdir / f"{name}.int8.tflite", "int8", calibration),
    }
    backend = FastEmbedder(model, backend="executorch")
    variants: dict[str, Callable[[np.ndarray], object]] = {
        "backend executorch (auto)": lambda x: backend(torch.from_numpy(x))
    }
    nhwc: dict[int, np.ndarray] = {}
    tensors: dict[int, torch.Tensor] = {}
    for label, path in files.items():
        if path.suffix == ".pte":
            pte = ExecuTorchEmbedder(path)
            variants[label] = lambda x, e=pte: e._run(tensors.setdefault(x.shape[0], torch.from_numpy(x)))
        else:
            tflite = LiteRTEmbedder(path, threads)
            variants[label] = lambda x, e=tflite: e._run(
                nhwc.setdefault(x.shape[0], np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
            )
    return variants, {label: path.stat().st_size for label, path in files.items()}


def gpu_variants(
    name: str, crops: np.ndarray, device: torch.device, buckets: tuple[int, ...]
) -> dict[str, Callable[[torch.Tensor], object]]:
    model = calibrated(name, crops).to(device)
    variants: dict[str, Callable[[torch.Tensor], object]] = {}

    def eager(x: torch.Tensor) -> object:
        with torch.inference_mode():
            return model(x)

    variants["pytorch eager fp32"] = eager
    variants["fused fp16 channels-last"] = FastEmbedder(model, device=device, dtype=torch.float16)
    variants["cuda-graph fp16"] = FastEmbedder(model, "cuda-graph", device, torch.float16, buckets=buckets).warm_up()
    variants["compile fp16"] = FastEmbedder(model, "compile", device, torch.float16, buckets=buckets).warm_up()
    return variants


def table(rows: list[dict[str, object]], big: int) -> None:
    header = (
        f"{'model':<22} {'variant':<30} {'b1 ms (median/min)':>19} {'b' + str(big) + ' img/s':>11} "
        f"{'b1 speed-up':>11} {'b' + str(big) + ' speed-up':>12} {'file MB':>8}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['model']:<22} {row['variant']:<30} {row['b1_median_ms']:>9.2f} / {row['b1_min_ms']:<7.2f} "
            f"{row['big_img_per_s']:>11.1f} {row['b1_speedup']:>10.2f}x {row['big_speedup']:>11.2f}x "
            + (f"{row['file_mb']:>8.1f}" if row.get("file_mb") is not None else f"{'':>8}")
        )
    baselines = sorted({f"{row['model']}: {row['baseline']}" for row in rows})
    print(f"\nspeed-up: median batch-1 latency and throughput relative to ({'; '.join(baselines)}), same run")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch, onnxruntime, TensorFlow (2)")
    parser.add_argument("--repeats", type=int, default=30, help="batch-1 runs per variant (30)")
    parser.add_argument("--big-repeats", type=int, default=6, help="large-batch runs per variant (6)")
    parser.add_argument("--batch", type=int, default=64, help="CPU throughput batch (64)")
    parser.add_argument("--gpu-batch", type=int, default=1024, help="GPU throughput batch (1024)")
    parser.add_argument(
        "--mobile",
        action="store_true",
        help="also time the ExecuTorch and LiteRT files and the ExecuTorch backend (CPU; the mobile extra)",
    )
    parser.add_argument(
        "--keras-h5",
        type=Path,
        default=SHARED / "fixtures" / "keras_reference" / "v1_w1.3_s1" / "model.h5",
        help="official Keras model timed when TensorFlow is importable",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        metavar="TEXT",
        help="time only the variants whose label contains one of these (and the baseline): runtimes that take turns "
        "in one process slow each other's next call (thread pools waking, caches refilled)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    crops = faces(128)
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "torch": torch.__version__,
        "loadavg_before": os.getloadavg(),
    }
    rows: list[dict[str, object]] = []
    if device.type == "cuda":
        machine["gpu"] = torch.cuda.get_device_name(device)
        big = args.gpu_batch

        def sync() -> None:
            torch.cuda.synchronize(device)

        for name in args.models:
            print(f"{name}: preparing (compiling takes minutes)", file=sys.stderr)
            variants = gpu_variants(name, crops, device, (1, big))
            one = torch.randn(1, 3, 112, 112, device=device)
            many = torch.randn(big, 3, 112, 112, device=device)
            rows += summarise(name, variants, one, many, args, sync, baseline="pytorch eager fp32")
    else:
        import onnxruntime

        machine["onnxruntime"] = onnxruntime.__version__
        if args.mobile:
            from importlib.metadata import version

            for package in ("executorch", "litert-torch", "ai-edge-litert"):
                machine[package] = version(package)
        big = args.batch
        keras = keras_runners(args.keras_h5, args.threads) if args.keras_h5.is_file() else {}
        with tempfile.TemporaryDirectory() as tmp:
            for name in args.models:
                print(f"{name}: exporting and quantising", file=sys.stderr)
                with_keras = keras if name == "ghostfacenetv1-1.3-1" else {}
                variants = cpu_variants(name, crops, args.threads, Path(tmp), with_keras)
                sizes = {
                    "onnxruntime fp32": (Path(tmp) / f"{name}.onnx").stat().st_size,
                    "onnxruntime int8": (Path(tmp) / f"{name}.int8.onnx").stat().st_size,
                }
                if args.mobile:
                    print(f"{name}: exporting ExecuTorch and LiteRT files (minutes)", file=sys.stderr)
                    mobile, mobile_sizes = mobile_variants(
                        name, calibrated(name, crops), crops, args.threads, Path(tmp)
                    )
                    variants.update(mobile)
                    sizes.update(mobile_sizes)
                one = np.random.default_rng(1).standard_normal((1, 3, 112, 112), dtype=np.float32)
                many = np.random.default_rng(2).standard_normal((big, 3, 112, 112), dtype=np.float32)
                baseline = KERAS_GRAPH if with_keras else "pytorch eager"
                if args.variants:
                    chosen = [k for k in variants if k == baseline or any(text in k for text in args.variants)]
                    variants = {k: variants[k] for k in chosen}
                for row in summarise(name, variants, one, many, args, lambda: None, baseline):
                    row["file_mb"] = sizes[row["variant"]] / 1e6 if row["variant"] in sizes else None
                    rows.append(row)
    machine["loadavg_after"] = os.getloadavg()
    print(f"\n{machine}\n")
    table(rows, big)
    if args.json:
        with atomic_write(args.json, "w") as f:
            json.dump({"machine": machine, "big_batch": big, "rows": rows}, f, indent=2)


def summarise(
    name: str,
    variants: dict[str, Callable],
    one: object,
    many: object,
    args: argparse.Namespace,
    sync: Callable[[], None],
    baseline: str,
) -> list[dict[str, object]]:
    print(f"{name}: timing batch 1", file=sys.stderr)
    small = measure({k: (lambda f=f: f(one)) for k, f in variants.items()}, args.repeats, sync)
    print(f"{name}: timing batch {len(many)}", file=sys.stderr)
    large = measure({k: (lambda f=f: f(many)) for k, f in variants.items()}, args.big_repeats, sync)
    b1 = {k: statistics.median(v) for k, v in small.items()}
    rate = {k: len(many) / statistics.median(v) for k, v in large.items()}
    return [
        {
            "model": name,
            "variant": k,
            "baseline": baseline,
            "b1_median_ms": 1000 * b1[k],
            "b1_min_ms": 1000 * min(small[k]),
            "big_img_per_s": rate[k],
            "b1_speedup": b1[baseline] / b1[k],
            "big_speedup": rate[k] / rate[baseline],
        }
        for k in variants
    ]


if __name__ == "__main__":
    main()
