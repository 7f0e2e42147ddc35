"""``models``, ``info`` and ``convert``: the registered architectures, their counts, Keras conversion."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import GhostFaceNetsError
from .common import Command, print_json, print_table


def _add_models(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pretrained", action="store_true", help="list pretrained weights instead of architectures")
    p.add_argument("--filter", metavar="REGEX", help="only names matching this regular expression")
    p.add_argument("--json", action="store_true", help="print JSON")


def _run_models(args: argparse.Namespace) -> int:
    from ..models.registry import ARCHITECTURES, PRETRAINED, list_models

    names = list_models(pretrained=args.pretrained, pattern=args.filter)
    if args.pretrained:
        records = [PRETRAINED[n].metadata() | {"name": n} for n in names]
        if args.json:
            print_json(records)
        else:
            rows = [
                (
                    r["name"],
                    r["architecture"],
                    r["training_data"],
                    ", ".join(f"{k} {v}" for k, v in r["reported_accuracy"].items()),
                )
                for r in records
            ]
            print_table(rows, ("name", "architecture", "training data", "reported accuracy (%)"))
            print(f"\n{PRETRAINED[names[0]].license}" if names else "")
        return 0
    if args.json:
        print_json([{"name": n, "config": ARCHITECTURES[n].to_dict()} for n in names])
    else:
        print("\n".join(names))
    return 0


def _add_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="NAME_OR_PATH", help="architecture or pretrained name, .h5 or .safetensors file")
    p.add_argument("--json", action="store_true", help="print JSON")


def _run_info(args: argparse.Namespace) -> int:
    from ..model_io import load_model
    from ..models.counting import count
    from ..models.ghostfacenet import build_model
    from ..models.registry import ARCHITECTURES, PRETRAINED, architecture_name

    source = args.model
    metadata: dict[str, Any] = {}
    if source in ARCHITECTURES and not Path(source).exists():
        model = build_model(ARCHITECTURES[source], initialise=False)
    elif source in PRETRAINED and not Path(source).exists():
        model = build_model(PRETRAINED[source].config(), initialise=False)  # counting needs no download
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
        print_json(result)
        return 0
    print(
        f"{source}: {result['architecture']}, embedding {c.embedding_size}, GDC bias {c.gdc_bias}, "
        f"input {c.input_size}x{c.input_size}"
    )
    total = f"{counts.params_keras_total:,} Keras total (with BN statistics)"
    print(f"  parameters        {counts.params:,} trainable, {total}")
    print(f"  MFLOPs (paper)    {counts.mflops:.2f}")
    print(f"  conv MMACs        {counts.mmacs:.2f}")
    for key in ("training_data", "license"):
        if key in result:
            print(f"  {key.replace('_', ' '):<17} {result[key]}")
    if "source" in result:
        print(
            f"  source            {result['source'].get('url') or result['source'].get('path')} "
            f"(sha256 {result['source'].get('sha256')})"
        )
    return 0


def _add_convert(p: argparse.ArgumentParser) -> None:
    p.add_argument("keras_h5", metavar="IN.h5", help="official Keras .h5 (whole model or weights only)")
    p.add_argument("output", metavar="OUT", help="output file in the package's own format (.safetensors)")


def _run_convert(args: argparse.Namespace) -> int:
    from ..model_io import convert_keras, read_metadata

    if not Path(args.keras_h5).is_file():
        raise GhostFaceNetsError(f"{args.keras_h5}: no such file")
    out = convert_keras(args.keras_h5, args.output)
    meta = read_metadata(out)
    print(
        f"{args.keras_h5} -> {out}: {meta['architecture']} (embedding {meta['config']['embedding_size']}, "
        f"GDC bias {meta['config']['gdc_bias']}), source sha256 {meta['source']['sha256']}"
    )
    return 0


COMMANDS = [
    Command("models", "list the registered architectures or pretrained weights", _add_models, _run_models),
    Command("info", "parameters, FLOPs and metadata of a model", _add_info, _run_info),
    Command("convert", "convert an official Keras .h5 into the package's own format", _add_convert, _run_convert),
]
