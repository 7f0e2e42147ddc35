"""``audit``: who changed the galleries, how and when (the audit trail every store keeps)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .common import Command, add_db_options, print_json, print_table


def _add_audit(p: argparse.ArgumentParser) -> None:
    add_db_options(p, "gallery database: an SQLite file or a postgresql:// URL")
    p.add_argument("--gallery", metavar="G", help="only the changes of this gallery")
    p.add_argument(
        "--since", metavar="WHEN", help="only changes from then on: 2026-01-31, 2026-01-31T08:00, or an age: 12h, 7d"
    )
    p.add_argument("--limit", type=int, metavar="N", help="only the last N changes")
    p.add_argument("--json", action="store_true", help="print JSON: one record per change")


def _run_audit(args: argparse.Namespace) -> int:
    from ..errors import GhostFaceNetsError
    from ..gallery import open_store

    if args.limit is not None and args.limit < 1:
        raise GhostFaceNetsError("--limit must be at least 1")
    with open_store(args.db, create=False) as store:
        events = store.audit(args.gallery, args.since, args.limit)
    if args.json:
        print_json([event.to_dict() for event in events])
        return 0
    print_table(
        [(e.time, e.actor, e.via, e.action, e.gallery or "-", e.subject_id or "-", _detail(e.detail)) for e in events],
        ("time", "actor", "via", "action", "gallery", "subject", "detail"),
    )
    return 0


def _detail(detail: dict[str, Any]) -> str:
    return " ".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in detail.items())


COMMANDS = [
    Command(
        "audit",
        "who changed the galleries: enrolments, deletions, renames, imports, keys (who, how and when)",
        _add_audit,
        _run_audit,
    ),
]
