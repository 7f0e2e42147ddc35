"""Moving a gallery between stores (``gallery export`` / ``gallery import``): JSON lines or Parquet, no pickle.

Each record is one face: its gallery and subject (with the subject's metadata), the embedding (float32 values,
exact), the image sha256, source and detection, the model (name, weights sha256, size, flip) and the aligned crop
when one was stored (base64 PNG in JSON lines, binary in Parquet). A JSON-lines file starts with a header record
(``format``, ``version``, ``ghostfacenets_version``); Parquet carries the same in its schema metadata. Import is
resumable: faces whose image the gallery already holds are skipped.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_path, atomic_write, written_by
from .base import Enrolment, ExportedFace, GalleryError, GalleryStore, ModelId, NewFace

FORMAT = "ghostfacenets-gallery"
VERSION = 1
IMPORT_BATCH = 1000  # faces per transaction on import
PARQUET_ROW_GROUP = 10_000


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".parquet":
        return "parquet"
    raise GalleryError(f"{path}: give a .jsonl or .parquet file")


def _record(face: ExportedFace) -> dict[str, Any]:
    return {
        "gallery": face.gallery,
        "subject": face.subject,
        "metadata": face.subject_metadata,
        "image_sha256": face.face.image_sha256,
        "source": face.face.source,
        "detection": face.face.detection,
        "model": {"name": face.model.name, "sha256": face.model.sha256, "dim": face.model.dim, "flip": face.model.flip},
        "embedding": [float(x) for x in np.asarray(face.face.embedding, dtype=np.float32)],
    }


def _face(record: dict[str, Any], crop: bytes | None, where: str) -> ExportedFace:
    try:
        model = ModelId(
            str(record["model"]["name"]),
            str(record["model"]["sha256"]),
            int(record["model"]["dim"]),
            bool(record["model"]["flip"]),
        )
        face = NewFace(
            np.asarray(record["embedding"], dtype=np.float32),
            str(record["image_sha256"]),
            str(record.get("source") or ""),
            record.get("detection"),
            crop,
        )
        return ExportedFace(str(record["gallery"]), str(record["subject"]), dict(record["metadata"] or {}), face, model)
    except (KeyError, TypeError, ValueError) as exc:
        raise GalleryError(f"{where}: not a gallery face record ({type(exc).__name__}: {exc})") from None


def export_gallery(
    store: GalleryStore, gallery: str, path: str | Path, progress: Callable[[int], None] | None = None
) -> int:
    """Write every face of ``gallery`` to ``path`` (.jsonl or .parquet, replaced atomically); returns the count."""
    path = Path(path)
    kind = _format(path)
    faces = store.export_faces(gallery)
    return _write_jsonl(faces, path, progress) if kind == "jsonl" else _write_parquet(faces, path, progress)


def _write_jsonl(faces: Iterable[ExportedFace], path: Path, progress: Callable[[int], None] | None) -> int:
    count = 0
    with atomic_write(path, "w") as f:
        f.write(json.dumps({"format": FORMAT, "version": VERSION, **written_by()}) + "\n")
        for face in faces:
            record = _record(face)
            record["crop_png_base64"] = base64.b64encode(face.face.crop).decode() if face.face.crop else None
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
            if progress:
                progress(1)
    return count


def _parquet_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("gallery", pa.string()),
            ("subject", pa.string()),
            ("metadata", pa.string()),
            ("image_sha256", pa.string()),
            ("source", pa.string()),
            ("detection", pa.string()),
            ("model", pa.string()),
            ("embedding", pa.list_(pa.float32())),
            ("crop_png", pa.binary()),
        ],
        metadata={
            b"format": FORMAT.encode(),
            b"version": str(VERSION).encode(),
            **{k.encode(): v.encode() for k, v in written_by().items()},
        },
    )


def _pyarrow() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise GalleryError("Parquet needs pyarrow: pip install 'ghostfacenets[parquet]' (or use .jsonl)") from exc
    return pq


def _write_parquet(faces: Iterable[ExportedFace], path: Path, progress: Callable[[int], None] | None) -> int:
    pq = _pyarrow()
    import pyarrow as pa

    schema = _parquet_schema()
    columns: dict[str, list[Any]] = {name: [] for name in schema.names}
    count = 0
    with atomic_path(path) as tmp, pq.ParquetWriter(str(tmp), schema) as writer:

        def flush() -> None:
            writer.write_table(pa.table(columns, schema=schema))
            for values in columns.values():
                values.clear()

        for face in faces:
            record = _record(face)
            for name in ("metadata", "detection", "model"):
                record[name] = json.dumps(record[name], ensure_ascii=False)
            record["crop_png"] = face.face.crop
            for name, values in columns.items():
                values.append(record[name])
            count += 1
            if progress:
                progress(1)
            if len(columns["subject"]) >= PARQUET_ROW_GROUP:
                flush()
        if columns["subject"] or count == 0:
            flush()
    return count


def read_faces(path: str | Path) -> Iterator[ExportedFace]:
    """The faces of an export file, one by one."""
    path = Path(path)
    if not path.is_file():
        raise GalleryError(f"{path}: no such file")
    if _format(path) == "jsonl":
        with open(path, encoding="utf-8") as f:
            header = _json_line(f.readline(), f"{path}:1")
            if header.get("format") != FORMAT:
                raise GalleryError(f"{path}: not a ghostfacenets gallery export (no format header)")
            if int(header.get("version", 0)) > VERSION:
                raise GalleryError(f"{path}: export format v{header['version']} is newer than this ghostfacenets")
            for number, line in enumerate(f, start=2):
                if line.strip():
                    record = _json_line(line, f"{path}:{number}")
                    crop = record.get("crop_png_base64")
                    yield _face(record, base64.b64decode(crop) if crop else None, f"{path}:{number}")
        return
    pq = _pyarrow()
    try:
        parquet = pq.ParquetFile(str(path))
    except Exception as exc:  # pyarrow raises several kinds for a damaged file
        raise GalleryError(f"{path}: not a readable Parquet file ({exc})") from None
    if (parquet.schema_arrow.metadata or {}).get(b"format") != FORMAT.encode():
        raise GalleryError(f"{path}: not a ghostfacenets gallery export (no format metadata)")
    row = 0
    for batch in parquet.iter_batches():
        for record in batch.to_pylist():
            row += 1
            for name in ("metadata", "detection", "model"):
                record[name] = _json_line(record[name], f"{path} row {row}")
            yield _face(record, record.get("crop_png"), f"{path} row {row}")


def file_model(path: str | Path) -> ModelId:
    """The model of an export file's first face (what an import binds to, and the index it fills)."""
    for face in read_faces(path):
        return face.model
    raise GalleryError(f"{path}: no faces in this export")


