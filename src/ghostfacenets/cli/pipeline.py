"""Face pipeline commands: ``detect``, ``verify``, ``embed``, ``calibrate`` (the gallery ones are in ``gallery``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import GhostFaceNetsError
from .common import Command, add_runtime_options, print_json, print_table
from .liveness import add_calibrate_options, add_liveness_options, liveness_setting, liveness_text


def _add_detector_options(p: argparse.ArgumentParser, fast_path: bool = True) -> None:
    p.add_argument(
        "--det-threshold", type=float, default=0.9, metavar="P", help="minimum face detection score (default 0.9)"
    )
    p.add_argument(
        "--det-size",
        type=int,
        default=640,
        metavar="PIXELS",
        help="photos are shrunk to this longer side for detection (default 640; raise for small faces)",
    )
    if fast_path:
        p.add_argument(
            "--det-fast-size",
            type=int,
            default=0,
            metavar="PIXELS",
            help="where one face per photo is used, detect at this size first and at --det-size only when no face "
            "of 48 pixels or more is found there, e.g. 320 (default 0: always --det-size)",
        )
    p.add_argument(
        "--det-backend",
        choices=("auto", "executorch", "onnxruntime"),
        default="auto",
        help="how the detector runs (default auto: onnxruntime, measured the faster on CPUs)",
    )


_DEFAULT_MODEL = "ghostfacenetv1-1.3-1.ms1mv3-arcface"  # = pipeline.recognizer.DEFAULT_MODEL, without importing torch


def _add_recognizer_options(p: argparse.ArgumentParser, thresholds: bool = True) -> None:
    p.add_argument(
        "--model",
        default=_DEFAULT_MODEL,
        metavar="NAME_OR_PATH",
        help=f"pretrained name, .h5, .safetensors, .onnx, .pte or .tflite file (default {_DEFAULT_MODEL}, downloaded "
        "once)",
    )
    add_runtime_options(p)
    p.add_argument("--no-flip", action="store_true", help="embed without flip test-time augmentation")
    if thresholds:
        group = p.add_mutually_exclusive_group()
        group.add_argument("--threshold", type=float, metavar="COS", help="decision threshold on cosine similarity")
        group.add_argument("--far", type=float, help="use the model's threshold calibrated at this false-accept rate")
    _add_detector_options(p)


def _recognizer(args: argparse.Namespace) -> Any:
    """The recognizer the options describe, after checking the image paths exist (before any model download)."""
    from ..data.images import ImageError
    from ..pipeline.recognizer import FaceRecognizer

    paths = [*getattr(args, "images", []), *(getattr(args, k, None) for k in ("image", "image_a", "image_b"))]
    for path in (Path(p) for p in paths if p is not None):
        if not path.is_file():
            raise ImageError(f"{path}: {'not a file' if path.exists() else 'no such file'}")
    liveness = liveness_setting(args)
    return FaceRecognizer(
        args.model,
        liveness=liveness,
        flip=not args.no_flip,
        device=args.device,
        backend=args.backend,
        threshold=getattr(args, "threshold", None),
        far=getattr(args, "far", None),
        score_threshold=args.det_threshold,
        max_size=args.det_size,
        fast_size=args.det_fast_size or None,
        detector_backend=args.det_backend,
    )


def _progress(items: Sequence[Any], desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="img", disable=len(items) < 2 or not sys.stderr.isatty(), leave=False)


def _note_several(image: str, faces: int) -> None:
    if faces > 1:
        print(f"note: {image}: {faces} faces, using the largest (--all for every face)", file=sys.stderr)


def _threshold_text(t: Any) -> str:
    detail = {
        "user": "given",
        "calibrated": t.note,
        "fallback": "fallback, not calibrated for this model: see `ghostfacenets calibrate`",
    }[t.source]
    return f"threshold {t.value:.4f}: {detail}"


def _run_detect(args: argparse.Namespace) -> int:
    from ..data.align import align_face
    from ..data.images import encode_png, load_image
    from ..files import atomic_write
    from ..pipeline.detect import RetinaFaceDetector

    detector = RetinaFaceDetector(score_threshold=args.det_threshold, max_size=args.det_size, backend=args.det_backend)
    records = []
    crop_stems: set[str] = set()  # a/x.jpg and b/x.jpg: crops x_face0.png and x-2_face0.png
    for image in _progress(args.images, "detecting"):
        pixels = load_image(image)
        faces = sorted(detector.detect(pixels), key=lambda f: -f.area)
        if not faces:
            print(f"note: {image}: no face found", file=sys.stderr)
        record = {
            "image": image,
            "width": pixels.shape[1],
            "height": pixels.shape[0],
            "faces": [f.to_dict() for f in faces],
        }
        if args.crops:
            stem, repeat = Path(image).stem, 1
            while stem in crop_stems:
                repeat += 1
                stem = f"{Path(image).stem}-{repeat}"
            crop_stems.add(stem)
            record["crops"] = []
            for i, face in enumerate(faces):
                data = encode_png(align_face(pixels, face.landmarks), f"{image} face {i}")
                path = Path(args.crops) / f"{stem}_face{i}.png"
                with atomic_write(path) as f:
                    f.write(data)
                record["crops"].append(str(path))
        records.append(record)
    if args.json:
        print_json(records)
    else:
        rows = [
            (r["image"], i, *(f"{v:.1f}" for v in f["box"]), f"{f['score']:.4f}")
            for r in records
            for i, f in enumerate(r["faces"])
        ]
        print_table(rows, ("image", "face", "x1", "y1", "x2", "y2", "score"))
    return 0 if all(r["faces"] for r in records) else 1


def _add_detect(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMG", help="image files")
    p.add_argument(
        "--crops",
        metavar="DIR",
        help="also save each face's aligned 112x112 crop here as PNG "
        "(STEM_faceI.png; a repeated file name gets STEM-2, STEM-3, ...)",
    )
    p.add_argument("--json", action="store_true", help="print JSON (boxes, scores, five landmarks)")
    _add_detector_options(p, fast_path=False)


def _add_verify(p: argparse.ArgumentParser) -> None:
    p.add_argument("image_a", metavar="A", help="first photo")
    p.add_argument("image_b", metavar="B", help="second photo")
    p.add_argument("--all", action="store_true", help="compare every face of A with every face of B")
    p.add_argument("--json", action="store_true", help="print JSON (similarity, threshold, is_same, faces)")
    _add_recognizer_options(p)
    add_liveness_options(p)


def _face_record(record: Any) -> dict[str, Any]:
    """A face of ``verify --all --json``: its detection, and its liveness when checked."""
    extra = {"liveness": record.liveness.to_dict()} if record.liveness is not None else {}
    return {**record.face.to_dict(), **extra}


def _run_verify(args: argparse.Namespace) -> int:
    from ..pipeline.results import NoFaceError

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
                rows.append(
                    {
                        "face_a": i,
                        "face_b": j,
                        "similarity": round(similarity, 6),
                        "is_same": similarity > threshold.value,
                    }
                )
        if args.json:
            print_json(
                {
                    "pairs": rows,
                    "faces_a": [_face_record(f) for f in faces_a],
                    "faces_b": [_face_record(f) for f in faces_b],
                    **threshold.to_dict(),
                }
            )
        else:
            print_table(
                [(r["face_a"], r["face_b"], f"{r['similarity']:.4f}", "yes" if r["is_same"] else "no") for r in rows],
                ("face in A", "face in B", "similarity", "same person"),
            )
            print(_threshold_text(threshold))
        return 0
    result = recognizer.verify(args.image_a, args.image_b)
    _note_several(args.image_a, result.faces_in_a)
    _note_several(args.image_b, result.faces_in_b)
    if args.json:
        print_json(result.to_dict())
    else:
        relation = ">" if result.is_same else "<="
        print(
            f"same person: {'yes' if result.is_same else 'no'} (similarity {result.similarity:.4f} {relation} "
            f"{_threshold_text(result.threshold)})"
        )
        for image, liveness in ((args.image_a, result.liveness_a), (args.image_b, result.liveness_b)):
            if liveness is not None:
                print(liveness_text(image, liveness))
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

    from ..files import atomic_write
    from ..pipeline.results import NoFaceError

    recognizer = _recognizer(args)
    rows: list[dict[str, Any]] = []
    vectors = []
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
            rows.append(
                {
                    "row": len(rows),
                    "image": image,
                    "face": i,
                    "box": record.face.to_dict()["box"],
                    "faces_in_image": len(faces),
                }
            )
    matrix = np.stack(vectors).astype(np.float32)
    with atomic_write(args.out) as f:
        np.save(f, matrix)
    if args.json:
        print_json(
            {
                "out": args.out,
                "shape": list(matrix.shape),
                "model": recognizer.model_id.name,
                "flip": recognizer.flip,
                "rows": rows,
            }
        )
    else:
        print(f"wrote {matrix.shape[0]} embeddings ({matrix.shape[1]}-d, L2-normalised) to {args.out}")
        if args.all:
            print_table([(r["row"], r["image"], r["face"]) for r in rows], ("row", "image", "face"))
    return 0


def _add_calibrate(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "pairs",
        nargs="?",
        metavar="PAIRS",
        help="labelled pairs: a text/CSV file of 'image_a image_b label' lines, or a verification .bin",
    )
    p.add_argument(
        "--far",
        type=float,
        action="append",
        metavar="FAR",
        dest="targets",
        help="target false-accept rate (repeatable; default 1e-2 and 1e-3)",
    )
    p.add_argument("--root", metavar="DIR", help="folder the pair paths are relative to (default: the file's)")
    p.add_argument("--set-name", metavar="NAME", help="name recorded with the thresholds (default: file name)")
    p.add_argument("--skip-unusable", action="store_true", help="leave out pairs whose photos show no face")
    p.add_argument("--write", metavar="OUT.safetensors", help="save the model with these thresholds in its metadata")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_recognizer_options(p, thresholds=False)
    add_calibrate_options(p)


def _run_calibrate(args: argparse.Namespace) -> int:
    from ..pipeline.calibrate import calibrate, write_thresholds

    if args.liveness:
        if args.pairs:
            raise GhostFaceNetsError("give either PAIRS (face thresholds) or --liveness DIR_OR_CSV, not both")
        from .liveness import run_liveness_calibrate

        return run_liveness_calibrate(args)
    if not args.pairs:
        raise GhostFaceNetsError("give the labelled PAIRS file (or --liveness DIR_OR_CSV for the liveness threshold)")
    if args.liveness_model:
        raise GhostFaceNetsError("--liveness-model goes with --liveness DIR_OR_CSV")
    recognizer = _recognizer(args)
    report = calibrate(
        recognizer,
        args.pairs,
        args.targets or (1e-2, 1e-3),
        set_name=args.set_name,
        root=args.root,
        skip_unusable=args.skip_unusable,
        progress=sys.stderr.isatty(),
    )
    if args.write:
        path, count = write_thresholds(args.model, report, args.write)
        report["written"] = {"path": str(path), "thresholds": count}
    if args.json:
        print_json(report)
        return 0
    print(
        f"{report['set']}: {report['pairs']} pairs ({report['same_pairs']} same, {report['different_pairs']} "
        f"different), model {report['model']}, flip {'on' if report['flip'] else 'off'}"
    )
    print_table(
        [
            (
                f"{t['far']:g}",
                f"{t['threshold']:.4f}",
                f"{t['frr']:.4f}",
                "yes" if t["estimable"] else f"no (needs >= {round(1 / t['far'])} different pairs)",
            )
            for t in report["thresholds"]
        ],
        ("target FAR", "threshold", "FRR", "measurable"),
    )
    for problem in report["unusable_images"]:
        print(f"skipped: {problem}", file=sys.stderr)
    if args.write:
        print(f"wrote {report['written']['thresholds']} threshold(s) into {report['written']['path']}")
    return 0


COMMANDS = [
    Command("detect", "find faces (boxes, scores, five landmarks) in photos", _add_detect, _run_detect),
    Command("verify", "are the faces in two photos the same person?", _add_verify, _run_verify),
    Command("embed", "face embeddings of photos into a .npy file", _add_embed, _run_embed),
    Command(
        "calibrate",
        "decision thresholds at target false-accept rates from labelled pairs",
        _add_calibrate,
        _run_calibrate,
    ),
]
