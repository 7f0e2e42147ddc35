"""``evaluate`` and ``make-bin``: .bin sets, identity folders, pairs files, IJB-B/C, MegaFace, RFW, fairness."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import GhostFaceNetsError
from .common import Command, add_runtime_options, print_json, print_table
from .liveness import add_pad_options
from .people import add_clustering_options, run_clustering_evaluation

DEFAULT_FAR = 1e-3  # = evaluate.fairness.DEFAULT_FAR, without importing torch at start-up


def _add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        metavar="M",
        help="pretrained name or a .h5, .safetensors, .onnx, .pte, .tflite file (needed by all but --pad)",
    )
    p.add_argument(
        "--bin",
        action="append",
        default=[],
        metavar="SET.bin",
        help="insightface verification .bin (LFW, CFP-FP, AgeDB-30, ...); repeatable",
    )
    p.add_argument(
        "--bin-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="every .bin of a folder (insightface's faces_emore layout), with the paper-style table and the mean; "
        "repeatable",
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
        action="append",
        default=[],
        metavar="N|PAIRS.csv",
        help="a number N: identity folders sample N pairs (half same person; with --groups N per group) instead of "
        "using every pair; a file: labelled pairs of aligned crops ('image_a,image_b,label' lines, paths relative "
        "to the file), evaluated as a set; repeatable",
    )
    p.add_argument(
        "--group-column",
        metavar="COLUMN",
        help="pairs files: the header of the column naming each pair's group: per-group accuracy and FMR/FNMR at one "
        "global threshold (--far)",
    )
    p.add_argument(
        "--groups",
        metavar="GROUPS.csv",
        help="identity folders: 'identity,group' lines; pairs are drawn within each group and reported per group",
    )
    p.add_argument(
        "--far",
        type=float,
        default=DEFAULT_FAR,
        help=f"groups (--rfw, --group-column, --groups): the FAR on all pairs that sets the one threshold at which "
        f"each group's FMR and FNMR are reported (default {DEFAULT_FAR:g})",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the pair sampling and order of identity folders, and of MegaFace's smaller distractor sets and "
        "noise (0)",
    )
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
        "--rfw",
        action="append",
        default=[],
        metavar="DIR",
        help="RFW (or any set in its layout: data/<group>/, txts/<group>/<group>_pairs.txt, _lmk.txt): accuracy per "
        "group, mean, std, skewed error ratio; repeatable",
    )
    p.add_argument(
        "--megaface",
        action="append",
        default=[],
        metavar="DIR",
        help="MegaFace Challenge 1 in insightface's test pack layout (facescrub_images/, megaface_images/, lists, "
        "noise lists): rank-1 at 10 .. 1M distractors, TAR at FAR 1e-6; repeatable",
    )
    p.add_argument(
        "--megaface-refined",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="MegaFace: remove the listed noise as insightface's refined protocol does (default: on)",
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
        help="write one ROC figure of the --bin, --bin-dir, --folder and pairs-file sets to this file, and a figure "
        "per --rfw, grouped set and --megaface beside it (ROC-<name>.png; format from the suffix: .png, .svg, ...)",
    )
    p.add_argument("--batch-size", type=int, default=128, help="images per forward pass (128)")
    add_clustering_options(p)
    add_runtime_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_pad_options(p)


def _percent(value: Any, std: Any = None) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.3f}" + (f" ± {100 * std:.3f}" if std is not None else "")


def _unique_key(path: Path, name: str, taken: dict[str, Any]) -> str:
    return name if name not in taken else f"{path.resolve().parent.name}/{name}"


def _split_pairs(values: list[str]) -> tuple[int | None, list[str]]:
    """``--pairs`` values: at most one pair count (all digits) and any number of pairs files."""
    counts = [int(v) for v in values if v.isdigit()]
    if len(counts) > 1:
        raise GhostFaceNetsError(f"--pairs: one pair count at most, got {counts}")
    return (counts[0] if counts else None), [v for v in values if not v.isdigit()]


def _figure_path(base: Path, name: str) -> Path:
    """The figure of set ``name`` beside ``base``: ROC.png -> ROC-name.png."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return base.with_name(f"{base.stem}-{safe}{base.suffix}")


