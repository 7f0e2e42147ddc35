"""``evaluate`` and ``make-bin``: verification accuracy on .bin sets, identity folders and IJB-B/C."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import GhostFaceNetsError
from .common import Command, add_runtime_options, print_json, print_table


def _add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="M", help="pretrained name, Keras .h5, .safetensors or .onnx file")
    p.add_argument(
        "--bin",
        action="append",
        default=[],
        metavar="SET.bin",
        help="insightface verification .bin (LFW, CFP-FP, AgeDB-30, ...); repeatable",
    )
    p.add_argument(
        "--folder",
        action="append",
        default=[],
        metavar="DIR",
        help="identity folder of aligned 112x112 crops, one sub-folder per person; repeatable",
    )
    p.add_argument(
        "--pairs",
        type=int,
        metavar="N",
        help="identity folders: sample N pairs (half same person) instead of using every pair",
    )
    p.add_argument("--seed", type=int, default=0, help="identity folders: seed of the pair sampling and order (0)")
    p.add_argument(
        "--ijb",
        action="append",
        default=[],
        metavar="DIR",
        help="IJB-B or IJB-C folder in insightface's layout (meta/, loose_crop/); repeatable",
    )
    p.add_argument(
        "--ijb-detector-score",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="IJB: weight each face by its detector score (default: on, as insightface)",
    )
    p.add_argument(
        "--ijb-normalize",
        action="store_true",
        help="IJB: L2-normalise each face's embedding before pooling (default: off, as insightface)",
    )
    p.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="flip test-time augmentation: emb(x) + emb(mirror x), the paper's setting (default: on)",
    )
    p.add_argument("--json", metavar="OUT", help="write the results as JSON to OUT ('-': print JSON, no table)")
    p.add_argument(
        "--plot",
        metavar="ROC.png",
        help="write one ROC figure with every --bin and --folder set (format from the suffix: .png, .svg, .pdf, ...)",
    )
    p.add_argument("--batch-size", type=int, default=128, help="images per forward pass (128)")
    add_runtime_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _percent(value: Any, std: Any = None) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.3f}" + (f" ± {100 * std:.3f}" if std is not None else "")


def _unique_key(path: Path, name: str, taken: dict[str, Any]) -> str:
    return name if name not in taken else f"{path.resolve().parent.name}/{name}"


def _run_evaluate(args: argparse.Namespace) -> int:
    from ..evaluate.ijb import evaluate_ijb
    from ..evaluate.pairs import evaluate_folder
    from ..evaluate.plots import check_plot_path, plot_roc
    from ..evaluate.verification import evaluate_bin_detailed
    from ..files import atomic_write, written_by
    from ..inference import load_embedder

    if not (args.bin or args.folder or args.ijb):
        raise GhostFaceNetsError("nothing to evaluate: give at least one --bin, --folder or --ijb")
    for path in args.bin:
        if not Path(path).is_file():
            raise GhostFaceNetsError(f"{path}: no such file")
    for path in [*args.folder, *args.ijb]:
        if not Path(path).is_dir():
            raise GhostFaceNetsError(f"{path}: not a folder")
    if args.batch_size < 1:
        raise GhostFaceNetsError(f"--batch-size must be positive, got {args.batch_size}")
    if args.plot:  # checked before any work: a wrong figure name must not cost a whole evaluation
        if not (args.bin or args.folder):
            raise GhostFaceNetsError(
                "--plot draws the ROC curves of --bin and --folder sets, not of IJB; add a "
                "--bin or --folder, or leave out --plot"
            )
        check_plot_path(args.plot)
    progress = not args.quiet and sys.stderr.isatty()
    embedder = load_embedder(args.model, args.device, args.backend)
    results: dict[str, Any] = {}
    sets = []
    for path in args.bin:
        sets.append(evaluate_bin_detailed(embedder, path, args.flip, args.batch_size, progress=progress))
        results[_unique_key(Path(path), sets[-1].name, results)] = sets[-1].metrics
    for path in args.folder:
        sets.append(
            evaluate_folder(embedder, path, args.pairs, args.seed, args.flip, args.batch_size, progress=progress)
        )
        results[_unique_key(Path(path), sets[-1].name, results)] = sets[-1].metrics
    ijb = {}
    for path in args.ijb:
        report = evaluate_ijb(
            embedder, path, args.flip, args.ijb_detector_score, args.ijb_normalize, args.batch_size, progress=progress
        )
        key = _unique_key(Path(path), report["target"], results)
        results[key] = ijb[key] = report
    report = {**written_by(), "model": embedder.name, "sets": results}
    if args.json and args.json != "-":
        with atomic_write(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    if args.plot:
        plot_roc(sets, args.plot, title=f"ROC of {embedder.name}")
    if args.json == "-":
        print_json(report)
        return 0
    if sets:
        rows = [
            (
                name,
                r["pairs"],
                _percent(r["accuracy_10fold_mean"], r["accuracy_10fold_std"]),
                _percent(r["best_threshold_accuracy"]),
                f"{r['best_threshold']:.4f}",
                "-" if r["auc"] is None else f"{r['auc']:.5f}",
                _percent(r["eer"]),
                _percent(r["tar_at_far"]["1e-3"]),
            )
            for name, r in results.items()
            if name not in ijb
        ]
        print_table(
            rows, ("set", "pairs", "10-fold acc %", "best-thr acc %", "cos thr", "AUC", "EER %", "TAR@FAR1e-3 %")
        )
    for name, r in ijb.items():
        v, i = r["verification"], r["identification"]
        print(f"\n{name}: {r['faces']} faces, {r['templates']} templates, {v['pairs']} template pairs")
        print_table([[f"TAR@FAR={k}"] + [_percent(v["tar_at_far"][k])] for k in v["tar_at_far"]], ("1:1", "%"))
        if i is not None:
            ranks = [(f"rank-{k}", _percent(i[f"rank{k}"])) for k in (1, 5, 10)]
            ranks += [(f"TPIR@FPIR={k}", _percent(t)) for k, t in i["tpir_at_fpir"].items()]
            print_table(ranks, (f"1:N ({i['probes']} probes)", "%"))
    print(
        f"\nmodel {embedder.name}, flip {'on' if args.flip else 'off'}; 10-fold as insightface (mean ± std), "
        "best-thr = best single threshold on the whole set (optimistic, as the official evals.py)"
    )
    for out, what in ((args.json, "JSON"), (args.plot, "ROC figure")):
        if out:
            print(f"wrote {what} to {out}")
    return 0


def _add_make_bin(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "folder", metavar="FOLDER", help="identity folder: one sub-folder of aligned 112x112 crops per person"
    )
    p.add_argument("output", metavar="OUT.bin", help="verification .bin to write (insightface layout)")
    p.add_argument("--pairs", type=int, metavar="N", help="sample N pairs (half same person) instead of every pair")
    p.add_argument("--seed", type=int, default=0, help="seed of the pair sampling and order (0)")
    p.add_argument("--size", type=int, default=112, help="crop size every image must have (112)")


def _run_make_bin(args: argparse.Namespace) -> int:
    from ..evaluate.pairs import make_bin

    path, pairs, same = make_bin(args.folder, args.output, args.pairs, args.seed, args.size)
    print(f"wrote {path}: {pairs} pairs ({same} same person, {pairs - same} different)")
    return 0


COMMANDS = [
    Command(
        "evaluate", "verification accuracy on .bin sets, identity folders and IJB-B/C", _add_evaluate, _run_evaluate
    ),
    Command("make-bin", "write a verification .bin of pairs from an identity folder", _add_make_bin, _run_make_bin),
]
