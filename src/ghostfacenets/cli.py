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


# -------------------------------------------------------------------------------------------------- face pipeline
def _add_detector_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--det-threshold", type=float, default=0.9, metavar="P",
                   help="minimum face detection score (default 0.9)")
    p.add_argument("--det-size", type=int, default=640, metavar="PIXELS",
                   help="photos are shrunk to this longer side for detection (default 640; raise for small faces)")


_DEFAULT_MODEL = "ghostfacenetv1-1.3-1.ms1mv3-arcface"  # = pipeline.recognizer.DEFAULT_MODEL, without importing torch


def _add_recognizer_options(p: argparse.ArgumentParser, thresholds: bool = True) -> None:
    p.add_argument("--model", default=_DEFAULT_MODEL, metavar="NAME_OR_PATH",
                   help=f"pretrained name, .h5, .safetensors or .onnx file (default {_DEFAULT_MODEL}, downloaded once)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: CUDA when available)")
    p.add_argument("--no-flip", action="store_true", help="embed without flip test-time augmentation")
    if thresholds:
        group = p.add_mutually_exclusive_group()
        group.add_argument("--threshold", type=float, metavar="COS", help="decision threshold on cosine similarity")
        group.add_argument("--far", type=float, help="use the model's threshold calibrated at this false-accept rate")
    _add_detector_options(p)


def _recognizer(args: argparse.Namespace) -> Any:
    """The recognizer the options describe, after checking the image paths exist (before any model download)."""
    from .data.images import ImageError
    from .pipeline.recognizer import FaceRecognizer

    paths = [*getattr(args, "images", []), *(getattr(args, k, None) for k in ("image", "image_a", "image_b"))]
    for path in (Path(p) for p in paths if p is not None):
        if not path.is_file():
            raise ImageError(f"{path}: {'not a file' if path.exists() else 'no such file'}")
    return FaceRecognizer(args.model, flip=not args.no_flip, device=args.device,
                          threshold=getattr(args, "threshold", None), far=getattr(args, "far", None),
                          score_threshold=args.det_threshold, max_size=args.det_size)


def _progress(items: Sequence[Any], desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="img", disable=len(items) < 2 or not sys.stderr.isatty(), leave=False)


def _note_several(image: str, faces: int) -> None:
    if faces > 1:
        print(f"note: {image}: {faces} faces, using the largest (--all for every face)", file=sys.stderr)


def _threshold_text(t: Any) -> str:
    detail = {"user": "given", "calibrated": t.note,
              "fallback": "fallback, not calibrated for this model: see `ghostfacenets calibrate`"}[t.source]
    return f"threshold {t.value:.4f}: {detail}"


def _run_detect(args: argparse.Namespace) -> int:
    from .atomic import atomic_write
    from .data.images import load_image
    from .pipeline.align import align_face
    from .pipeline.detect import RetinaFaceDetector

    detector = RetinaFaceDetector(score_threshold=args.det_threshold, max_size=args.det_size)
    records = []
    crop_stems: set[str] = set()  # a/x.jpg and b/x.jpg: crops x_face0.png and x-2_face0.png
    for image in _progress(args.images, "detecting"):
        pixels = load_image(image)
        faces = sorted(detector.detect(pixels), key=lambda f: -f.area)
        if not faces:
            print(f"note: {image}: no face found", file=sys.stderr)
        record = {"image": image, "width": pixels.shape[1], "height": pixels.shape[0],
                  "faces": [f.to_dict() for f in faces]}
        if args.crops:
            import cv2

            stem, repeat = Path(image).stem, 1
            while stem in crop_stems:
                repeat += 1
                stem = f"{Path(image).stem}-{repeat}"
            crop_stems.add(stem)
            record["crops"] = []
            for i, face in enumerate(faces):
                ok, data = cv2.imencode(".png", align_face(pixels, face.landmarks)[..., ::-1])
                if not ok:
                    raise GhostFaceNetsError(f"{image}: OpenCV could not encode face {i}'s crop as PNG")
                path = Path(args.crops) / f"{stem}_face{i}.png"
                with atomic_write(path) as f:
                    f.write(data.tobytes())
                record["crops"].append(str(path))
        records.append(record)
    if args.json:
        _print_json(records)
    else:
        rows = [(r["image"], i, *(f"{v:.1f}" for v in f["box"]), f"{f['score']:.4f}")
                for r in records for i, f in enumerate(r["faces"])]
        _print_table(rows, ("image", "face", "x1", "y1", "x2", "y2", "score"))
    return 0 if all(r["faces"] for r in records) else 1


