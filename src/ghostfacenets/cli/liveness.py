"""Liveness in the command line: the ``--liveness`` options of ``verify``, ``enroll`` and ``identify``, ``evaluate
--pad``, ``calibrate --liveness`` and ``export --liveness`` (the commands' own modules call in here)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import GhostFaceNetsError
from .common import print_json, print_table

DEFAULT_BPCER = 0.01
LIVENESS_SUFFIXES = (".onnx", ".pte", ".tflite")


def add_liveness_options(p: argparse.ArgumentParser, flag: bool = True, service: bool = False) -> None:
    """``--liveness`` (with ``flag``) and its threshold and model, for the commands that accept or refuse a face;
    for the ``service``, ``--liveness`` makes the check required and the other two configure it."""
    if flag:
        p.add_argument(
            "--liveness",
            action="store_true",
            help=(
                "check the liveness of every face of every verify, enrol and identify request (else only of requests "
                "with liveness=true)"
                if service
                else "refuse faces judged not live (passive single-frame presentation-attack detection, MiniFASNet; "
                "exit 2)"
            )
            + "; see docs/liveness.md for what it can and cannot stop",
        )
    implied = "" if service or not flag else "implies --liveness; "
    p.add_argument(
        "--liveness-threshold",
        type=float,
        metavar="T",
        help=f"liveness score a face must exceed ({implied}default: the --liveness-model's calibrated threshold, "
        "else 0.915, the authors' Android demo's)",
    )
    p.add_argument(
        "--liveness-model",
        metavar="FILE",
        help="liveness weights written by `calibrate --liveness --write`, or a .onnx/.pte/.tflite file written by "
        f"`export --liveness` ({implied}default: the shipped MiniFASNets)",
    )


def _liveness_backend(args: argparse.Namespace) -> str:
    from ..liveness.runtime import BACKENDS

    backend = getattr(args, "backend", "auto")
    return backend if backend in BACKENDS else "auto"


def liveness_setting(args: argparse.Namespace) -> Any:
    """What ``FaceRecognizer(liveness=...)`` gets from the options: False, True, or a configured checker."""
    model, threshold = getattr(args, "liveness_model", None), getattr(args, "liveness_threshold", None)
    if model is None and threshold is None:
        return bool(getattr(args, "liveness", False))
    from ..liveness import LivenessChecker

    return LivenessChecker(model, threshold=threshold, device=args.device, backend=_liveness_backend(args))


def liveness_text(label: str, result: Any) -> str:
    """One line of a face's liveness for the text output."""
    return f"{label}: live ({result.describe()})"


# ------------------------------------------------------------------------------------------------ evaluate --pad
def add_pad_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--pad",
        metavar="DIR_OR_CSV",
        help="presentation-attack evaluation (ISO/IEC 30107-3) of the liveness check on a labelled set: a folder "
        "with live/ and attack/<species>/, a labels CSV (path,label[,species]), CelebA-Spoof or OULU-NPU "
        "(docs/liveness.md); needs no --model",
    )
    p.add_argument(
        "--pad-layout",
        default="auto",
        choices=("auto", "folder", "csv", "celeba-spoof", "oulu-npu"),
        help="--pad: the set's layout (default: recognised from the files)",
    )
    p.add_argument("--pad-split", default="test", help="--pad CelebA-Spoof/OULU-NPU: train, dev or test (test)")
    p.add_argument(
        "--pad-protocol", default="1", metavar="P", help="--pad OULU-NPU: protocol 1, 2, 3_N or 4_N (phone N) (1)"
    )
    p.add_argument("--pad-frames", type=int, default=5, metavar="N", help="--pad videos: frames scored per video (5)")
    add_liveness_options(p, flag=False)


def _detector(args: argparse.Namespace) -> Any:
    from ..pipeline.detect import RetinaFaceDetector

    detector = RetinaFaceDetector(
        score_threshold=getattr(args, "det_threshold", 0.9), max_size=getattr(args, "det_size", 640)
    )
    return lambda image: sorted(detector.detect(image), key=lambda f: -f.area)


