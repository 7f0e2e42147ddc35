"""Gallery commands: ``enroll`` (photos of one person, or a folder of people), ``identify`` and ``gallery``
(list, remove, delete, export, import, reindex, reembed). ``--db`` is an SQLite file or a ``postgresql://`` URL; the
commands never know which."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import GhostFaceNetsError
from .common import Command, Parser, add_db_options, print_json, print_table
from .liveness import add_liveness_options, liveness_text
from .pipeline import _add_recognizer_options, _note_several, _recognizer, _threshold_text

DEFAULT_GALLERY = "default"  # = gallery.DEFAULT_GALLERY, without importing numpy at start-up


def _add_db(p: argparse.ArgumentParser, created: bool = False) -> None:
    add_db_options(
        p,
        "gallery database: an SQLite file" + (" (created if absent)" if created else "") + " or a "
        "postgresql://user@host/dbname URL (docs/gallery.md)",
    )


def _add_gallery_name(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--gallery", default=DEFAULT_GALLERY, metavar="G", help=f"gallery in the database (default {DEFAULT_GALLERY})"
    )


def _tty() -> bool:
    return sys.stderr.isatty()


# ------------------------------------------------------------------------------------------------ enroll
def _add_enroll(p: argparse.ArgumentParser) -> None:
    _add_db(p, created=True)
    _add_gallery_name(p)
    p.add_argument("name", nargs="?", metavar="NAME", help="the person's name (not with --folder)")
    p.add_argument("images", nargs="*", metavar="IMG", help="photos of this person (largest face of each)")
    p.add_argument(
        "--folder",
        metavar="DIR",
        help="bulk enrolment: one sub-folder of photos per person, named after them; run it again to resume",
    )
    p.add_argument("--metadata", metavar="JSON", help="the person's metadata as a JSON object, e.g. '{\"id\": 17}'")
    p.add_argument(
        "--store-crops",
        action="store_true",
        help="keep each face's aligned 112x112 crop in the gallery (needed by `gallery reembed`; no photo is stored)",
    )
    p.add_argument("--largest-face", action="store_true", help="--folder: use the largest face of photos with several")
    p.add_argument("--batch", type=int, default=64, metavar="N", help="--folder: faces per batch (default 64)")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_recognizer_options(p, thresholds=False)
    add_liveness_options(p)


def _run_enroll(args: argparse.Namespace) -> int:
    if args.folder:
        if args.name or args.images or args.metadata:
            raise GhostFaceNetsError("give either --folder DIR or NAME IMG..., not both (metadata: one person only)")
        return _enroll_folder(args)
    if not args.name or not args.images:
        raise GhostFaceNetsError("give NAME and at least one photo (or --folder DIR)")
    metadata = None
    if args.metadata:
        try:
            metadata = json.loads(args.metadata)
        except json.JSONDecodeError as exc:
            raise GhostFaceNetsError(f"--metadata is not JSON: {exc}") from None
    recognizer = _recognizer(args)
    result = recognizer.enroll(
        args.db, args.name, args.images, gallery=args.gallery, metadata=metadata, store_crops=args.store_crops
    )
    added, skipped, subject = len(result.added), len(result.skipped), result.subject
    liveness = [(f.source, f.detection["liveness"]) for f in result.added if "liveness" in (f.detection or {})]
    if args.json:
        print_json(
            {
                "gallery": args.gallery,
                "name": subject.name,
                "subject_id": subject.id,
                "added": added,
                "already_enrolled": skipped,
                "faces": subject.faces,
                "db": _shown(args.db),
                **({"liveness": [record for _, record in liveness]} if liveness else {}),
            }
        )
    else:
        extra = f", {skipped} already there" if skipped else ""
        print(
            f"enrolled {added} face(s) of {subject.name} into gallery {args.gallery} of {_shown(args.db)}{extra}; "
            f"{subject.faces} in all"
        )
        for source, record in liveness:
            print(f"{source}: live (liveness {record['score']:.4f} > threshold {record['threshold']:.4f})")
    return 0


def _enroll_folder(args: argparse.Namespace) -> int:
    from ..gallery import open_store
    from ..pipeline.bulk import enroll_folder, identity_folders

    if args.batch < 1:
        raise GhostFaceNetsError("--batch must be at least 1")
    identity_folders(args.folder)  # a wrong folder fails before the model loads
    recognizer = _recognizer(args)
    with open_store(args.db) as store:
        summary = enroll_folder(
            recognizer,
            store,
            args.gallery,
            args.folder,
            store_crops=args.store_crops,
            largest_face=args.largest_face,
            batch_size=args.batch,
            progress=_tty(),
        )
    record = {"gallery": args.gallery, "db": _shown(args.db), **summary.to_dict()}
    if args.json:
        print_json(record)
        return 0
    print(
        f"{args.folder}: {summary.people} people, {summary.images} photos into gallery {args.gallery} of "
        f"{_shown(args.db)}"
    )
    print_table(
        [
            ("enrolled", record["enrolled"]),
            ("skipped, already present (same sha256)", record["already_present"]),
            ("no face", record["no_face"]),
            ("several faces" + ("" if args.largest_face else " (--largest-face to use the largest)"),
             record["several_faces"]),
            ("unreadable", record["unreadable"]),
            ("enrolled as someone else already", record["conflicts"]),
            *([("spoof suspected (--liveness)", record["spoof_suspected"])] if recognizer.liveness else []),
        ],
        ("photos", "count"),
    )  # fmt: skip
    for kind, paths in record["problems"].items():
        for path in paths:
            print(f"{kind.replace('_', ' ')}: {path}", file=sys.stderr)
    return 0


def _shown(db: str) -> str:
    """``--db`` without a password, for messages."""
    from ..gallery.stores import redact_url

    return redact_url(db)


# ------------------------------------------------------------------------------------------------ identify
def _add_identify(p: argparse.ArgumentParser) -> None:
    _add_db(p)
    _add_gallery_name(p)
    p.add_argument("image", metavar="IMG", help="photo")
    p.add_argument("-k", type=int, default=5, help="how many candidates to list (default 5)")
    p.add_argument("--all", action="store_true", help="identify every face in the photo")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_recognizer_options(p)
    add_liveness_options(p)


def _run_identify(args: argparse.Namespace) -> int:
    from ..gallery import open_store
    from ..pipeline.results import NoFaceError

    if args.k < 1:
        raise GhostFaceNetsError("-k must be at least 1")
    recognizer = _recognizer(args)
    with open_store(args.db, create=False) as store:
        if args.all:
            results = recognizer.identify_faces(args.image, store, args.k, gallery=args.gallery)
            if not results:
                raise NoFaceError(f"{args.image}: no face found")
        else:
            results = [recognizer.identify(args.image, store, args.k, gallery=args.gallery)]
            _note_several(args.image, results[0].faces_in_image)
    if args.json:
        records = [{"image": args.image, "face_index": i, **r.to_dict()} for i, r in enumerate(results)]
        print_json(records if args.all else records[0])
        return 0
    for i, result in enumerate(results):
        label = f"{args.image} face {i}" if args.all else args.image
        if result.liveness is not None:
            print(liveness_text(label, result.liveness))
        best = result.matches[0] if result.matches else None
        if result.identity and best is not None:
            print(
                f"{label}: {result.identity} (similarity {best.similarity:.4f} > threshold "
                f"{result.threshold.value:.4f})"
            )
        else:
            closest = f"; closest {best.name} at {best.similarity:.4f}" if best else "; the gallery is empty"
            print(f"{label}: unknown (no one above threshold {result.threshold.value:.4f}{closest})")
        print_table(
            [(m.name, f"{m.similarity:.4f}", "yes" if m.is_match else "no") for m in result.matches],
            ("candidate", "similarity", "match"),
        )
    print(_threshold_text(results[0].threshold))
    return 0


# ------------------------------------------------------------------------------------------------ gallery
def _add_gallery(p: argparse.ArgumentParser) -> None:
    _add_db(p)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=Parser)
    listing = actions.add_parser("list", help="the galleries; with --gallery, its people and their faces")
    listing.add_argument("--gallery", metavar="G", help="list the people of this gallery")
    listing.add_argument("--json", action="store_true", help="print JSON")
    remove = actions.add_parser("remove", help="delete a person and their faces (rows are gone, not hidden)")
    _add_gallery_name(remove)
    remove.add_argument("name", metavar="NAME")
    delete = actions.add_parser("delete", help="delete a whole gallery with everyone in it")
    delete.add_argument("gallery", metavar="G")
    delete.add_argument("--yes", action="store_true", help="really delete it")
    export = actions.add_parser("export", help="write a gallery to a .jsonl or .parquet file (embeddings, metadata)")
    _add_gallery_name(export)
    export.add_argument("--out", required=True, metavar="FILE", help="X.jsonl or X.parquet (replaced atomically)")
    importing = actions.add_parser("import", help="enrol the faces of an export file (resumable: re-run skips)")
    importing.add_argument("file", metavar="FILE", help="X.jsonl or X.parquet from `gallery export`")
    importing.add_argument("--gallery", metavar="G", help="gallery to import into (default: the exported one's)")
    importing.add_argument(
        "--defer-index",
        action="store_true",
        help="PostgreSQL, owner role: drop the HNSW index of this embedding size, load, then rebuild it (much faster "
        "for large files; searches of every gallery of that size are exact, and slower, meanwhile)",
    )
    _add_index_build_options(importing)
    reindex = actions.add_parser(
        "reindex",
        help="PostgreSQL, owner role: build the HNSW index where it is missing or invalid (or --rebuild it); "
        "--status shows the indexes",
    )
    reindex.add_argument("--status", action="store_true", help="only show each index's state")
    reindex.add_argument("--dim", type=int, metavar="D", help="only the index of D-d embeddings")
    reindex.add_argument(
        "--rebuild", action="store_true", help="build ready indexes again too (the old serves until the new is ready)"
    )
    reindex.add_argument("--m", type=int, metavar="M", help="HNSW m for this and later builds (implies --rebuild)")
    reindex.add_argument(
        "--ef-construction", type=int, metavar="E", help="HNSW ef_construction for this and later builds (likewise)"
    )
    _add_index_build_options(reindex)
    reembed = actions.add_parser(
        "reembed", help="re-embed every face of a gallery from its stored crops with another model (one transaction)"
    )
    _add_gallery_name(reembed)
    _add_recognizer_options(reembed, thresholds=False)
    for action in (remove, delete, export, importing, reindex, reembed):
        action.add_argument("--json", action="store_true", help="print JSON")


def _run_gallery(args: argparse.Namespace) -> int:
    from ..gallery import open_store

    create = args.action == "import"
    with open_store(args.db, create=create) as store:
        record = _GALLERY_ACTIONS[args.action](args, store)
    if args.json:
        print_json(record)
    return 0


def _gallery_list(args: argparse.Namespace, store: Any) -> dict[str, Any]:
    if args.gallery:
        subjects, after = [], None
        while page := store.subjects(args.gallery, after=after, limit=1000):
            subjects.extend(page)
            after = page[-1].id
        info = store.gallery(args.gallery)
        rows = [{"id": s.id, "name": s.name, "faces": s.faces, "metadata": s.metadata, "created": s.created}
                for s in subjects]  # fmt: skip
        if not args.json:
            model = info.model.describe() if info.model else "(none yet)"
            print(f"gallery {info.name}: {info.subjects} people, {info.faces} faces, model {model}")
            if rows:
                print_table([(r["name"], r["faces"], r["created"]) for r in rows], ("name", "faces", "created"))
        return {"gallery": info.name, "model": info.model.__dict__ if info.model else None, "subjects": rows}
    galleries = store.galleries()
    records = [
        {
            "name": g.name,
            "subjects": g.subjects,
            "faces": g.faces,
            "faces_with_crops": g.crops,
            "model": g.model.__dict__ if g.model else None,
            "created": g.created,
        }
        for g in galleries
    ]
    if not args.json:
        print(f"{store.location}: {len(galleries)} galleries")
        if galleries:
            print_table(
                [(g.name, g.subjects, g.faces, g.model.describe() if g.model else "(none yet)") for g in galleries],
                ("gallery", "people", "faces", "model"),
            )
    return {"galleries": records}


def _gallery_remove(args: argparse.Namespace, store: Any) -> dict[str, Any]:
    from ..gallery import NotFoundError

    subject = store.find_subject(args.gallery, args.name)
    if subject is None:
        raise NotFoundError(f"{store.location}: no one named {args.name.strip()!r} in gallery {args.gallery!r}")
    count = store.delete_subject(args.gallery, subject.id)
    if not args.json:
        print(f"removed {subject.name} ({count} faces) from gallery {args.gallery} of {store.location}")
    return {"gallery": args.gallery, "removed": subject.name, "faces": count}


def _gallery_delete(args: argparse.Namespace, store: Any) -> dict[str, Any]:
    info = store.gallery(args.gallery)
    if not args.yes:
        raise GhostFaceNetsError(
            f"gallery {info.name} holds {info.subjects} people and {info.faces} faces; add --yes to delete it"
        )
    store.delete_gallery(args.gallery)
    if not args.json:
        print(f"deleted gallery {info.name} ({info.subjects} people, {info.faces} faces) from {store.location}")
    return {"deleted": info.name, "subjects": info.subjects, "faces": info.faces}


def _bar(total: int | None, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="face", disable=not _tty(), leave=False)


def _gallery_export(args: argparse.Namespace, store: Any) -> dict[str, Any]:
    from ..gallery.transfer import export_gallery

    info = store.gallery(args.gallery)
    with _bar(info.faces, "exporting") as bar:
        count = export_gallery(store, args.gallery, args.out, bar.update)
    if not args.json:
        print(f"wrote {count} faces of gallery {args.gallery} to {args.out}")
    return {"gallery": args.gallery, "faces": count, "out": args.out}


def _gallery_import(args: argparse.Namespace, store: Any) -> dict[str, Any]:
    from ..gallery.transfer import file_model, import_gallery

    build = None
    if args.defer_index:
        _postgres_only(args, "--defer-index")
        dim = file_model(args.file).dim
        store.drop_index(dim)
        if not args.json:
            print(f"dropped the HNSW index of {dim}-d embeddings for the load; it is rebuilt after it", file=sys.stderr)
    elif args.maintenance_work_mem or args.workers is not None or args.lock_writes:
        raise GhostFaceNetsError("--maintenance-work-mem, --workers and --lock-writes go with --defer-index")
    try:
        with _bar(None, "importing") as bar:
            added, skipped = import_gallery(store, args.file, args.gallery, bar.update)
    except KeyboardInterrupt:
        if args.defer_index:  # stopped on purpose: no build of many minutes now
            print(
                f"the HNSW index of {dim}-d embeddings stays dropped (searches of those galleries are exact) until "
                f"`ghostfacenets gallery --db {_shown(args.db)} reindex`, or this import again",
                file=sys.stderr,
            )
        raise
    except Exception:
        if args.defer_index:  # what went in before the failure is searched through the index again
            _build_index(args, store, dim, rebuild=False)
        raise
    if args.defer_index:
        build = _build_index(args, store, dim, rebuild=False)
    if not args.json:
        extra = f", {skipped} already there" if skipped else ""
        print(f"imported {added} faces from {args.file} into {store.location}{extra}")
    record: dict[str, Any] = {"file": args.file, "added": added, "already_present": skipped}
    if build is not None:
        record["index"] = build
    return record


def _add_index_build_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--maintenance-work-mem",
        metavar="SIZE",
        help="memory for the index build, e.g. 4GB (pgvector builds fast while the graph fits: 2.7 KB per 512-d "
        "face at m = 16; default: the server's setting)",
    )
    p.add_argument("--workers", type=int, metavar="N", help="parallel workers for the build besides the leader")
    p.add_argument(
        "--lock-writes",
        action="store_true",
        help="build with plain CREATE INDEX: a little faster, but enrolments wait until it ends "
        "(default: CONCURRENTLY, searches and enrolments go on)",
    )


def _postgres_only(args: argparse.Namespace, what: str) -> None:
    from ..gallery import is_postgres_url

    if not is_postgres_url(args.db):
        raise GhostFaceNetsError(f"{what} applies to PostgreSQL galleries; SQLite searches are exact, without an index")


def _build_index(args: argparse.Namespace, store: Any, dim: int, rebuild: bool) -> dict[str, Any]:
    """Build one index with the command's options, a progress bar on a terminal, and say what it did."""
    from tqdm import tqdm

    bar = tqdm(desc=f"indexing {dim}-d", unit="block", disable=not _tty(), leave=False)

    def progress(phase: str, done: int, total: int) -> None:
        bar.set_postfix_str(phase, refresh=False)
        bar.total = total or None
        bar.n = done
        bar.refresh()

    with bar:
        build = store.build_index(
            dim,
            rebuild=rebuild,
            m=getattr(args, "m", None),
            ef_construction=getattr(args, "ef_construction", None),
            concurrently=not args.lock_writes,
            maintenance_work_mem=args.maintenance_work_mem,
            workers=args.workers,
            progress=progress,
        )
    for notice in build.notices:
        print(f"pgvector: {notice}", file=sys.stderr)
    if not args.json:
        if build.built:
            workers = f"{build.workers} parallel worker{'s' if build.workers != 1 else ''}"
            how = "concurrently" if build.concurrently else "enrolments waiting"
            print(
                f"built {build.name} in {build.seconds:.1f} s: {build.faces:,} faces, {build.size_bytes / 2**20:,.0f} "
                f"MiB (maintenance_work_mem {build.maintenance_work_mem}, {workers}, {how})"
            )
        else:
            print(f"{build.name} is ready ({build.faces:,} faces); --rebuild builds it again")
    return {
        "name": build.name, "dim": build.dim, "built": build.built, "seconds": round(build.seconds, 3),
        "faces": build.faces, "size_bytes": build.size_bytes, "concurrently": build.concurrently,
        "maintenance_work_mem": build.maintenance_work_mem, "workers": build.workers, "notices": build.notices,
    }  # fmt: skip