def _check_inputs(args: argparse.Namespace, pair_files: list[str]) -> list[Path]:
    """Every input checked before any work; the ``.bin`` files to evaluate (``--bin``, then each ``--bin-dir``)."""
    from ..evaluate.plots import check_plot_path
    from ..evaluate.verification import bin_files

    if not (args.bin or args.bin_dir or args.folder or pair_files or args.ijb or args.rfw or args.megaface):
        raise GhostFaceNetsError(
            "nothing to evaluate: give at least one --bin, --bin-dir, --folder, --pairs FILE, --ijb, --rfw or "
            "--megaface"
        )
    for path in [*args.bin, *pair_files]:
        if not Path(path).is_file():
            raise GhostFaceNetsError(f"{path}: no such file")
    for path in [*args.folder, *args.ijb, *args.rfw, *args.megaface, *args.bin_dir]:
        if not Path(path).is_dir():
            raise GhostFaceNetsError(f"{path}: not a folder")
    if args.group_column and not pair_files:
        raise GhostFaceNetsError("--group-column names a column of pairs files: add --pairs PAIRS.csv")
    if args.groups and not args.folder:
        raise GhostFaceNetsError("--groups assigns the identities of --folder sets to groups: add --folder DIR")
    if args.groups and not Path(args.groups).is_file():
        raise GhostFaceNetsError(f"{args.groups}: no such file")
    if not 0 < args.far < 1:
        raise GhostFaceNetsError(f"--far must be strictly between 0 and 1, got {args.far}")
    if args.batch_size < 1:
        raise GhostFaceNetsError(f"--batch-size must be positive, got {args.batch_size}")
    if args.plot:  # checked before any work: a wrong figure name must not cost a whole evaluation
        if args.ijb and not (args.bin or args.bin_dir or args.folder or pair_files or args.rfw or args.megaface):
            raise GhostFaceNetsError(
                "--plot draws the figures of --bin, --bin-dir, --folder, --pairs, --rfw and --megaface sets, not of "
                "IJB; add one of those, or leave out --plot"
            )
        check_plot_path(args.plot)
    return [*map(Path, args.bin), *(path for folder in args.bin_dir for path in bin_files(folder))]


def _processes(device: str | None) -> Any:
    """The torchrun process group (``ghostfacenets.train.distributed``) when started by torchrun, else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from ..inference import resolve_device
    from ..train.distributed import init_distributed

    if device is not None:
        resolve_device(device)  # a device this torch cannot use fails with its one-line reason
    return init_distributed(device or "auto")


def _print_sets(results: dict[str, Any], names: list[str]) -> None:
    rows = [
        (
            name,
            results[name]["pairs"],
            _percent(results[name]["accuracy_10fold_mean"], results[name]["accuracy_10fold_std"]),
            _percent(results[name]["best_threshold_accuracy"]),
            f"{results[name]['best_threshold']:.4f}",
            "-" if results[name]["auc"] is None else f"{results[name]['auc']:.5f}",
            _percent(results[name]["eer"]),
            _percent(results[name]["tar_at_far"]["1e-3"]),
        )
        for name in names
    ]
    print_table(rows, ("set", "pairs", "10-fold acc %", "best-thr acc %", "cos thr", "AUC", "EER %", "TAR@FAR1e-3 %"))


def _print_paper_table(results: dict[str, Any], names: list[str]) -> None:
    """The sets of a --bin-dir as the paper's tables show them: one column per set and the mean."""
    print("\npaper-style table")
    header = [*names, "mean"]
    rows = []
    for label, key in (("10-fold acc %", "accuracy_10fold_mean"), ("best-thr acc %", "best_threshold_accuracy")):
        values = [results[name][key] for name in names]
        mean = None if any(v is None for v in values) else sum(values) / len(values)
        rows.append((label, *(_percent(v) for v in [*values, mean])))
    print_table(rows, ("", *header))


