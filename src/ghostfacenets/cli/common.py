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


DB_ENV = "GHOSTFACENETS_DB"  # = gallery.stores.DB_ENV, without importing numpy at start-up


def add_db_options(p: argparse.ArgumentParser, what: str, default: str | None = None) -> None:
    """``--db`` (``what`` describes it) or ``--db-file``; else :data:`DB_ENV`, else ``default`` (None: required).
    :func:`run_with_db` turns them into ``args.db``."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--db", metavar="DB", help=f"{what}; else ${DB_ENV}" + (f", else {default}" if default else ""))
    group.add_argument(
        "--db-file",
        metavar="FILE",
        help="read --db from the first line of FILE (readable by you only when it holds a password), so that no "
        "password shows in the process list; or use ~/.pgpass, PGSERVICE or PGPASSWORD (docs/gallery.md)",
    )
    p.set_defaults(db_default=default)


def run_with_db(args: argparse.Namespace) -> int:
    """Run a command of a gallery database: ``args.db`` from ``--db``, ``--db-file``, :data:`DB_ENV` or the
    command's default, and the command the actor of the changes it makes (the audit trail)."""
    import os

    from ..errors import GhostFaceNetsError
    from ..gallery.audit import cli_actor, process_acting_as
    from ..gallery.stores import read_db_file

    args.db_on_command_line = args.db is not None  # where ps shows it
    if args.db is None:
        if args.db_file is not None:
            args.db = read_db_file(args.db_file)
        else:
            args.db = os.environ.get(DB_ENV) or args.db_default
    if not args.db:
        raise GhostFaceNetsError(f"give the gallery database: --db DB, --db-file FILE or ${DB_ENV}")
    action = getattr(args, "action", None)
    with process_acting_as(cli_actor(f"{args.command} {action}" if isinstance(action, str) else args.command)):
        return int(args.run(args))
