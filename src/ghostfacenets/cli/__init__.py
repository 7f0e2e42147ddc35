"""``ghostfacenets`` command line: a thin layer over the Python API.

Each command group lives in its own module (``models``, ``pipeline``, ``gallery``, ``people``, ``evaluate``,
``export``, ``train``, ``serve``, ``audit``, ``video``) with an ``_add_<name>`` function declaring a command's
arguments and a ``_run_<name>`` function doing the work, listed in the module's ``COMMANDS``.
Errors a user can fix are printed as one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ..errors import GhostFaceNetsError
from . import audit, evaluate, export, gallery, models, people, pipeline, serve, train, video
from .common import Command, Parser, run_with_db

COMMANDS: list[Command] = [
    *models.COMMANDS,
    *pipeline.COMMANDS,
    *gallery.COMMANDS,
    *people.COMMANDS,
    *evaluate.COMMANDS,
    *export.COMMANDS,
    *train.COMMANDS,
    *serve.COMMANDS,
    *audit.COMMANDS,
    *video.COMMANDS,
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    from .. import __version__

    parser = Parser(prog="ghostfacenets", description="GhostFaceNets face recognition in PyTorch.")
    parser.add_argument("--version", action="version", version=f"ghostfacenets {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(p)
        p.set_defaults(run=command.run)
    return parser


def _run(args: argparse.Namespace) -> int:
    return run_with_db(args) if hasattr(args, "db_file") else int(args.run(args))


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    if os.environ.get("GHOSTFACENETS_DEBUG"):
        return int(_run(args))  # full tracebacks for debugging
    try:
        return int(_run(args))
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