def _print_groups(name: str, metrics: dict[str, Any]) -> None:
    at, fairness = metrics["at_threshold"], metrics["fairness"]
    groups = list(at["groups"])
    print(
        f"\n{name}: {len(groups)} groups; FMR and FNMR at one threshold {at['threshold']:.4f} (FAR {at['far']:g} "
        f"on all pairs{'' if at['estimable'] else ', too few different pairs to measure it'})"
    )
    rows = [
        (
            g,
            metrics[g]["pairs"],
            _percent(metrics[g]["accuracy_10fold_mean"], metrics[g]["accuracy_10fold_std"]),
            "-" if metrics[g]["auc"] is None else f"{metrics[g]['auc']:.5f}",
            _percent(at["groups"][g]["fmr"]),
            _percent(at["groups"][g]["fnmr"]),
            _percent(at["groups"][g]["accuracy"]),
        )
        for g in groups
    ]
    print_table(rows, ("group", "pairs", "10-fold acc %", "AUC", "FMR %", "FNMR %", "acc at thr %"))
    ser = "-" if fairness["ser"] is None else f"{fairness['ser']:.3f}"
    ratios = ", ".join(
        f"{key.split('_')[0].upper()} max/min {'-' if at[key] is None else f'{at[key]:.2f}'}"
        for key in ("fmr_ratio", "fnmr_ratio")
    )
    print(
        f"accuracy across groups: mean {_percent(fairness['mean'])} %, std {_percent(fairness['std'])} %, "
        f"skewed error ratio {ser}; {ratios}"
    )


def _print_megaface(name: str, metrics: dict[str, Any]) -> None:
    noise = (
        f"noise removed as listed ({metrics['noisy_probes']} probes, {metrics['noisy_distractors']} distractors)"
        if metrics["refined"]
        else "noise lists not used"
    )
    print(
        f"\n{name}: {metrics['probes']} probes of {metrics['probe_identities']} identities, "
        f"{metrics['distractors']:,} distractors; {noise}"
    )
    rows = [
        (
            f"{r['distractors']:,}",
            _percent(r["rank1"]),
            _percent(r["cmc"][9] if len(r["cmc"]) > 9 else None),
            *(_percent(t) for t in r["tar_at_far"].values()),
        )
        for r in metrics["sizes"].values()
    ]
    far_keys = list(next(iter(metrics["sizes"].values()))["tar_at_far"])
    print_table(rows, ("distractors", "rank-1 %", "rank-10 %", *(f"TAR@FAR={k} %" for k in far_keys)))


def _print_ijb(name: str, r: dict[str, Any]) -> None:
    v, i = r["verification"], r["identification"]
    print(f"\n{name}: {r['faces']} faces, {r['templates']} templates, {v['pairs']} template pairs")
    print_table([[f"TAR@FAR={k}"] + [_percent(v["tar_at_far"][k])] for k in v["tar_at_far"]], ("1:1", "%"))
    if i is not None:
        ranks = [(f"rank-{k}", _percent(i[f"rank{k}"])) for k in (1, 5, 10)]
        ranks += [(f"TPIR@FPIR={k}", _percent(t)) for k, t in i["tpir_at_fpir"].items()]
        print_table(ranks, (f"1:N ({i['probes']} probes)", "%"))