def _checker(args: argparse.Namespace) -> Any:
    from ..liveness import LivenessChecker

    return LivenessChecker(
        args.liveness_model, threshold=args.liveness_threshold, device=args.device, backend=_liveness_backend(args)
    )


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def run_pad_evaluate(args: argparse.Namespace) -> int:
    """``evaluate --pad``: the ISO/IEC 30107-3 report, a DET figure and the score distributions."""
    from ..evaluate.plots import check_plot_path
    from ..files import atomic_write
    from ..liveness import evaluate_pad, read_pad_set
    from ..liveness.plots import plot_det, plot_score_distributions

    if args.pad_frames < 1:
        raise GhostFaceNetsError(f"--pad-frames must be at least 1, got {args.pad_frames}")
    if args.plot:
        check_plot_path(args.plot)
    pad_set = read_pad_set(args.pad, args.pad_layout, args.pad_protocol, args.pad_split)
    checker = _checker(args)
    progress = not args.quiet and sys.stderr.isatty()
    evaluation = evaluate_pad(pad_set, checker, _detector(args), args.pad_frames, progress)
    report = evaluation.report
    if args.json and args.json != "-":
        with atomic_write(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    figures = []
    if args.plot:
        base = Path(args.plot)
        threshold = checker.threshold.value
        figures.append(plot_det(evaluation.scores, base, threshold, title=f"DET of {pad_set.name}"))
        scores_path = base.with_name(f"{base.stem}-scores{base.suffix}")
        figures.append(plot_score_distributions(evaluation.scores, scores_path, threshold, title=pad_set.name))
    if args.json == "-":
        print_json(report)
        return 0
    _print_pad(report)
    if args.json:
        print(f"wrote JSON to {args.json}")
    for figure in figures:
        print(f"wrote figure {figure}")
    return 0


def _print_pad(report: dict[str, Any]) -> None:
    at, nr = report["at_threshold"], report["non_response"]
    species = ", ".join(f"{name} {count}" for name, count in report["attacks"].items())
    print(f"{report['set']}: {report['bona_fide']} bona fide, attacks: {species} (model {report['model']})")
    print(
        f"threshold {at['threshold']:.4f} ({report['threshold_source']}); a presentation is bona fide when its "
        "liveness score is above it"
    )
    rows = [(f"APCER {name}", _percent(value)) for name, value in at["apcer"].items()]
    rows += [
        (f"APCER (max, {at['apcer_max_species']})", _percent(at["apcer_max"])),
        ("BPCER", _percent(at["bpcer"])),
        ("ACER (not ISO; OULU-NPU, CelebA-Spoof)", _percent(at["acer"])),
    ]
    for key, value in report["bpcer_at_apcer"].items():
        note = "" if value["estimable"] else " (too few attacks per species to measure)"
        rows.append((f"BPCER @ APCER {100 * float(key):g} %{note}", _percent(value["bpcer"])))
    for key, value in report["apcer_at_bpcer"].items():
        note = "" if value["estimable"] else " (too few bona fide to measure)"
        rows.append((f"APCER @ BPCER {100 * float(key):g} %{note}", _percent(value["apcer_max"])))
    rows.append(("BPNRR (live, no face)", _percent(nr["bpnrr"])))
    rows += [(f"APNRR {name} (no face)", _percent(value)) for name, value in nr["apnrr"].items()]
    print_table(rows, ("ISO/IEC 30107-3", "%"))
    for why in report["unscored"].values():
        print(f"not scored: {why}", file=sys.stderr)


# ------------------------------------------------------------------------------------------------ calibrate
def add_calibrate_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--liveness",
        metavar="DIR_OR_CSV",
        help="calibrate the liveness threshold instead, on your own live (and attack) photos: a folder with live/ "
        "(and attack/<species>/) or a labels CSV (docs/liveness.md)",
    )
    p.add_argument(
        "--bpcer",
        type=float,
        default=DEFAULT_BPCER,
        help=f"--liveness: the share of live faces the threshold may refuse (default {DEFAULT_BPCER:g})",
    )
    p.add_argument(
        "--liveness-model",
        metavar="FILE",
        help="--liveness: the liveness weights to calibrate (default: the shipped MiniFASNets)",
    )