def _gallery_reindex(args: argparse.Namespace, store: Any) -> dict[str, Any]:
    _postgres_only(args, "reindex")
    indexes = store.index_status()
    if args.dim is not None and args.dim not in [i.dim for i in indexes]:
        raise GhostFaceNetsError(f"no gallery of {args.dim}-d embeddings here (indexes: {[i.dim for i in indexes]})")
    chosen = [i for i in indexes if args.dim in (None, i.dim)]
    if args.status:
        records = [info.__dict__ for info in chosen]
        if not args.json:
            print_table(
                [(i.name, i.dim, i.state, f"{i.faces:,}", f"{i.size_bytes / 2**20:,.0f} MiB", i.m or "",
                  i.ef_construction or "", i.deferred_since or "") for i in chosen],
                ("index", "dim", "state", "faces", "size", "m", "ef_construction", "deferred since"),
            )  # fmt: skip
        return {"indexes": records}
    rebuild = args.rebuild or args.m is not None or args.ef_construction is not None
    builds = [_build_index(args, store, info.dim, rebuild) for info in chosen if rebuild or info.state != "ready"]
    if not builds and not args.json:
        print("every index is ready; --rebuild builds them again")
    return {"builds": builds}


def _gallery_reembed(args: argparse.Namespace, store: Any) -> dict[str, Any]:
    recognizer = _recognizer(args)
    before = store.gallery(args.gallery).model
    count = recognizer.reembed(store, args.gallery, progress=_tty())
    after = recognizer.model_id
    if not args.json:
        old = before.describe() if before else "(none)"
        print(f"re-embedded {count} faces of gallery {args.gallery}: {old} -> {after.describe()}")
    return {"gallery": args.gallery, "faces": count, "model": after.__dict__}


_GALLERY_ACTIONS = {
    "list": _gallery_list,
    "remove": _gallery_remove,
    "delete": _gallery_delete,
    "export": _gallery_export,
    "import": _gallery_import,
    "reindex": _gallery_reindex,
    "reembed": _gallery_reembed,
}

COMMANDS = [
    Command("enroll", "add photos of a person (or a folder of people) to a gallery", _add_enroll, _run_enroll),
    Command("identify", "who is the person in a photo? (search a gallery)", _add_identify, _run_identify),
    Command(
        "gallery", "list, remove, delete, export, import, reindex or re-embed galleries", _add_gallery, _run_gallery
    ),
]
