"""``export``: ONNX, LiteRT and ExecuTorch files (float32, optionally float16 and calibrated int8) and what each
changes against float32 (and, for the on-device files, against PyTorch)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import GhostFaceNetsError
from .common import Command, print_json
from .liveness import add_export_options, check_export, print_export, run_liveness_export

FORMATS = {"onnx": ".onnx", "litert": ".tflite", "executorch": ".pte"}


def _add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", metavar="MODEL", help="pretrained name, .h5 or .safetensors file")
    p.add_argument("--onnx", metavar="OUT.onnx", help="float32 ONNX file to write (dynamic batch)")
    p.add_argument(
        "--tflite", metavar="OUT.tflite", help="float32 LiteRT file to write (Android; batch 1, NHWC; mobile extra)"
    )
    p.add_argument(
        "--executorch", metavar="OUT.pte", help="float32 ExecuTorch program to write (XNNPACK; batch 1; mobile extra)"
    )
    p.add_argument("--no-simplify", action="store_true", help="keep torch's ONNX graph (no onnxslim)")
    p.add_argument(
        "--fp16",
        action="store_true",
        help="also write OUT.fp16.onnx (float16 inside, float32 in and out) and OUT.fp16.tflite (float16 weights)",
    )
    p.add_argument(
        "--int8", action="store_true", help="also write OUT.int8.onnx / .tflite / .pte (static int8, needs --calib)"
    )
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
        help="ONNX int8: activation range calibration (percentile; LiteRT and ExecuTorch use histograms)",
    )
    p.add_argument(
        "--keep-float-blocks",
        type=int,
        default=0,
        metavar="K",
        help="ONNX int8: keep the stem and the first K of 16 blocks in float32 (more accurate, slower; 0)",
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
    add_export_options(p)
    pipeline = p.add_argument_group("the whole pipeline as device files (docs/mobile.md#the-pipeline-files)")
    pipeline.add_argument(
        "--pipeline",
        action="store_true",
        help="also write OUT.detector and OUT.align_embed beside each file (int8 ones with --int8, ExecuTorch only)",
    )
    pipeline.add_argument(
        "--det-size", type=int, default=640, metavar="PIXELS", help="side of the detector file's input (640)"
    )
    pipeline.add_argument(
        "--align-size",
        type=int,
        default=2048,
        metavar="PIXELS",
        help="side of the align-and-embed file's window (2048: faces up to 1024 pixels get the exact crop)",
    )
    pipeline.add_argument(
        "--no-flip", action="store_true", help="embed without the mirrored crop (half the cost of embedding)"
    )
    pipeline.add_argument(
        "--calib-photos",
        metavar="DIR",
        help="photos (searched recursively) that calibrate the int8 detector; needed with --pipeline --int8",
    )


def _check_args(args: argparse.Namespace) -> dict[str, Path]:
    outputs = {
        name: Path(value)
        for name, value in (("onnx", args.onnx), ("litert", args.tflite), ("executorch", args.executorch))
        if value
    }
    if not outputs:
        raise GhostFaceNetsError("give at least one of --onnx OUT.onnx, --tflite OUT.tflite, --executorch OUT.pte")
    for name, out in outputs.items():
        if out.suffix.lower() != FORMATS[name]:
            raise GhostFaceNetsError(f"{out}: the {name} file must end in {FORMATS[name]}")
    if args.int8 and not args.calib:
        raise GhostFaceNetsError("--int8 needs --calib DIR_OR_BIN (aligned face crops for calibration)")
    if (args.bin or args.faces) and not (args.int8 or args.fp16):
        raise GhostFaceNetsError("--bin and --faces measure what --int8 or --fp16 change; add one of them")
    if args.pipeline and args.int8 and not args.calib_photos and "executorch" in outputs:
        raise GhostFaceNetsError("--pipeline --int8 needs --calib-photos DIR (photos that calibrate the detector)")
    if args.calib_count < 1:
        raise GhostFaceNetsError(f"--calib-count must be positive, got {args.calib_count}")
    for path in [args.calib, args.faces, args.calib_photos, *args.bin]:
        if path and not Path(path).exists():
            raise GhostFaceNetsError(f"{path}: no such file or folder")
    return outputs


def _write(name: str, out: Path, model: Any, args: argparse.Namespace, calibration: Any) -> list[tuple[str, Path]]:
    """The files of one format: float32, then float16 and int8 as asked."""
    stem = out.name.removesuffix(out.suffix)
    suffix = out.suffix

    def sibling(tag: str) -> Path:
        return out.with_name(f"{stem}.{tag}{suffix}")

    if name == "onnx":
        from ..export.onnx import convert_float16, export_onnx, quantize_int8

        files = [("float32", export_onnx(model, out, not args.no_simplify))]
        if args.fp16:
            files.append(("float16", convert_float16(out, sibling("fp16"))))
        if args.int8:
            files.append(
                ("int8", quantize_int8(out, sibling("int8"), calibration, args.calib_method, args.keep_float_blocks))
            )
        return files
    if name == "litert":
        from ..export.litert import export_litert

        files = [("float32", export_litert(model, out))]
        if args.fp16:
            files.append(("float16", export_litert(model, sibling("fp16"), "float16")))
        if args.int8:
            files.append(("int8", export_litert(model, sibling("int8"), "int8", calibration)))
        return files
    from ..export.executorch import export_executorch

    files = [("float32", export_executorch(model, out))]
    if args.fp16:
        print("ExecuTorch: no float16 program (XNNPACK's float16 kernels need ARM cores); use int8", file=sys.stderr)
    if args.int8:
        files.append(("int8", export_executorch(model, sibling("int8"), "int8", calibration)))
    return files


def _write_pipeline(name: str, out: Path, model: Any, args: argparse.Namespace, calibration: Any) -> list[Any]:
    """The detector and align-and-embed files of one format: float32, and int8 for ExecuTorch with --int8."""
    from ..export.pipeline import export_pipeline

    stem = out.with_name(out.name.removesuffix(out.suffix))
    options = {"detector_size": args.det_size, "align_size": args.align_size, "flip": not args.no_flip}
    written = [export_pipeline(model, stem, name, **options)]
    if args.int8 and name == "executorch":
        from ..data.crops import load_photos

        photos = load_photos(args.calib_photos, args.calib_count)
        print(f"calibrating the int8 detector on {len(photos)} photos from {args.calib_photos}", file=sys.stderr)
        written.append(
            export_pipeline(model, stem, name, "int8", **options, calibration=calibration, detector_calibration=photos)
        )
    elif args.int8:
        print(f"{name}: int8 pipeline files are written for ExecuTorch only", file=sys.stderr)
    return [{"precision": f.precision, "detector": str(f.detector), "align_embed": str(f.align_embed)} for f in written]


def _run_export(args: argparse.Namespace) -> int:
    from ..data.crops import load_face_crops
    from ..evaluate.agreement import compare_embedders
    from ..inference import TorchEmbedder
    from ..model_io import load_model

    liveness = check_export(args)
    if liveness and not (args.model or args.onnx or args.tflite or args.executorch):
        written = run_liveness_export(args)
        if args.json:
            print_json({"liveness": written})
        else:
            print_export(written)
        return 0
    if not args.model:
        raise GhostFaceNetsError("give the MODEL to export (or only --liveness OUT for the liveness model)")
    outputs = _check_args(args)
    model = load_model(args.model)
    calibration = None
    if args.int8:
        calibration = load_face_crops(args.calib, args.calib_count)
        print(f"calibrating int8 on {len(calibration)} faces from {args.calib}", file=sys.stderr)
    faces_source = args.faces or (args.bin[0] if args.bin else args.calib)
    faces = load_face_crops(faces_source, 1000) if faces_source else None
    progress = sys.stderr.isatty()
    report: dict[str, Any] = {"architecture": model.metadata.get("architecture", "")}
    for name, out in outputs.items():
        print(f"writing {name} ({out})", file=sys.stderr)
        entries: dict[str, Any] = {}
        files = _write(name, out, model, args, calibration)
        for precision, path in files:
            entry: dict[str, Any] = {"path": str(path), "bytes": path.stat().st_size}
            if faces is not None and precision != "float32":
                entry["versus_float32"] = compare_embedders(files[0][1], path, faces, args.bin, progress=progress)
                entry["versus_float32"]["faces_from"] = str(faces_source)
            elif faces is not None and name != "onnx":  # the float32 file against PyTorch itself
                entry["versus_pytorch"] = compare_embedders(
                    TorchEmbedder(model, "cpu", name="pytorch"), path, faces, progress=progress
                )
                entry["versus_pytorch"]["faces_from"] = str(faces_source)
            entries[precision] = entry
        if args.pipeline:
            entries["pipeline"] = _write_pipeline(name, out, model, args, calibration)
        report[name] = entries
    if liveness:
        report["liveness"] = run_liveness_export(args)
    if args.json:
        print_json(report)
        return 0
    for name, entries in report.items():
        if name == "liveness":
            print_export(entries)
            continue
        if name == "architecture":
            continue
        for files in entries.pop("pipeline", []):
            print(f"wrote {files['detector']} and {files['align_embed']} ({name} {files['precision']} pipeline files)")
        for precision, entry in entries.items():
            print(
                f"wrote {entry['path']} ({name} {precision}, {entry['bytes'] / 1e6:.1f} MB): {report['architecture']}"
            )
            for key, label in (("versus_float32", "float32"), ("versus_pytorch", "PyTorch")):
                if key in entry:
                    _print_comparison(entry[key], precision, label)
    return 0


def _print_comparison(versus: dict[str, Any], precision: str, reference: str) -> None:
    a = versus["agreement"]
    print(
        f"  {precision} vs {reference}: cosine mean {a['cosine_mean']:.5f}, 1st percentile {a['cosine_p01']:.5f}, "
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
        f"  batch-1 latency on this CPU: {reference} {t['reference']:.2f} ms, {precision} {t['candidate']:.2f} ms "
        f"({t['speedup']:.2f}x)"
    )


COMMANDS = [
    Command(
        "export",
        "export ONNX, LiteRT (.tflite) and ExecuTorch (.pte) files (float32, optionally float16 and calibrated int8) "
        "and report what they change",
        _add_export,
        _run_export,
    ),
]
