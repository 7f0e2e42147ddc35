"""``export``: ONNX (float32, optionally float16 and calibrated int8) and what int8 changes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import GhostFaceNetsError
from .common import Command, print_json


def _add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="pretrained name, .h5 or .safetensors file")
    p.add_argument("--onnx", required=True, metavar="OUT.onnx", help="float32 ONNX file to write (dynamic batch)")
    p.add_argument("--no-simplify", action="store_true", help="keep torch's graph (no onnxslim)")
    p.add_argument("--fp16", action="store_true", help="also write OUT.fp16.onnx (float16 inside, float32 in and out)")
    p.add_argument("--int8", action="store_true", help="also write OUT.int8.onnx (static int8, needs --calib)")
    p.add_argument(
        "--calib",
        metavar="DIR_OR_BIN",
        help="aligned face crops for int8 calibration: a folder of images "
        "(searched recursively; non-112x112 crops are padded as training pads them) or a verification .bin",
    )
    p.add_argument(
        "--calib-count", type=int, default=200, metavar="N", help="calibration faces, spread over the set (200)"
    )
    p.add_argument(
        "--calib-method",
        choices=("minmax", "percentile", "entropy"),
        default="percentile",
        help="activation range calibration (percentile)",
    )
    p.add_argument(
        "--keep-float-blocks",
        type=int,
        default=0,
        metavar="K",
        help="int8: keep the stem and the first K of 16 blocks in float32 (more accurate, slower; 0)",
    )
    p.add_argument(
        "--bin",
        action="append",
        default=[],
        metavar="SET.bin",
        help="verification set on which to report the accuracy change (repeatable)",
    )
    p.add_argument(
        "--faces",
        metavar="DIR_OR_BIN",
        help="faces for the cosine agreement with float32 (default: the --bin images, else the calibration faces)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _run_export(args: argparse.Namespace) -> int:
    from ..data.crops import load_face_crops
    from ..evaluate.agreement import compare_embedders
    from ..export.onnx import convert_float16, export_onnx, quantize_int8, read_onnx_metadata
    from ..model_io import load_model

    if args.int8 and not args.calib:
        raise GhostFaceNetsError("--int8 needs --calib DIR_OR_BIN (aligned face crops for calibration)")
    if (args.bin or args.faces) and not (args.int8 or args.fp16):
        raise GhostFaceNetsError("--bin and --faces measure what --int8 or --fp16 change; add one of them")
    for path in [args.calib, args.faces, *args.bin]:
        if path and not Path(path).exists():
            raise GhostFaceNetsError(f"{path}: no such file or folder")
    out = Path(args.onnx)
    stem = out.name.removesuffix(".onnx")
    report: dict[str, Any] = {"float32": {"path": str(export_onnx(load_model(args.model), out, not args.no_simplify))}}
    meta = read_onnx_metadata(out)
    report["architecture"] = meta["architecture"]
    variants = []
    if args.fp16:
        variants.append(("float16", convert_float16(out, out.with_name(f"{stem}.fp16.onnx"))))
    if args.int8:
        calibration = load_face_crops(args.calib, args.calib_count)
        print(f"calibrating int8 on {len(calibration)} faces from {args.calib} ({args.calib_method})", file=sys.stderr)
        variants.append(
            (
                "int8",
                quantize_int8(
                    out, out.with_name(f"{stem}.int8.onnx"), calibration, args.calib_method, args.keep_float_blocks
                ),
            )
        )
    if variants:
        faces_source = args.faces or (args.bin[0] if args.bin else args.calib)
        faces = load_face_crops(faces_source, 1000) if faces_source else None
        for precision, path in variants:
            entry: dict[str, Any] = {"path": str(path)}
            if faces is not None:
                entry["versus_float32"] = compare_embedders(out, path, faces, args.bin, progress=sys.stderr.isatty())
                entry["versus_float32"]["faces_from"] = str(faces_source)
            report[precision] = entry
    if args.json:
        print_json(report)
        return 0
    shape = "(" + ", ".join(str(d) for d in meta["onnx"]["input"]["shape"]) + ")"
    for precision in ("float32", "float16", "int8"):
        if precision not in report:
            continue
        path = Path(report[precision]["path"])
        print(
            f"wrote {path} ({precision}, {path.stat().st_size / 1e6:.1f} MB): {report['architecture']}, "
            f"input 'input' {shape}, output 'embedding'"
        )
        versus = report[precision].get("versus_float32")
        if not versus:
            continue
        a = versus["agreement"]
        print(
            f"  {precision} vs float32: cosine mean {a['cosine_mean']:.5f}, 1st percentile {a['cosine_p01']:.5f}, "
            f"min {a['cosine_min']:.5f} over {a['faces']} faces from {versus['faces_from']}"
        )
        for v in versus["verification"]:
            for key, label in (("best_threshold_accuracy", "best-threshold"), ("accuracy_10fold_mean", "10-fold")):
                if v["change_points"][key] is not None:
                    print(
                        f"  {v['set']} ({v['pairs']} pairs) {label} accuracy: {100 * v['reference'][key]:.2f} % -> "
                        f"{100 * v['candidate'][key]:.2f} % ({v['change_points'][key]:+.2f} points)"
                    )
        t = versus["batch1_latency_ms"]
        print(
            f"  batch-1 latency on this CPU: float32 {t['reference']:.2f} ms, {precision} {t['candidate']:.2f} ms "
            f"({t['speedup']:.2f}x)"
        )
    return 0


COMMANDS = [
    Command(
        "export",
        "export ONNX (float32, optionally float16 and calibrated int8) and report what int8 changes",
        _add_export,
        _run_export,
    ),
]
