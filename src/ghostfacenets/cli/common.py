"""What every command module shares: the command record, output helpers and the one-line error parser."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple


class Command(NamedTuple):
    """A subcommand: its name, one line of help, the function declaring its arguments and the one running it."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


def print_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> None:
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for i, row in enumerate(cells):
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def add_runtime_options(p: argparse.ArgumentParser) -> None:
    """``--device`` and ``--backend``: where and how the model runs (the rule of ``ghostfacenets.inference``)."""
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: CUDA when available)")
    p.add_argument(
        "--backend",
        default="auto",
        metavar="NAME",
        help="how the model runs: auto (default: ExecuTorch with the mobile extra, else onnxruntime, on a CPU; "
        "fused PyTorch on a GPU; see the README), eager, fused, executorch, onnxruntime, compile, cuda-graph",
    )
