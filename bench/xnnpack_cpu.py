"""Why an XNNPACK program's speed differs between CPUs of one family: the CPU as the guest sees it, ExecuTorch's
thread pool (1 against all cores: one process each, since the pool is fixed once programs exist; the processes take
turns, twice), the fixed cost of one call (an almost empty program), the input handoff (a fresh input tensor per call
against one reused), and a dense 3x3 convolution of RetinaFace's size in ExecuTorch's XNNPACK against onnxruntime.

    python bench/xnnpack_cpu.py [--repeats 60] [--json out.json]

Uses V1-1.3-1 of ../shared/fixtures (the official test model) and one 3x3 convolution of RetinaFace's size (64 to 64
channels on 80x60, its FPN merge), each exported here; needs the mobile and onnx extras.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from pipeline import machine  # noqa: E402

SHARED = Path(os.environ.get("GHOSTFACENETS_SHARED", ROOT.parent / "shared"))


def lowered(module: nn.Module, sample: torch.Tensor) -> Callable[[tuple[torch.Tensor, ...]], object]:
    from ghostfacenets.export.executorch import _partitioner, import_exporter, load_method, load_program

    import_exporter()
    from executorch.exir import to_edge_transform_and_lower

    edge = to_edge_transform_and_lower(torch.export.export(module.eval(), (sample,)), partitioner=[_partitioner()])
    program = load_program(bytes(edge.to_executorch().buffer))
    method = load_method(program, "forward", "program")
    lowered.keep.append(program)  # type: ignore[attr-defined]
    return method.execute


lowered.keep = []  # type: ignore[attr-defined]


def times(variants: dict[str, Callable[[], object]], repeats: int, block: int = 5) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in variants}
    while any(len(v) < repeats for v in out.values()):
        for name, fn in variants.items():
            for _ in range(3):
                fn()
            for _ in range(block):
                start = time.perf_counter()
                fn()
                out[name].append(time.perf_counter() - start)
    return out


def measure(threads: int, repeats: int) -> dict[str, dict[str, float]]:
    """This process's timings with ExecuTorch's thread pool at ``threads`` (set before any program exists)."""
    from ghostfacenets.export.executorch import native_runtime
    from ghostfacenets.model_io import convert_keras, load_model
    from ghostfacenets.models.fuse import fuse_model

    native_runtime()._unsafe_reset_threadpool(threads)
    with tempfile.TemporaryDirectory() as tmp:
        h5 = SHARED / "fixtures" / "keras_reference" / "v1_w1.3_s1" / "model.h5"
        model = load_model(convert_keras(h5, Path(tmp) / "v1.safetensors"))
    x = torch.randn(1, 3, 112, 112)
    embed = lowered(fuse_model(model.float(), inplace=True), x)
    tiny = lowered(nn.Sequential(nn.Conv2d(3, 4, 1)), torch.randn(1, 3, 4, 4))
    xs = torch.randn(1, 3, 4, 4)
    conv = nn.Conv2d(64, 64, 3, padding=1)
    feature = torch.randn(1, 64, 60, 80)
    et_conv = lowered(conv, feature)
    variants: dict[str, Callable[[], object]] = {
        f"V1-1.3-1 float32, {threads} thread(s), reused input": lambda: embed((x,)),
        f"V1-1.3-1 float32, {threads} thread(s), new input per call": lambda: embed((torch.randn(1, 3, 112, 112),)),
        f"empty program (fixed cost of a call), {threads} thread(s)": lambda: tiny((xs,)),
        f"3x3 conv 64->64 on 80x60, ExecuTorch XNNPACK, {threads} thread(s)": lambda: et_conv((feature,)),
    }
    if threads == 1:
        import onnxruntime as ort

        buffer = io.BytesIO()
        torch.onnx.export(conv.eval(), (feature,), buffer, input_names=["x"], dynamo=False)  # type: ignore[arg-type]
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
        feature_np = feature.numpy()
        variants["3x3 conv 64->64 on 80x60, onnxruntime, 1 thread"] = lambda: session.run(None, {"x": feature_np})
    return {
        name: {"median_ms": 1000 * statistics.median(v), "min_ms": 1000 * min(v)}
        for name, v in times(variants, repeats).items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)  # one process's part
    args = parser.parse_args()
    if args.threads:
        print(json.dumps(measure(args.threads, args.repeats)))
        return
    import subprocess

    before = machine()
    runs: dict[str, list[dict[str, float]]] = {}
    for _ in range(2):
        for threads in (1, os.cpu_count() or 1):
            command = [sys.executable, __file__, "--threads", str(threads), "--repeats", str(args.repeats)]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            for name, r in json.loads(out.strip().splitlines()[-1]).items():
                runs.setdefault(name, []).append(r)
    after = machine()
    print(
        f"CPU: {before.get('model_name')} family {before.get('family')} model {before.get('model')}, AVX2 "
        f"{before.get('avx2')}, AVX-512 {before.get('avx512f')}; load {before['load_average'][0]:.2f} -> "  # type: ignore[index]
        f"{after['load_average'][0]:.2f}"
    )  # type: ignore[index]
    for name, rs in runs.items():
        medians = ", ".join(f"{r['median_ms']:.3f}" for r in rs)
        print(f"{name:<66} median {medians} ms; min {min(r['min_ms'] for r in rs):.3f} ms")
    if args.json:
        args.json.write_text(json.dumps({"machine": before, "machine_after": after, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