def _run_evaluate(args: argparse.Namespace) -> int:
    if args.clustering:
        if args.bin or args.bin_dir or args.folder or args.pairs or args.ijb or args.rfw or args.megaface:
            raise GhostFaceNetsError("--clustering is evaluated on its own: leave out the verification sets")
        return run_clustering_evaluation(args)
    if args.tune_on:
        raise GhostFaceNetsError("--tune-on tunes --clustering: add --clustering DIR")
    from ..evaluate.distributed import embed_job_sharded
    from ..evaluate.fairness import GroupedEvaluation, GroupedPairSet, read_grouped_folder, read_pairs_set
    from ..evaluate.ijb import check_ijb_embedder, read_ijb
    from ..evaluate.megaface import MegaFaceEvaluation, read_megaface
    from ..evaluate.pairs import read_folder_set
    from ..evaluate.plots import plot_groups, plot_megaface, plot_roc
    from ..evaluate.rfw import read_rfw
    from ..evaluate.verification import PairSet, SetEvaluation, read_bin_set
    from ..files import atomic_write, written_by
    from ..inference import load_embedder, resolve_device
    from ..train.distributed import shutdown

    count, pair_files = _split_pairs(args.pairs)
    if args.pad:
        if args.bin or args.bin_dir or args.folder or pair_files or args.ijb or args.rfw or args.megaface:
            raise GhostFaceNetsError("--pad evaluates the liveness check on its own: run the face sets separately")
        from .liveness import run_pad_evaluate

        return run_pad_evaluate(args)
    if not args.model:
        raise GhostFaceNetsError("--model is needed to evaluate face recognition (a pretrained name or a file)")
    bins = _check_inputs(args, pair_files)
    progress = not args.quiet and sys.stderr.isatty()
    processes = _processes(args.device)
    device = processes.device if processes is not None else args.device
    main = processes is None or processes.is_main
    embedder = load_embedder(args.model, device, args.backend)
    size = None if embedder.input_size is None else embedder.input_size[0]
    scoring = resolve_device(device)  # MegaFace scores on the GPU the model runs on

    def embed(job: Any) -> Any:
        return embed_job_sharded(embedder, job, processes, args.flip, args.batch_size, progress)

    results: dict[str, Any] = {}
    plain: list[SetEvaluation] = []
    grouped: dict[str, GroupedEvaluation] = {}
    megaface: dict[str, MegaFaceEvaluation] = {}
    ijb: dict[str, Any] = {}
    from_dirs = set(bins[len(args.bin) :])
    paper_keys: list[str] = []
    try:
        pair_sets: list[tuple[Path, PairSet | GroupedPairSet]] = [(path, read_bin_set(path)) for path in bins]
        for folder in args.folder:
            pair_sets.append(
                (
                    Path(folder),
                    read_grouped_folder(folder, args.groups, count, args.seed, size)
                    if args.groups
                    else read_folder_set(folder, count, args.seed, size),
                )
            )
        pair_sets += [(Path(f), read_pairs_set(f, args.group_column)) for f in pair_files]
        pair_sets += [(Path(d), read_rfw(d)) for d in args.rfw]
        for path, pair_set in pair_sets:
            features = embed(pair_set.job)
            if not main:
                continue
            key = _unique_key(path, pair_set.name, results)
            if path in from_dirs:
                paper_keys.append(key)
            if isinstance(pair_set, GroupedPairSet):
                grouped[key] = pair_set.evaluate(features, args.flip, args.far)
                results[key] = grouped[key].metrics
            else:
                plain.append(pair_set.evaluate(features, args.flip))
                results[key] = plain[-1].metrics
        for folder in args.ijb:
            ijb_set = read_ijb(folder)
            check_ijb_embedder(embedder)
            features = embed(ijb_set.job)
            if main:
                report = ijb_set.evaluate(features, args.flip, args.ijb_detector_score, args.ijb_normalize)
                key = _unique_key(Path(folder), report["target"], results)
                results[key] = ijb[key] = report
        for folder in args.megaface:
            megaface_set = read_megaface(folder, args.megaface_refined)
            features = embed(megaface_set.job)
            if main:
                key = _unique_key(Path(folder), "MegaFace", results)
                megaface[key] = megaface_set.evaluate(
                    features, args.flip, args.seed, device=scoring if scoring.type == "cuda" else "cpu"
                )
                results[key] = megaface[key].metrics
    finally:
        if processes is not None:
            shutdown(processes)
    if not main:
        return 0
    report = {**written_by(), "model": embedder.name, "sets": results}
    if args.json and args.json != "-":
        with atomic_write(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    figures = []
    if args.plot:
        base = Path(args.plot)
        if plain:
            figures.append(plot_roc(plain, base, title=f"ROC of {embedder.name}"))
        figures += [plot_groups(g, _figure_path(base, key), title=key) for key, g in grouped.items()]
        figures += [plot_megaface(m, _figure_path(base, key), title=key) for key, m in megaface.items()]
    if args.json == "-":
        print_json(report)
        return 0
    plain_names = [name for name in results if name not in grouped and name not in megaface and name not in ijb]
    if plain_names:
        _print_sets(results, plain_names)
    if paper_keys:
        _print_paper_table(results, paper_keys)
    for name, grouped_evaluation in grouped.items():
        _print_groups(name, grouped_evaluation.metrics)
    for name, megaface_evaluation in megaface.items():
        _print_megaface(name, megaface_evaluation.metrics)
    for name, report in ijb.items():
        _print_ijb(name, report)
    print(
        f"\nmodel {embedder.name}, flip {'on' if args.flip else 'off'}; 10-fold as insightface (mean ± std), "
        "best-thr = best single threshold on the whole set (optimistic, as the official evals.py)"
    )
    if args.json:
        print(f"wrote JSON to {args.json}")
    for figure in figures:
        print(f"wrote figure {figure}")
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
        "evaluate",
        "verification on .bin sets, identity folders and pairs; IJB-B/C, MegaFace, RFW and per-group fairness",
        _add_evaluate,
        _run_evaluate,
    ),
    Command("make-bin", "write a verification .bin of pairs from an identity folder", _add_make_bin, _run_make_bin),
]
