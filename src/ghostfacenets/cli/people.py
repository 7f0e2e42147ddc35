"""``people``: unlabelled faces of a photo library grouped into persons, and the corrections that stick
(``add``, ``cluster``, ``list``, ``show``, ``name``, ``merge``, ``split``, ``reject``, ``move``, ``ignore``,
``settings``). A thin layer over :class:`ghostfacenets.people.PeopleLibrary`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import GhostFaceNetsError
from .common import Command, Parser, print_json, print_table
from .gallery import _add_db, _add_gallery_name, _shown
from .pipeline import _add_recognizer_options, _recognizer

_SETTING_FLAGS = {
    "link": (float, "COS", "cosine at which two faces are linked"),
    "join": (float, "COS", "mean cosine to a person's faces needed to join it (and to hold a new group together)"),
    "join_links": (int, "N", "links into a person needed to join it"),
    "min_faces": (int, "N", "faces from distinct photos needed to start a group"),
    "min_quality": (float, "Q", "faces below this quality (0-1) are never grouped"),
    "margin": (float, "COS", "leave a face unsorted when a second person is this close to the best"),
    "neighbours": (int, "K", "nearest neighbours looked at"),
}


def _add_settings(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("grouping settings (stored with the gallery; docs/people.md)")
    for name, (kind, metavar, text) in _SETTING_FLAGS.items():
        group.add_argument(f"--{name.replace('_', '-')}", type=kind, metavar=metavar, help=text)


def _add_people(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=Parser)

    def action(name: str, text: str, *, created: bool = False) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=text, description=text)
        _add_db(sub, created=created)
        _add_gallery_name(sub)
        sub.add_argument("--json", action="store_true", help="print JSON")
        return sub

    add = action("add", "add every face of every photo of a folder (or of single photos) without names", created=True)
    add.add_argument("photos", nargs="+", metavar="PHOTO_OR_DIR", help="photos and folders (searched recursively)")
    add.add_argument("--store-crops", action="store_true", help="keep each face's aligned crop (shown by the page)")
    add.add_argument("--no-cluster", action="store_true", help="only add the faces; `people cluster` groups them")
    add.add_argument("--batch", type=int, default=32, metavar="N", help="photos per transaction (32)")
    _add_settings(add)
    _add_recognizer_options(add, thresholds=False)
    cluster = action("cluster", "group the faces waiting to be placed (incremental), or all of them again (--full)")
    cluster.add_argument("--full", action="store_true", help="forget every automatic placement and start over")
    _add_settings(cluster)
    listing = action("list", "the people, largest first, and how the faces stand")
    listing.add_argument("--limit", type=int, default=50, metavar="N", help="people to show (50)")
    listing.add_argument("--offset", type=int, default=0, metavar="N", help="people to skip (0)")
    show = action("show", "a person's faces (or, with --unsorted, the faces in no person)")
    target = show.add_mutually_exclusive_group(required=True)
    target.add_argument("person", nargs="?", type=int, metavar="PERSON")
    target.add_argument("--unsorted", action="store_true")
    show.add_argument("--limit", type=int, default=100, metavar="N")
    name = action("name", "name a person (it becomes a subject that `identify` finds); or rename it")
    name.add_argument("person", type=int, metavar="PERSON")
    name.add_argument("name", metavar="NAME")
    merge = action("merge", "merge people into the first")
    merge.add_argument("target", type=int, metavar="PERSON")
    merge.add_argument("sources", nargs="+", type=int, metavar="OTHER")
    split = action("split", "move faces of a person to a new person")
    split.add_argument("person", type=int, metavar="PERSON")
    split.add_argument("faces", nargs="+", type=int, metavar="FACE")
    reject = action("reject", "'not this person': the face leaves its person for good and is placed again")
    reject.add_argument("face", type=int, metavar="FACE")
    reject.add_argument("--person", type=int, metavar="PERSON", help="the person it is not (default: its own)")
    move = action("move", "put faces in a person")
    move.add_argument("faces", nargs="+", type=int, metavar="FACE")
    move.add_argument("--to", type=int, required=True, metavar="PERSON")
    ignore = action("ignore", "never group these faces (not a face, a stranger)")
    ignore.add_argument("faces", nargs="+", type=int, metavar="FACE")
    settings = action("settings", "show the gallery's grouping settings, or change them (then run cluster --full)")
    _add_settings(settings)


def _changed_settings(args: argparse.Namespace, current: Any) -> Any:
    from dataclasses import replace

    changes = {name: getattr(args, name) for name in _SETTING_FLAGS if getattr(args, name, None) is not None}
    return replace(current, **changes) if changes else None


def _face_json(face: Any) -> dict[str, Any]:
    """A face as the service gives it, without its creation time."""
    record = face.to_dict()
    del record["created"]
    return record


def _summary_json(summary: Any) -> dict[str, Any]:
    return {name: getattr(summary, name) for name in summary.__dataclass_fields__}


def _run_people(args: argparse.Namespace) -> int:
    from ..gallery import open_store
    from ..people import PeopleLibrary

    for name in ("limit", "batch"):
        if getattr(args, name, 1) < 1:
            raise GhostFaceNetsError(f"--{name} must be at least 1")
    recognizer = _recognizer(args) if args.action == "add" else None
    with open_store(args.db, create=args.action == "add") as store:
        if recognizer is not None:
            library = PeopleLibrary(store, args.gallery, recognizer)
        else:
            info = store.gallery(args.gallery)
            if info.model is None:
                raise GhostFaceNetsError(f"gallery {args.gallery!r} holds no faces yet: `people add` some first")
            library = PeopleLibrary(store, args.gallery, model=info.model)
        changed = _changed_settings(args, library.settings)
        if changed is not None:
            library.save_settings(changed)
        record = _ACTIONS[args.action](args, library)
    record = {"gallery": args.gallery, "db": _shown(args.db), **record}
    if args.json:
        print_json(record)
    return 0


def _progress(total: int, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="photo", disable=not sys.stderr.isatty() or total < 2, leave=False)


def _add(args: argparse.Namespace, library: Any) -> dict[str, Any]:
    from pathlib import Path

    from ..people.library import photo_files

    folders = [p for p in args.photos if Path(p).is_dir()]
    files = [p for p in args.photos if not Path(p).is_dir()]
    for path in files:
        if not Path(path).is_file():
            raise GhostFaceNetsError(f"{path}: no such file or folder")
    totals: dict[str, Any] = {"photos_added": 0, "faces_added": 0, "already_done": 0, "no_face": [], "unreadable": []}
    for folder in folders:
        with _progress(len(photo_files(folder)), f"adding {folder}") as bar:
            summary = library.add_folder(folder, store_crops=args.store_crops, place=False, batch=args.batch,
                                         progress=bar.update)  # fmt: skip
        for key, value in summary.to_dict().items():
            if key in totals:
                totals[key] += value
    for path in files:
        added = library.add_image(path, store_crops=args.store_crops, place=False)
        totals["photos_added"] += len(added.added)
        totals["faces_added"] += added.faces
        totals["already_done"] += len(added.skipped)
    grouping = None if args.no_cluster else library.cluster().to_dict()
    summary = _summary_json(library.summary())
    if not args.json:
        print(
            f"added {totals['faces_added']} face(s) of {totals['photos_added']} photo(s) "
            f"({totals['already_done']} photo(s) done before, {len(totals['no_face'])} without a face, "
            f"{len(totals['unreadable'])} unreadable)"
        )
        _print_summary(summary)
    return {**totals, "grouping": grouping, "summary": summary}


def _print_summary(summary: dict[str, Any]) -> None:
    print(
        f"{summary['faces']} faces in {summary['photos']} photos: {summary['people']} people "
        f"({summary['named']} named), {summary['unsorted']} unsorted ({summary['low_quality']} of low quality), "
        f"{summary['pending']} waiting"
    )


def _cluster(args: argparse.Namespace, library: Any) -> dict[str, Any]:
    total = library.summary().pending
    with _progress(total, "grouping") as bar:
        grouping = library.cluster(full=args.full, progress=bar.update)
    summary = _summary_json(library.summary())
    if not args.json:
        print(f"placed {grouping.placed} face(s): {grouping.joined} joined a person, {grouping.started_groups} new "
              f"group(s), {grouping.unsorted - grouping.gathered - grouping.rescued} left unsorted")  # fmt: skip
        _print_summary(summary)
    return {"grouping": grouping.to_dict(), "settings": library.settings.to_dict(), "summary": summary}


def _list(args: argparse.Namespace, library: Any) -> dict[str, Any]:
    people = library.people(args.offset, args.limit)
    summary = _summary_json(library.summary())
    if not args.json:
        _print_summary(summary)
        rows = [(p.id, p.name or "-", p.faces, p.pinned, p.cover_face or "-") for p in people]
        if rows:
            print_table(rows, ("person", "name", "faces", "pinned", "cover face"))
    return {"people": [p.to_dict() for p in people], "summary": summary}


def _show(args: argparse.Namespace, library: Any) -> dict[str, Any]:
    person = None if args.unsorted else library.person(args.person)
    faces = library.faces(None if args.unsorted else args.person, None, args.limit)
    if not args.json:
        print("unsorted faces" if person is None else f"person {person.id} ({person.name or 'unnamed'}): "
              f"{person.faces} faces")  # fmt: skip
        rows = [(f.id, f.reference, f"{f.quality:.2f}", "yes" if f.pinned else "") for f in faces]
        if rows:
            print_table(rows, ("face", "photo", "quality", "pinned"))
    return {"person": None if person is None else person.to_dict(), "faces": [_face_json(f) for f in faces]}


def _correction(done: str, person: Any, args: argparse.Namespace) -> dict[str, Any]:
    if not args.json:
        print(f"{done}: person {person.id} ({person.name or 'unnamed'}), {person.faces} face(s)")
    return {"person": person.to_dict()}


def _name(args: argparse.Namespace, library: Any) -> dict[str, Any]:
    return _correction("named", library.name(args.person, args.name), args)


def _merge(args: argparse.Namespace, library: Any) -> dict[str, Any]:
    return _correction("merged", library.merge(args.target, args.sources), args)


def _split(args: argparse.Namespace, library: Any) -> dict[str, Any]:
    return _correction("split off", library.split(args.person, args.faces), args)


def _reject(args: argparse.Namespace, library: Any) -> dict[str, Any]:
    library.reject(args.face, args.person)
    face = library.face(args.face)
    if not args.json:
        where = f"person {face.person_id}" if face.person_id is not None else "unsorted"
        print(f"face {face.id} is no longer that person; placed again: {where}")
    return {"face": _face_json(face)}


def _move(args: argparse.Namespace, library: Any) -> dict[str, Any]:
    return _correction("moved", library.move(args.faces, args.to), args)


def _ignore(args: argparse.Namespace, library: Any) -> dict[str, Any]:
    library.ignore(args.faces)
    if not args.json:
        print(f"{len(args.faces)} face(s) will never be grouped")
    return {"ignored": args.faces}


def _settings(args: argparse.Namespace, library: Any) -> dict[str, Any]:
    settings = library.settings.to_dict()
    if not args.json:
        for name, value in settings.items():
            print(f"{name:<12} {value}")
    return {"settings": settings}


_ACTIONS = {
    "add": _add,
    "cluster": _cluster,
    "list": _list,
    "show": _show,
    "name": _name,
    "merge": _merge,
    "split": _split,
    "reject": _reject,
    "move": _move,
    "ignore": _ignore,
    "settings": _settings,
}

COMMANDS = [
    Command(
        "people",
        "group unlabelled faces of a photo library into people: add, cluster, list, show, name, merge, split, "
        "reject, move, ignore, settings",
        _add_people,
        _run_people,
    )
]


# ------------------------------------------------------------------------------------------------ evaluate --clustering
def add_clustering_options(p: argparse.ArgumentParser) -> None:
    """``evaluate``'s options for grouping (``--clustering``, ``--tune-on``)."""
    p.add_argument(
        "--clustering",
        action="append",
        default=[],
        metavar="DIR",
        help="grouping on an identity folder (photos or aligned crops): BCubed and pairwise precision/recall/F, "
        "groups against people, unsorted share, against DBSCAN and HDBSCAN; and the quality score's "
        "error-versus-reject curve; repeatable",
    )
    p.add_argument(
        "--tune-on",
        metavar="DIR",
        help="--clustering: an identity folder of other people on which DBSCAN's and HDBSCAN's parameters are tuned "
        "and grouping's link/join set (at its FAR 1e-2 threshold); without it, the model's calibration and the "
        "baselines' defaults",
    )


