"""``train``, ``configs`` and ``dataset``: training from a YAML config or a shipped recipe, listing the shipped
configs, inspecting and building training sets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import GhostFaceNetsError
from .common import Command, print_json


def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c",
        "--config",
        metavar="CONFIG",
        help="a YAML file, or the name of a shipped config (ghostfacenets configs lists them: the paper's recipes "
        "and quickstart-cpu); defaults if omitted",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted overrides, values in YAML: data.train=DIR 'data.val=[a.bin,b.bin]' output=runs/x "
        "train.epochs=2 train.max_steps=100 train.resume=none",
    )
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config as YAML and exit (placeholders still to give show as ???)",
    )
    p.add_argument("--json", action="store_true", help="print the run summary as JSON at the end")
    p.epilog = (
        "Relative paths (data, output) are taken from the working directory. Several GPUs or nodes: "
        "torchrun --nproc-per-node=N -m ghostfacenets.cli train -c CONFIG ... (see docs/training.md). Re-running "
        "the same command resumes from the newest checkpoint; a fresh start (train.resume=none) in an output "
        "folder that already holds a run is refused."
    )


def _run_train(args: argparse.Namespace) -> int:
    from ..train.config import load_config, missing_message, missing_values

    config = load_config(args.config, args.overrides, allow_missing=args.print_config)
    if args.print_config:
        import yaml

        from .. import __version__

        print(f"# ghostfacenets {__version__}: the resolved config of {args.config or 'the defaults'}")
        print(yaml.safe_dump(config.to_dict(), sort_keys=False, width=1000), end="")
        missing = missing_values(config)
        if missing:
            print(f"note: {missing_message(missing)}", file=sys.stderr)
        return 0
    from ..train.distributed import init_distributed, shutdown
    from ..train.loop import train

    context = init_distributed(config.train.device)
    try:
        result = train(config, context)
    finally:
        shutdown(context)
    if not context.is_main:
        return 0
    summary = {
        "output": str(result.output),
        "final": str(result.final),
        "steps": result.steps,
        "epochs": round(result.epochs, 4),
        "best": str(result.best) if result.best else None,
        "best_value": result.best_value,
        "validation": result.validation,
        "damaged_images": len(result.damaged),
    }
    if args.json:
        print_json(summary)
        return 0
    print(f"trained {result.steps} steps ({result.epochs:.2f} epochs); model: {result.final}")

    def number(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    for name, metrics in result.validation.items():
        print(
            f"  {name}: 10-fold accuracy {number(metrics['accuracy_10fold_mean'])} "
            f"+- {number(metrics['accuracy_10fold_std'])}, best-threshold "
            f"{number(metrics['best_threshold_accuracy'])}, flip {'on' if metrics['flip'] else 'off'} "
            f"({metrics['pairs']} pairs)"
        )
    if result.best:
        print(f"  best: {result.best} ({config.train.best_key} {number(result.best_value)})")
    if result.damaged:
        print(f"  {len(result.damaged)} damaged image(s) skipped: see {result.output / 'damaged_images.json'}")
    return 0


def _add_configs(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", metavar="NAME", help="print this shipped config (YAML with its comments)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.epilog = (
        "Use one by name: ghostfacenets train -c NAME [key=value ...]; copy one to change it: "
        "ghostfacenets configs NAME > my.yaml"
    )


def _run_configs(args: argparse.Namespace) -> int:
    from ..train.config import load_config, missing_values, shipped_config_names, shipped_config_text

    if args.name:
        text = shipped_config_text(args.name)
        if args.json:
            print_json({"name": args.name, "yaml": text})
        else:
            print(text, end="")
        return 0
    records: list[dict[str, Any]] = []
    for name in shipped_config_names():
        config = load_config(name, allow_missing=True)
        records.append(
            {
                "name": name,
                "description": config.description,
                "architecture": config.model.architecture,
                "loss": config.loss.type,
                "epochs": config.train.epochs,
                "batch_size": config.train.batch_size,
                "to_give": missing_values(config),
            }
        )
    if args.json:
        print_json(records)
        return 0
    width = max(len(r["name"]) for r in records)
    for record in records:
        print(f"{record['name']:<{width}}  {record['description']}")
    print(
        "\nghostfacenets train -c NAME [key=value ...] trains one; ghostfacenets configs NAME prints it. The recipes "
        "leave data.train and data.val to give (???)."
    )
    return 0


def _add_dataset(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="dataset_action", metavar="ACTION", parser_class=type(p))
    inspect = actions.add_parser(
        "inspect",
        help="decode every image of an identity folder or RecordIO set",
        description="Decode every image of an identity folder or insightface RecordIO set "
        "(folder with train.rec/train.idx, or a .rec file) and report images, identities "
        "and damaged images or records. Exit status 1 when something is damaged.",
    )
    inspect.add_argument("path", metavar="PATH", help="identity folder, RecordIO folder or .rec file")
    inspect.add_argument("--workers", type=int, default=4, help="decoding threads (4)")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    build = actions.add_parser(
        "build-rec",
        help="write an identity folder as insightface train.rec/train.idx",
        description="Write an identity folder as insightface RecordIO (train.rec, train.idx, "
        "property) in the layout MXNet writes. 112x112 JPEG files are stored as they are; "
        "other images are fitted to --size and encoded as JPEG.",
    )
    build.add_argument("folder", metavar="FOLDER", help="identity folder (one sub-folder per person)")
    build.add_argument("output", metavar="OUT_DIR", help="folder to write train.rec, train.idx and property into")
    build.add_argument("--identities", nargs="+", metavar="PATTERN", help="only these sub-folders (shell patterns)")
    build.add_argument("--size", type=int, default=112, help="image size (112)")
    build.add_argument(
        "--resize",
        choices=("pad", "resize"),
        default="pad",
        help="images of another size: pad (keep aspect, black borders; default) or resize (stretch)",
    )
    build.add_argument("--quality", type=int, default=95, help="JPEG quality of re-encoded images (95)")
    build.add_argument("--workers", type=int, default=4, help="encoding threads (4)")
    build.add_argument("--json", action="store_true", help="print JSON")


def _run_dataset(args: argparse.Namespace) -> int:
    from ..data.datasets import build_records, inspect_dataset

    if args.dataset_action == "inspect":
        if not Path(args.path).exists():
            raise GhostFaceNetsError(f"{args.path}: no such file or folder")
        report = inspect_dataset(args.path, args.workers, progress=sys.stderr.isatty())
        if args.json:
            print_json(report)
        else:
            print(
                f"{report['path']} ({report['format']}): {report['images']} images, {report['identities']} "
                f"identities, {len(report['corrupt'])} corrupt"
            )
            if report.get("declared_identities") not in (None, report["identities"]):
                print(f"  the set declares {report['declared_identities']} identities")
            for where in report["corrupt"]:
                record = "record " if isinstance(where, int) else ""
                print(f"  corrupt: {record}{where}: {report['corrupt_reasons'][str(where)]}")
        return 1 if report["corrupt"] else 0
    if args.dataset_action == "build-rec":
        report = build_records(
            args.folder,
            args.output,
            args.identities,
            args.size,
            args.resize,
            args.quality,
            args.workers,
            progress=sys.stderr.isatty(),
        )
        if args.json:
            print_json(report)
        else:
            print(
                f"wrote {args.output}/train.rec, train.idx, property: {report['images']} images, "
                f"{report['identities']} identities, {len(report['skipped'])} damaged image(s) skipped"
            )
            for problem in report["skipped"]:
                print(f"  skipped: {problem}")
        return 0
    raise GhostFaceNetsError("choose an action: ghostfacenets dataset inspect PATH | build-rec FOLDER OUT_DIR")


COMMANDS = [
    Command(
        "train", "train a GhostFaceNet from a YAML config (one process, or many with torchrun)", _add_train, _run_train
    ),
    Command(
        "configs",
        "list the shipped training configs (the paper's recipes, the quickstart) or print one",
        _add_configs,
        _run_configs,
    ),
    Command(
        "dataset",
        "inspect an identity folder or RecordIO set, or build train.rec from a folder",
        _add_dataset,
        _run_dataset,
    ),
]