def _json_line(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise GalleryError(f"{where}: not JSON ({exc})") from None


def import_gallery(
    store: GalleryStore,
    path: str | Path,
    gallery: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Enrol every face of an export file into ``gallery`` (default: the gallery it was exported from), in
    transactions of :data:`IMPORT_BATCH` faces; returns (faces added, faces already there)."""
    added = skipped = 0
    batch: list[ExportedFace] = []

    def flush() -> None:
        nonlocal added, skipped
        by_subject: dict[str, list[NewFace]] = {}
        metadata: dict[str, dict[str, Any]] = {}
        for face in batch:
            by_subject.setdefault(face.subject, []).append(face.face)
            metadata.setdefault(face.subject, face.subject_metadata)
        enrolments = [Enrolment(name, faces, metadata[name]) for name, faces in by_subject.items()]
        for result in store.enroll_many(gallery or batch[0].gallery, enrolments, batch[0].model):
            added += len(result.added)
            skipped += len(result.skipped)
        if progress:
            progress(len(batch))
        batch.clear()

    for face in read_faces(path):
        if batch and (face.model != batch[0].model or (gallery is None and face.gallery != batch[0].gallery)):
            flush()
        batch.append(face)
        if len(batch) >= IMPORT_BATCH:
            flush()
    if batch:
        flush()
    return added, skipped