def _add_detect(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMG", help="image files")
    p.add_argument("--crops", metavar="DIR", help="also save each face's aligned 112x112 crop here as PNG "
                   "(STEM_faceI.png; a repeated file name gets STEM-2, STEM-3, ...)")
    p.add_argument("--json", action="store_true", help="print JSON (boxes, scores, five landmarks)")
    _add_detector_options(p)


def _add_verify(p: argparse.ArgumentParser) -> None:
    p.add_argument("image_a", metavar="A", help="first photo")
    p.add_argument("image_b", metavar="B", help="second photo")
    p.add_argument("--all", action="store_true", help="compare every face of A with every face of B")
    p.add_argument("--json", action="store_true", help="print JSON (similarity, threshold, is_same, faces)")
    _add_recognizer_options(p)


def _run_verify(args: argparse.Namespace) -> int:
    from .pipeline.recognizer import NoFaceError

    recognizer = _recognizer(args)
    if args.all:
        threshold = recognizer.threshold()
        faces_a, faces_b = recognizer.embed_faces(args.image_a), recognizer.embed_faces(args.image_b)
        for image, faces in ((args.image_a, faces_a), (args.image_b, faces_b)):
            if not faces:
                raise NoFaceError(f"{image}: no face found")
        rows = []
        for i, fa in enumerate(faces_a):
            for j, fb in enumerate(faces_b):
                similarity = float(fa.embedding @ fb.embedding)
                rows.append({"face_a": i, "face_b": j, "similarity": round(similarity, 6),
                             "is_same": similarity > threshold.value})
        if args.json:
            _print_json({"pairs": rows, "faces_a": [f.face.to_dict() for f in faces_a],
                         "faces_b": [f.face.to_dict() for f in faces_b], **threshold.to_dict()})
        else:
            _print_table([(r["face_a"], r["face_b"], f"{r['similarity']:.4f}", "yes" if r["is_same"] else "no")
                          for r in rows], ("face in A", "face in B", "similarity", "same person"))
            print(_threshold_text(threshold))
        return 0
    result = recognizer.verify(args.image_a, args.image_b)
    _note_several(args.image_a, result.faces_in_a)
    _note_several(args.image_b, result.faces_in_b)
    if args.json:
        _print_json(result.to_dict())
    else:
        relation = ">" if result.is_same else "<="
        print(f"same person: {'yes' if result.is_same else 'no'} (similarity {result.similarity:.4f} {relation} "
              f"{_threshold_text(result.threshold)})")
    return 0


def _add_embed(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMG", help="photos (or aligned 112x112 crops with --aligned)")
    p.add_argument("--out", required=True, metavar="X.npy", help="write the embeddings (float32, L2-normalised)")
    p.add_argument("--all", action="store_true", help="one row per face instead of the largest face per image")
    p.add_argument("--aligned", action="store_true", help="inputs are 112x112 crops already aligned (no detection)")
    p.add_argument("--json", action="store_true", help="print JSON: which image and face each row holds")
    _add_recognizer_options(p, thresholds=False)


def _run_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from .atomic import atomic_write
    from .pipeline.recognizer import NoFaceError

    recognizer = _recognizer(args)
    rows, vectors = [], []
    for image in _progress(args.images, "embedding"):
        if args.aligned:
            vectors.append(recognizer.embed(image, aligned=True))
            rows.append({"row": len(rows), "image": image, "face": None, "box": None, "faces_in_image": 1})
            continue
        faces = recognizer.embed_faces(image)
        if not faces:
            raise NoFaceError(f"{image}: no face found")
        if not args.all:
            _note_several(image, len(faces))
        for i, record in enumerate(faces if args.all else faces[:1]):
            vectors.append(record.embedding)
            rows.append({"row": len(rows), "image": image, "face": i, "box": record.face.to_dict()["box"],
                         "faces_in_image": len(faces)})
    matrix = np.stack(vectors).astype(np.float32)
    with atomic_write(args.out) as f:
        np.save(f, matrix)
    if args.json:
        _print_json({"out": args.out, "shape": list(matrix.shape), "model": recognizer.model_id.name,
                     "flip": recognizer.flip, "rows": rows})
    else:
        print(f"wrote {matrix.shape[0]} embeddings ({matrix.shape[1]}-d, L2-normalised) to {args.out}")
        if args.all:
            _print_table([(r["row"], r["image"], r["face"]) for r in rows], ("row", "image", "face"))
    return 0


def _add_enroll(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", required=True, metavar="G.sqlite", help="gallery file (created if absent)")
    p.add_argument("name", metavar="NAME", help="identity name")
    p.add_argument("images", nargs="+", metavar="IMG", help="photos of this person (largest face of each)")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_recognizer_options(p, thresholds=False)


def _run_enroll(args: argparse.Namespace) -> int:
    from .pipeline.gallery import Gallery

    recognizer = _recognizer(args)
    added = recognizer.enroll(args.db, args.name, args.images)  # embeds first: a failed enrolment creates no file
    name = args.name.strip()
    with Gallery(args.db, create=False) as gallery:
        total = next((r.embeddings for r in gallery.identities() if r.name == name), added)
    skipped = len(args.images) - added
    if args.json:
        _print_json({"name": name, "added": added, "already_enrolled": skipped, "embeddings": total,
                     "db": args.db})
    else:
        extra = f", {skipped} already there" if skipped else ""
        print(f"enrolled {added} face(s) of {name} into {args.db}{extra}; {total} in all")
    return 0


def _add_identify(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", required=True, metavar="G.sqlite", help="gallery file")
    p.add_argument("image", metavar="IMG", help="photo")
    p.add_argument("-k", type=int, default=5, help="how many candidates to list (default 5)")
    p.add_argument("--all", action="store_true", help="identify every face in the photo")
    p.add_argument("--faiss", action="store_true", help="approximate search with a faiss HNSW index (large galleries)")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_recognizer_options(p)


def _run_identify(args: argparse.Namespace) -> int:
    from .pipeline.gallery import Gallery
    from .pipeline.recognizer import NoFaceError

    recognizer = _recognizer(args)
    backend = "faiss" if args.faiss else "exact"
    with Gallery(args.db, create=False) as gallery:
        if args.all:
            results = recognizer.identify_faces(args.image, gallery, args.k, backend=backend)
            if not results:
                raise NoFaceError(f"{args.image}: no face found")
        else:
            results = [recognizer.identify(args.image, gallery, args.k, backend=backend)]
            _note_several(args.image, results[0].faces_in_image)
    if args.json:
        records = [{"image": args.image, "face_index": i, **r.to_dict()} for i, r in enumerate(results)]
        _print_json(records if args.all else records[0])
        return 0
    for i, result in enumerate(results):
        label = f"{args.image} face {i}" if args.all else args.image
        best = result.matches[0] if result.matches else None
        if result.identity:
            print(f"{label}: {result.identity} (similarity {best.similarity:.4f} > threshold "
                  f"{result.threshold.value:.4f})")
        else:
            closest = f"; closest {best.name} at {best.similarity:.4f}" if best else "; the gallery is empty"
            print(f"{label}: unknown (no identity above threshold {result.threshold.value:.4f}{closest})")
        _print_table([(m.name, f"{m.similarity:.4f}", "yes" if m.is_match else "no") for m in result.matches],
                     ("candidate", "similarity", "match"))
    print(_threshold_text(results[0].threshold))
    return 0


def _add_gallery(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", required=True, metavar="G.sqlite", help="gallery file")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=_Parser)
    listing = actions.add_parser("list", help="identities and their number of embeddings")
    listing.add_argument("--json", action="store_true", help="print JSON")
    remove = actions.add_parser("remove", help="delete an identity and its embeddings")
    remove.add_argument("name", metavar="NAME")


def _run_gallery(args: argparse.Namespace) -> int:
    from .pipeline.gallery import Gallery

    with Gallery(args.db, create=False) as gallery:
        if args.action == "remove":
            count = gallery.remove(args.name)
            print(f"removed {args.name.strip()} ({count} embeddings) from {args.db}")
            return 0
        identities, model = gallery.identities(), gallery.model
    if args.json:
        _print_json({"model": model.__dict__ if model else None,
                     "identities": [{"name": r.name, "embeddings": r.embeddings, "created": r.created}
                                    for r in identities]})
    else:
        print(f"{args.db}: {len(identities)} identities, model {model.describe() if model else '(none yet)'}")
        if identities:
            _print_table([(r.name, r.embeddings, r.created) for r in identities], ("name", "embeddings", "created"))
    return 0


def _add_calibrate(p: argparse.ArgumentParser) -> None:
    p.add_argument("pairs", metavar="PAIRS",
                   help="labelled pairs: a text/CSV file of 'image_a image_b label' lines, or a verification .bin")
    p.add_argument("--far", type=float, action="append", metavar="FAR", dest="targets",
                   help="target false-accept rate (repeatable; default 1e-2 and 1e-3)")
    p.add_argument("--root", metavar="DIR", help="folder the pair paths are relative to (default: the file's)")
    p.add_argument("--set-name", metavar="NAME", help="name recorded with the thresholds (default: file name)")
    p.add_argument("--skip-unusable", action="store_true", help="leave out pairs whose photos show no face")
    p.add_argument("--write", metavar="OUT.safetensors", help="save the model with these thresholds in its metadata")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_recognizer_options(p, thresholds=False)


def _run_calibrate(args: argparse.Namespace) -> int:
    from .pipeline.calibrate import calibrate, write_thresholds

    recognizer = _recognizer(args)
    report = calibrate(recognizer, args.pairs, args.targets or (1e-2, 1e-3), set_name=args.set_name, root=args.root,
                       skip_unusable=args.skip_unusable, progress=sys.stderr.isatty())
    if args.write:
        path, count = write_thresholds(args.model, report, args.write)
        report["written"] = {"path": str(path), "thresholds": count}
    if args.json:
        _print_json(report)
        return 0
    print(f"{report['set']}: {report['pairs']} pairs ({report['same_pairs']} same, {report['different_pairs']} "
          f"different), model {report['model']}, flip {'on' if report['flip'] else 'off'}")
    _print_table([(f"{t['far']:g}", f"{t['threshold']:.4f}", f"{t['frr']:.4f}",
                   "yes" if t["estimable"] else f"no (needs >= {round(1 / t['far'])} different pairs)")
                  for t in report["thresholds"]], ("target FAR", "threshold", "FRR", "measurable"))
    for problem in report["unusable_images"]:
        print(f"skipped: {problem}", file=sys.stderr)
    if args.write:
        print(f"wrote {report['written']['thresholds']} threshold(s) into {report['written']['path']}")
    return 0


# -------------------------------------------------------------------------------------------------------- evaluate
def _add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="M",
                   help="pretrained name, Keras .h5, .safetensors or .onnx file")
    p.add_argument("--bin", action="append", default=[], metavar="SET.bin",
                   help="insightface verification .bin (LFW, CFP-FP, AgeDB-30, ...); repeatable")
    p.add_argument("--folder", action="append", default=[], metavar="DIR",
                   help="identity folder of aligned 112x112 crops, one sub-folder per person; repeatable")
    p.add_argument("--pairs", type=int, metavar="N",
                   help="identity folders: sample N pairs (half same person) instead of using every pair")
    p.add_argument("--seed", type=int, default=0, help="identity folders: seed of the pair sampling and order (0)")
    p.add_argument("--ijb", action="append", default=[], metavar="DIR",
                   help="IJB-B or IJB-C folder in insightface's layout (meta/, loose_crop/); repeatable")
    p.add_argument("--ijb-detector-score", action=argparse.BooleanOptionalAction, default=True,
                   help="IJB: weight each face by its detector score (default: on, as insightface)")
    p.add_argument("--ijb-normalize", action="store_true",
                   help="IJB: L2-normalise each face's embedding before pooling (default: off, as insightface)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True,
                   help="flip test-time augmentation: emb(x) + emb(mirror x), the paper's setting (default: on)")
    p.add_argument("--json", metavar="OUT", help="write the results as JSON to OUT ('-': print JSON, no table)")
    p.add_argument("--plot", metavar="ROC.png", help="write one ROC figure with every --bin and --folder set "
                   "(format from the suffix: .png, .svg, .pdf, ...)")
    p.add_argument("--batch-size", type=int, default=128, help="images per forward pass (128)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _percent(value: Any, std: Any = None) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.3f}" + (f" ± {100 * std:.3f}" if std is not None else "")


def _unique_key(path: Path, name: str, taken: dict[str, Any]) -> str:
    return name if name not in taken else f"{path.resolve().parent.name}/{name}"


def _run_evaluate(args: argparse.Namespace) -> int:
    from .atomic import atomic_write
    from .evaluate.embed import load_embedder
    from .evaluate.ijb import evaluate_ijb
    from .evaluate.pairs import evaluate_folder
    from .evaluate.plots import check_plot_path, plot_roc
    from .evaluate.verification import evaluate_bin_detailed

    if not (args.bin or args.folder or args.ijb):
        raise GhostFaceNetsError("nothing to evaluate: give at least one --bin, --folder or --ijb")
    for path in args.bin:
        if not Path(path).is_file():
            raise GhostFaceNetsError(f"{path}: no such file")
    for path in [*args.folder, *args.ijb]:
        if not Path(path).is_dir():
            raise GhostFaceNetsError(f"{path}: not a folder")
    if args.batch_size < 1:
        raise GhostFaceNetsError(f"--batch-size must be positive, got {args.batch_size}")
    if args.plot:  # checked before any work: a wrong figure name must not cost a whole evaluation
        if not (args.bin or args.folder):
            raise GhostFaceNetsError("--plot draws the ROC curves of --bin and --folder sets, not of IJB; add a "
                                     "--bin or --folder, or leave out --plot")
        check_plot_path(args.plot)
    progress = not args.quiet and sys.stderr.isatty()
    embedder = load_embedder(args.model, args.device)
    results: dict[str, Any] = {}
    sets = []
    for path in args.bin:
        sets.append(evaluate_bin_detailed(embedder, path, args.flip, args.batch_size, progress=progress))
        results[_unique_key(Path(path), sets[-1].name, results)] = sets[-1].metrics
    for path in args.folder:
        sets.append(evaluate_folder(embedder, path, args.pairs, args.seed, args.flip, args.batch_size,
                                    progress=progress))
        results[_unique_key(Path(path), sets[-1].name, results)] = sets[-1].metrics
    ijb = {}
    for path in args.ijb:
        report = evaluate_ijb(embedder, path, args.flip, args.ijb_detector_score, args.ijb_normalize,
                              args.batch_size, progress=progress)
        key = _unique_key(Path(path), report["target"], results)
        results[key] = ijb[key] = report
    if args.json and args.json != "-":
        with atomic_write(args.json, "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")
    if args.plot:
        plot_roc(sets, args.plot, title=f"ROC of {embedder.name}")
    if args.json == "-":
        _print_json(results)
        return 0
    if sets:
        rows = [(name, r["pairs"], _percent(r["accuracy_10fold_mean"], r["accuracy_10fold_std"]),
                 _percent(r["best_threshold_accuracy"]), f"{r['best_threshold']:.4f}",
                 "-" if r["auc"] is None else f"{r['auc']:.5f}", _percent(r["eer"]),
                 _percent(r["tar_at_far"]["1e-3"])) for name, r in results.items() if name not in ijb]
        _print_table(rows, ("set", "pairs", "10-fold acc %", "best-thr acc %", "cos thr", "AUC", "EER %",
                            "TAR@FAR1e-3 %"))
    for name, r in ijb.items():
        v, i = r["verification"], r["identification"]
        print(f"\n{name}: {r['faces']} faces, {r['templates']} templates, {v['pairs']} template pairs")
        _print_table([[f"TAR@FAR={k}"] + [_percent(v["tar_at_far"][k])] for k in v["tar_at_far"]], ("1:1", "%"))
        if i is not None:
            rows = [(f"rank-{k}", _percent(i[f"rank{k}"])) for k in (1, 5, 10)]
            rows += [(f"TPIR@FPIR={k}", _percent(t)) for k, t in i["tpir_at_fpir"].items()]
            _print_table(rows, (f"1:N ({i['probes']} probes)", "%"))
    print(f"\nmodel {embedder.name}, flip {'on' if args.flip else 'off'}; 10-fold as insightface (mean ± std), "
          "best-thr = best single threshold on the whole set (optimistic, as the official evals.py)")
    for out, what in ((args.json, "JSON"), (args.plot, "ROC figure")):
        if out:
            print(f"wrote {what} to {out}")
    return 0


# -------------------------------------------------------------------------------------------------------- make-bin
def _add_make_bin(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", metavar="FOLDER", help="identity folder: one sub-folder of aligned 112x112 crops per person")
    p.add_argument("output", metavar="OUT.bin", help="verification .bin to write (insightface layout)")
    p.add_argument("--pairs", type=int, metavar="N", help="sample N pairs (half same person) instead of every pair")
    p.add_argument("--seed", type=int, default=0, help="seed of the pair sampling and order (0)")
    p.add_argument("--size", type=int, default=112, help="crop size every image must have (112)")


def _run_make_bin(args: argparse.Namespace) -> int:
    from .evaluate.pairs import make_bin

    path, pairs, same = make_bin(args.folder, args.output, args.pairs, args.seed, args.size)
    print(f"wrote {path}: {pairs} pairs ({same} same person, {pairs - same} different)")
    return 0


# ----------------------------------------------------------------------------------------------------------- train
def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", metavar="CONFIG.yaml", help="training config (configs/*.yaml); defaults if omitted")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted overrides, values in YAML: data.train=DIR 'data.val=[a.bin,b.bin]' output=runs/x "
                   "train.epochs=2 train.max_steps=100 train.resume=none")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON at the end")
    p.epilog = ("Several GPUs or nodes: torchrun --nproc-per-node=N -m ghostfacenets.cli train -c CONFIG ... "
                "(see docs/training.md). Re-running the same command resumes from the newest checkpoint; a fresh "
                "start (train.resume=none) in an output folder that already holds a run is refused.")


def _run_train(args: argparse.Namespace) -> int:
    from .train.config import load_config

    config = load_config(args.config, args.overrides)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    from .train.distributed import init_distributed, shutdown
    from .train.loop import train

    context = init_distributed(config.train.device)
    try:
        result = train(config, context)
    finally:
        shutdown(context)
    if not context.is_main:
        return 0
    summary = {"output": str(result.output), "final": str(result.final), "steps": result.steps,
               "epochs": round(result.epochs, 4), "best": str(result.best) if result.best else None,
               "best_value": result.best_value, "validation": result.validation, "damaged_images": len(result.damaged)}
    if args.json:
        _print_json(summary)
        return 0
    print(f"trained {result.steps} steps ({result.epochs:.2f} epochs); model: {result.final}")
    def number(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    for name, metrics in result.validation.items():
        print(f"  {name}: 10-fold accuracy {number(metrics['accuracy_10fold_mean'])} "
              f"+- {number(metrics['accuracy_10fold_std'])}, best-threshold "
              f"{number(metrics['best_threshold_accuracy'])}, flip {'on' if metrics['flip'] else 'off'} "
              f"({metrics['pairs']} pairs)")
    if result.best:
        print(f"  best: {result.best} ({config.train.best_key} {number(result.best_value)})")
    if result.damaged:
        print(f"  {len(result.damaged)} damaged image(s) skipped: see {result.output / 'damaged_images.json'}")
    return 0


# --------------------------------------------------------------------------------------------------------- dataset
def _add_dataset(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="dataset_action", metavar="ACTION", parser_class=type(p))
    inspect = actions.add_parser("inspect", help="decode every image of an identity folder or RecordIO set",
                                 description="Decode every image of an identity folder or insightface RecordIO set "
                                 "(folder with train.rec/train.idx, or a .rec file) and report images, identities "
                                 "and damaged images or records. Exit status 1 when something is damaged.")
    inspect.add_argument("path", metavar="PATH", help="identity folder, RecordIO folder or .rec file")
    inspect.add_argument("--workers", type=int, default=4, help="decoding threads (4)")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    build = actions.add_parser("build-rec", help="write an identity folder as insightface train.rec/train.idx",
                               description="Write an identity folder as insightface RecordIO (train.rec, train.idx, "
                               "property) in the layout MXNet writes. 112x112 JPEG files are stored as they are; "
                               "other images are fitted to --size and encoded as JPEG.")
    build.add_argument("folder", metavar="FOLDER", help="identity folder (one sub-folder per person)")
    build.add_argument("output", metavar="OUT_DIR", help="folder to write train.rec, train.idx and property into")
    build.add_argument("--identities", nargs="+", metavar="PATTERN", help="only these sub-folders (shell patterns)")
    build.add_argument("--size", type=int, default=112, help="image size (112)")
    build.add_argument("--resize", choices=("pad", "resize"), default="pad",
                       help="images of another size: pad (keep aspect, black borders; default) or resize (stretch)")
    build.add_argument("--quality", type=int, default=95, help="JPEG quality of re-encoded images (95)")
    build.add_argument("--workers", type=int, default=4, help="encoding threads (4)")
    build.add_argument("--json", action="store_true", help="print JSON")


def _run_dataset(args: argparse.Namespace) -> int:
    from .data.datasets import build_records, inspect_dataset

    if args.dataset_action == "inspect":
        if not Path(args.path).exists():
            raise GhostFaceNetsError(f"{args.path}: no such file or folder")
        report = inspect_dataset(args.path, args.workers, progress=sys.stderr.isatty())
        if args.json:
            _print_json(report)
        else:
            print(f"{report['path']} ({report['format']}): {report['images']} images, {report['identities']} "
                  f"identities, {len(report['corrupt'])} corrupt")
            if report.get("declared_identities") not in (None, report["identities"]):
                print(f"  the set declares {report['declared_identities']} identities")
            for where in report["corrupt"]:
                record = "record " if isinstance(where, int) else ""
                print(f"  corrupt: {record}{where}: {report['corrupt_reasons'][str(where)]}")
        return 1 if report["corrupt"] else 0
    if args.dataset_action == "build-rec":
        report = build_records(args.folder, args.output, args.identities, args.size, args.resize, args.quality,
                               args.workers, progress=sys.stderr.isatty())
        if args.json:
            _print_json(report)
        else:
            print(f"wrote {args.output}/train.rec, train.idx, property: {report['images']} images, "
                  f"{report['identities']} identities, {len(report['skipped'])} damaged image(s) skipped")
            for problem in report["skipped"]:
                print(f"  skipped: {problem}")
        return 0
    raise GhostFaceNetsError("choose an action: ghostfacenets dataset inspect PATH | build-rec FOLDER OUT_DIR")


# ---------------------------------------------------------------------------------------------------------- export
def _add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="pretrained name, .h5 or .safetensors file")
    p.add_argument("--onnx", required=True, metavar="OUT.onnx", help="float32 ONNX file to write (dynamic batch)")
    p.add_argument("--no-simplify", action="store_true", help="keep torch's graph (no onnxslim)")
    p.add_argument("--fp16", action="store_true", help="also write OUT.fp16.onnx (float16 inside, float32 in and out)")
    p.add_argument("--int8", action="store_true", help="also write OUT.int8.onnx (static int8, needs --calib)")
    p.add_argument("--calib", metavar="DIR_OR_BIN", help="aligned face crops for int8 calibration: a folder of images "
                   "(searched recursively; non-112x112 crops are padded) or a verification .bin")
    p.add_argument("--calib-count", type=int, default=200, metavar="N", help="calibration faces, spread over the set "
                   "(200)")
    p.add_argument("--calib-method", choices=("minmax", "percentile", "entropy"), default="percentile",
                   help="activation range calibration (percentile)")
    p.add_argument("--keep-float-blocks", type=int, default=0, metavar="K",
                   help="int8: keep the stem and the first K of 16 blocks in float32 (more accurate, slower; 0)")
    p.add_argument("--bin", action="append", default=[], metavar="SET.bin",
                   help="verification set on which to report the accuracy change (repeatable)")
    p.add_argument("--faces", metavar="DIR_OR_BIN", help="faces for the cosine agreement with float32 (default: the "
                   "--bin images, else the calibration faces)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _run_export(args: argparse.Namespace) -> int:
    from .convert.onnx import (
        compare_onnx,
        convert_float16,
        export_onnx,
        load_face_crops,
        quantize_int8,
        read_onnx_metadata,
    )
    from .model_io import load_model

    if args.int8 and not args.calib:
        raise GhostFaceNetsError("--int8 needs --calib DIR_OR_BIN (aligned face crops for calibration)")
    if (args.bin or args.faces) and not (args.int8 or args.fp16):
        raise GhostFaceNetsError("--bin and --faces measure what --int8 or --fp16 change; add one of them")
    for path in [args.calib, args.faces, *args.bin]:
        if path and not Path(path).exists():
            raise GhostFaceNetsError(f"{path}: no such file or folder")
    out = Path(args.onnx)
    stem = out.name.removesuffix(".onnx")
    report: dict[str, Any] = {"float32": {"path": str(export_onnx(load_model(args.model), out, not args.no_simplify))}}
    meta = read_onnx_metadata(out)
    report["architecture"] = meta["architecture"]
    variants = []
    if args.fp16:
        variants.append(("float16", convert_float16(out, out.with_name(f"{stem}.fp16.onnx"))))
    if args.int8:
        calibration = load_face_crops(args.calib, args.calib_count)
        print(f"calibrating int8 on {len(calibration)} faces from {args.calib} ({args.calib_method})", file=sys.stderr)
        variants.append(("int8", quantize_int8(out, out.with_name(f"{stem}.int8.onnx"), calibration,
                                               args.calib_method, args.keep_float_blocks)))
    if variants:
        faces_source = args.faces or (args.bin[0] if args.bin else args.calib)
        faces = load_face_crops(faces_source, 1000) if faces_source else None
        for precision, path in variants:
            entry: dict[str, Any] = {"path": str(path)}
            if faces is not None:
                entry["versus_float32"] = compare_onnx(out, path, faces, args.bin, progress=sys.stderr.isatty())
                entry["versus_float32"]["faces_from"] = str(faces_source)
            report[precision] = entry
    if args.json:
        _print_json(report)
        return 0
    shape = "(" + ", ".join(str(d) for d in meta["onnx"]["input"]["shape"]) + ")"
    for precision in ("float32", "float16", "int8"):
        if precision not in report:
            continue
        path = Path(report[precision]["path"])
        print(f"wrote {path} ({precision}, {path.stat().st_size / 1e6:.1f} MB): {report['architecture']}, "
              f"input 'input' {shape}, output 'embedding'")
        versus = report[precision].get("versus_float32")
        if not versus:
            continue
        a = versus["agreement"]
        print(f"  {precision} vs float32: cosine mean {a['cosine_mean']:.5f}, 1st percentile {a['cosine_p01']:.5f}, "
              f"min {a['cosine_min']:.5f} over {a['faces']} faces from {versus['faces_from']}")
        for v in versus["verification"]:
            for key, label in (("best_threshold_accuracy", "best-threshold"), ("accuracy_10fold_mean", "10-fold")):
                if v["change_points"][key] is not None:
                    print(f"  {v['set']} ({v['pairs']} pairs) {label} accuracy: {100 * v['reference'][key]:.2f} % -> "
                          f"{100 * v['candidate'][key]:.2f} % ({v['change_points'][key]:+.2f} points)")
        t = versus["batch1_latency_ms"]
        print(f"  batch-1 latency on this CPU: float32 {t['reference']:.2f} ms, {precision} {t['candidate']:.2f} ms "
              f"({t['speedup']:.2f}x)")
    return 0


Command = tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
COMMANDS: list[Command] = [
    ("models", "list the registered architectures or pretrained weights", _add_models, _run_models),
    ("info", "parameters, FLOPs and metadata of a model", _add_info, _run_info),
    ("convert", "convert an official Keras .h5 into the package's own format", _add_convert, _run_convert),
    ("detect", "find faces (boxes, scores, five landmarks) in photos", _add_detect, _run_detect),
    ("verify", "are the faces in two photos the same person?", _add_verify, _run_verify),
    ("embed", "face embeddings of photos into a .npy file", _add_embed, _run_embed),
    ("enroll", "add photos of a person to a gallery file", _add_enroll, _run_enroll),
    ("identify", "who is the person in a photo? (search a gallery)", _add_identify, _run_identify),
    ("gallery", "list or remove the identities of a gallery file", _add_gallery, _run_gallery),
    ("calibrate", "decision thresholds at target false-accept rates from labelled pairs", _add_calibrate,
     _run_calibrate),
    ("evaluate", "verification accuracy on .bin sets, identity folders and IJB-B/C", _add_evaluate, _run_evaluate),
    ("make-bin", "write a verification .bin of pairs from an identity folder", _add_make_bin, _run_make_bin),
    ("export", "export ONNX (float32, optionally float16 and calibrated int8) and report what int8 changes",
     _add_export, _run_export),
    ("train", "train a GhostFaceNet from a YAML config (one process, or many with torchrun)", _add_train, _run_train),
    ("dataset", "inspect an identity folder or RecordIO set, or build train.rec from a folder", _add_dataset,
     _run_dataset),
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