def run_clustering_evaluation(args: argparse.Namespace) -> int:
    """``evaluate --clustering``: read (and tune on) the folders, then print or write the report."""
    import json
    from pathlib import Path

    from ..files import atomic_write, written_by
    from ..people.evaluation import (
        Baselines,
        calibrated_settings,
        evaluate_clustering,
        quality_curves,
        read_clustering_folder,
        tune_baselines,
    )
    from ..people.library import default_settings
    from ..pipeline.recognizer import FaceRecognizer

    for folder in [*args.clustering, *([args.tune_on] if args.tune_on else [])]:
        if not Path(folder).is_dir():
            raise GhostFaceNetsError(f"{folder}: not a folder")
    if args.plot:
        from ..evaluate.plots import check_plot_path

        check_plot_path(args.plot)
    recognizer = FaceRecognizer(args.model, flip=args.flip, device=args.device, backend=args.backend)
    if args.tune_on:
        tune = read_clustering_folder(recognizer, args.tune_on)
        settings, baselines = calibrated_settings(tune), tune_baselines(tune)
    else:
        settings, baselines = default_settings(recognizer), Baselines()
    report: dict[str, Any] = {
        **written_by(),
        "model": recognizer.model_id.name,
        "settings": settings.to_dict(),
        "baselines": baselines.to_dict(),
        "sets": {},
    }
    figures = []
    for folder in args.clustering:
        faces = read_clustering_folder(recognizer, folder)
        scores = evaluate_clustering(faces, settings, baselines)
        curves = quality_curves(faces)
        report["sets"][faces.name] = {
            "faces": len(faces.labels),
            "people": len(faces.people),
            "no_face": faces.no_face,
            "unreadable": faces.unreadable,
            "clustering": {method: s.to_dict() for method, s in scores.items()},
            "error_versus_reject": {c.name: c.to_dict() for c in curves},
        }
        if args.plot:
            from ..people.plots import plot_reject_curves

            base = Path(args.plot)
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in faces.name)
            path = base if len(args.clustering) == 1 else base.with_name(f"{base.stem}-{safe}{base.suffix}")
            figures.append(plot_reject_curves(curves, path, f"{faces.name}: error versus reject"))
        if args.json != "-":
            _print_clustering(faces.name, len(faces.labels), len(faces.people), scores, curves)
    if args.json and args.json != "-":
        with atomic_write(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    if args.json == "-":
        print_json(report)
        return 0
    tuned = f"tuned on {baselines.tuned_on}" if baselines.tuned_on else "their defaults (no --tune-on)"
    print(f"\nmodel {recognizer.model_id.name}; grouping link {settings.link:.4f}, join {settings.join:.4f}, "
          f"min_faces {settings.min_faces}, min_quality {settings.min_quality}; DBSCAN and HDBSCAN {tuned}: "
          f"{baselines.to_dict()}")  # fmt: skip
    for figure in figures:
        print(f"wrote figure {figure}")
    if args.json:
        print(f"wrote JSON to {args.json}")
    return 0


def _print_clustering(name: str, faces: int, people: int, scores: dict[str, Any], curves: list[Any]) -> None:
    print(f"\n{name}: {faces} faces of {people} people")
    rows = [
        (method, *(f"{getattr(s, k):.3f}" for k in ("bcubed_precision", "bcubed_recall", "bcubed_f",
         "pairwise_precision", "pairwise_recall", "pairwise_f")), s.groups, f"{100 * s.unsorted:.1f}")
        for method, s in scores.items()
    ]  # fmt: skip
    print_table(rows, ("method", "BCubed P", "R", "F", "pairwise P", "R", "F", "groups", "unsorted %"))
    fractions = curves[0].fractions
    print(f"FNMR % at FMR {curves[0].fmr:g} after rejecting the lowest-quality share of faces:")
    print_table(
        [(c.name, *(f"{100 * v:.1f}" for v in c.fnmr)) for c in curves], ("quality", *(f"{f:.0%}" for f in fractions))
    )
