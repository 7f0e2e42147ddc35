"""``ghostfacenets`` command line: a thin layer over the Python API.

Each command has an ``_add_<name>`` function that declares its arguments and a ``_run_<name>`` function that does the
work; ``COMMANDS`` lists them. Errors a user can fix are printed as one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import GhostFaceNetsError


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _print_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> None:
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for i, row in enumerate(cells):
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


# ---------------------------------------------------------------------------------------------------------- models
def _add_models(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pretrained", action="store_true", help="list pretrained weights instead of architectures")
    p.add_argument("--filter", metavar="REGEX", help="only names matching this regular expression")
    p.add_argument("--json", action="store_true", help="print JSON")


def _run_models(args: argparse.Namespace) -> int:
    from .models.registry import ARCHITECTURES, PRETRAINED, list_models

    names = list_models(pretrained=args.pretrained, pattern=args.filter)
    if args.pretrained:
        records = [PRETRAINED[n].metadata() | {"name": n} for n in names]
        if args.json:
            _print_json(records)
        else:
            rows = [(r["name"], r["architecture"], r["training_data"], ", ".join(
                f"{k} {v}" for k, v in r["reported_accuracy"].items())) for r in records]
            _print_table(rows, ("name", "architecture", "training data", "reported accuracy (%)"))
            print(f"\n{PRETRAINED[names[0]].license}" if names else "")
        return 0
    if args.json:
        _print_json([{"name": n, "config": ARCHITECTURES[n].to_dict()} for n in names])
    else:
        print("\n".join(names))
    return 0


# ------------------------------------------------------------------------------------------------------------ info
def _add_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="NAME_OR_PATH", help="architecture or pretrained name, .h5 or .safetensors file")
    p.add_argument("--json", action="store_true", help="print JSON")


def _run_info(args: argparse.Namespace) -> int:
    from .model_io import load_model
    from .models.counting import count
    from .models.ghostfacenet import build_model
    from .models.registry import ARCHITECTURES, PRETRAINED, architecture_name

    source = args.model
    metadata: dict[str, Any] = {}
    if source in ARCHITECTURES and not Path(source).exists():
        model = build_model(ARCHITECTURES[source])
    elif source in PRETRAINED and not Path(source).exists():
        model = build_model(PRETRAINED[source].config())  # counting needs no download
        metadata = PRETRAINED[source].metadata()
    else:
        model = load_model(source)
        metadata = model.metadata
    c = model.config
    counts = count(model)
    result = {
        "name": source,
        "architecture": architecture_name(c.version, c.width, c.stem_stride),
        "config": c.to_dict(),
        "params": counts.params,
        "params_keras_total": counts.params_keras_total,
        "mflops": round(counts.mflops, 3),
        "mmacs": round(counts.mmacs, 3),
    }
    for key in ("source", "training_data", "license", "reported_accuracy", "thresholds"):
        if metadata.get(key):
            result[key] = metadata[key]
    if args.json:
        _print_json(result)
        return 0
    print(f"{source}: {result['architecture']}, embedding {c.embedding_size}, GDC bias {c.gdc_bias}, "
          f"input {c.input_size}x{c.input_size}")
    print(f"  parameters        {counts.params:,} trainable, {counts.params_keras_total:,} Keras total (with BN statistics)")
    print(f"  MFLOPs (paper)    {counts.mflops:.2f}")
    print(f"  conv MMACs        {counts.mmacs:.2f}")
    for key in ("training_data", "license"):
        if key in result:
            print(f"  {key.replace('_', ' '):<17} {result[key]}")
    if "source" in result:
        print(f"  source            {result['source'].get('url') or result['source'].get('path')} "
              f"(sha256 {result['source'].get('sha256')})")
    return 0


# --------------------------------------------------------------------------------------------------------- convert
def _add_convert(p: argparse.ArgumentParser) -> None:
    p.add_argument("keras_h5", metavar="IN.h5", help="official Keras .h5 (whole model or weights only)")
    p.add_argument("output", metavar="OUT", help="output file in the package's own format (.safetensors)")


def _run_convert(args: argparse.Namespace) -> int:
    from .model_io import convert_keras, read_metadata

    if not Path(args.keras_h5).is_file():
        raise GhostFaceNetsError(f"{args.keras_h5}: no such file")
    out = convert_keras(args.keras_h5, args.output)
    meta = read_metadata(out)
    print(f"{args.keras_h5} -> {out}: {meta['architecture']} (embedding {meta['config']['embedding_size']}, "
          f"GDC bias {meta['config']['gdc_bias']}), source sha256 {meta['source']['sha256']}")
    return 0


Command = tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
COMMANDS: list[Command] = [
    ("models", "list the registered architectures or pretrained weights", _add_models, _run_models),
    ("info", "parameters, FLOPs and metadata of a model", _add_info, _run_info),
    ("convert", "convert an official Keras .h5 into the package's own format", _add_convert, _run_convert),
]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="ghostfacenets", description="GhostFaceNets face recognition in PyTorch.")
    parser.add_argument("--version", action="version", version=f"ghostfacenets {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, help_text, add, run in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        add(p)
        p.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    if os.environ.get("GHOSTFACENETS_DEBUG"):
        return args.run(args)  # full tracebacks for debugging
    try:
        return args.run(args)
    except GhostFaceNetsError as exc:
        print(f"ghostfacenets {args.command}: error: {exc}", file=sys.stderr)
    except FileNotFoundError as exc:
        print(f"ghostfacenets {args.command}: error: {exc.filename or exc}: no such file", file=sys.stderr)
    except (OSError, ValueError) as exc:
        print(f"ghostfacenets {args.command}: error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"ghostfacenets {args.command}: interrupted", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