def run_liveness_calibrate(args: argparse.Namespace) -> int:
    """``calibrate --liveness``: the threshold at a target BPCER, optionally written into a weights file."""
    from ..liveness import LivenessChecker, calibrate_liveness, read_pad_set, write_calibrated

    if args.write and not args.write.endswith(".safetensors"):
        raise GhostFaceNetsError(f"{args.write}: calibrated liveness weights are written as a .safetensors file")
    if args.liveness_model and Path(args.liveness_model).suffix.lower() in LIVENESS_SUFFIXES and args.write:
        raise GhostFaceNetsError("--write needs liveness weights (.safetensors or the shipped ones), not an export")
    pad_set = read_pad_set(args.liveness)
    checker = LivenessChecker(args.liveness_model, device=args.device, backend=_liveness_backend(args))
    report = calibrate_liveness(pad_set, checker, _detector(args), args.bpcer, progress=sys.stderr.isatty())
    if args.set_name:
        report["set"] = args.set_name
    if args.write:
        report["written"] = str(write_calibrated(report, args.write, args.liveness_model))
    if args.json:
        print_json(report)
        return 0
    print(f"{report['set']}: {report['bona_fide']} live faces, model {report['model']}")
    measurable = "" if report["estimable"] else f" (not measurable: needs >= {round(1 / args.bpcer)} live faces)"
    print(
        f"liveness threshold {report['threshold']:.6f} at BPCER {args.bpcer:g}{measurable}: it refuses "
        f"{100 * report['bpcer']:.2f} % of these live faces"
    )
    if report["attacks"] is not None:
        rows = [(name, _percent(value)) for name, value in report["attacks"]["apcer"].items()]
        print_table(rows, ("APCER there, by species", "%"))
    for why in report["unscored"].values():
        print(f"not scored: {why}", file=sys.stderr)
    if args.write:
        print(f"wrote {report['written']}: use it with --liveness-model")
    else:
        print(f"use it with --liveness-threshold {report['threshold']:.6f}, or write it into weights with --write")
    return 0


# ------------------------------------------------------------------------------------------------ export
def add_export_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--liveness",
        action="append",
        default=[],
        metavar="OUT",
        help="also (or only: no MODEL needed) write the liveness model, float32, to OUT.onnx, OUT.pte or OUT.tflite "
        "(repeatable; docs/liveness.md)",
    )
    p.add_argument(
        "--liveness-model", metavar="FILE", help="--liveness: weights to export (default: the shipped MiniFASNets)"
    )


def check_export(args: argparse.Namespace) -> list[Path]:
    """The liveness files asked for, checked before any work."""
    outputs = [Path(o) for o in args.liveness]
    for out in outputs:
        if out.suffix.lower() not in LIVENESS_SUFFIXES:
            raise GhostFaceNetsError(f"{out}: the liveness model is written as .onnx, .pte or .tflite")
    return outputs


def run_liveness_export(args: argparse.Namespace) -> dict[str, Any]:
    """Write each ``--liveness`` file and compare it with PyTorch on fixed patches; the report per file."""
    import numpy as np

    from ..liveness import export_liveness, load_liveness, load_liveness_model

    model = load_liveness_model(args.liveness_model)
    patches = np.random.default_rng(0).integers(0, 256, (2, 16, 80, 80, 3), dtype=np.uint8)
    reference = load_liveness(model, backend="eager").probabilities(*patches)
    report = {}
    for out in check_export(args):
        print(f"writing liveness ({out})", file=sys.stderr)
        path = export_liveness(model, out)
        written = load_liveness(path).probabilities(*patches)
        report[str(path)] = {
            "bytes": path.stat().st_size,
            "max_abs_difference_vs_pytorch": float(np.abs(written - reference).max()),
            "patches": len(patches[0]),
        }
    return report


def print_export(report: dict[str, Any]) -> None:
    for path, entry in report.items():
        print(
            f"wrote {path} (liveness float32, {entry['bytes'] / 1e6:.1f} MB): max |probability difference| vs "
            f"PyTorch {entry['max_abs_difference_vs_pytorch']:.2e} on {entry['patches']} patch pairs"
        )
