"""Bulk enrolment: a folder with one sub-folder of photos per person into a gallery, resumable.

Photos whose sha256 the gallery already holds are skipped before anything is decoded, so running the same command
again after an interruption carries on where it stopped. Faces are embedded in batches and each batch is stored in
one transaction: an interruption loses at most the batch under way, never half of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.align import align_face
from ..data.images import ImageError, encode_png, load_image
from ..errors import GhostFaceNetsError
from ..files import sha256_file
from ..gallery import Enrolment, GalleryStore, NewFace
from .recognizer import FaceRecognizer

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".pgm", ".ppm", ".tif", ".tiff"})


@dataclass
class BulkSummary:
    """What a bulk enrolment did, image by image (paths relative to the folder)."""

    people: int = 0
    images: int = 0
    enrolled: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)
    no_face: list[str] = field(default_factory=list)
    several_faces: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # the same photo in another person's folder
    spoof_suspected: list[str] = field(default_factory=list)  # judged not live (with the recognizer's liveness on)

    def to_dict(self) -> dict[str, Any]:
        problem_kinds = ("no_face", "several_faces", "unreadable", "conflicts", "spoof_suspected")
        counts = {name: len(getattr(self, name)) for name in ("enrolled", "already_present", *problem_kinds)}
        problems = {name: getattr(self, name) for name in problem_kinds}
        return {"people": self.people, "images": self.images, **counts, "problems": problems}


def identity_folders(folder: str | Path) -> list[tuple[str, list[Path]]]:
    """(person name, photos) for each sub-folder of ``folder`` (the sub-folder's name is the person's), by name."""
    root = Path(folder)
    if not root.is_dir():
        raise GhostFaceNetsError(f"{root}: {'not a folder' if root.exists() else 'no such folder'}")
    people = []
    for person in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        photos = sorted(p for p in person.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if photos:
            people.append((person.name, photos))
    if not people:
        raise GhostFaceNetsError(f"{root}: no sub-folder with photos (one sub-folder per person, named after them)")
    return people


def enroll_folder(
    recognizer: FaceRecognizer,
    store: GalleryStore,
    gallery: str,
    folder: str | Path,
    *,
    store_crops: bool = False,
    largest_face: bool = False,
    batch_size: int = 64,
    progress: bool = False,
) -> BulkSummary:
    """Enrol every person sub-folder of ``folder`` into ``gallery`` (created if new). A photo with several faces is
    skipped unless ``largest_face`` (then its largest face is used); photos with no face or that cannot be read, and
    (when the recognizer's ``liveness`` is on) faces judged not live, are skipped and listed. ``batch_size`` faces
    are embedded together and stored in one transaction."""
    from tqdm import tqdm

    from ..gallery import NotFoundError
    from ..gallery.base import check_model

    root = Path(folder)
    people = identity_folders(root)
    try:
        check_model(gallery, store.gallery(gallery).model, recognizer.model_id)  # before any photo is embedded
        present = store.enrolled_images(gallery)
    except NotFoundError:
        present = {}
    summary = BulkSummary(people=len(people), images=sum(len(photos) for _, photos in people))
    pending: list[tuple[str, NewFace, np.ndarray, str]] = []  # (person, face without embedding, crop, relative path)

    def flush() -> None:
        if not pending:
            return
        vectors = recognizer.embed_aligned(np.stack([crop for _, _, crop, _ in pending]))
        by_person: dict[str, list[NewFace]] = {}
        for (person, face, _, _), vector in zip(pending, vectors):
            by_person.setdefault(person, []).append(
                NewFace(vector, face.image_sha256, face.source, face.detection, face.crop)
            )
        store.enroll_many(gallery, [Enrolment(p, f) for p, f in by_person.items()], recognizer.model_id)
        summary.enrolled.extend(relative for _, _, _, relative in pending)
        pending.clear()

    bar = tqdm(total=summary.images, desc="enrolling", unit="img", disable=not progress, leave=False)
    for person, photos in people:
        for photo in photos:
            bar.update(1)
            relative = str(photo.relative_to(root))
            try:
                digest = sha256_file(photo)
            except OSError:
                summary.unreadable.append(relative)
                continue
            owner = present.get(digest)
            if owner is not None:
                (summary.already_present if owner == person else summary.conflicts).append(relative)
                continue
            try:
                pixels = load_image(photo)
            except ImageError:
                summary.unreadable.append(relative)
                continue
            faces = recognizer.detect(pixels)
            if not faces:
                summary.no_face.append(relative)
                continue
            if len(faces) > 1 and not largest_face:
                summary.several_faces.append(relative)
                continue
            detection = {**faces[0].to_dict(), "faces_in_image": len(faces)}
            if recognizer.liveness:
                (live,) = recognizer.liveness_checker.check(pixels, faces[:1])
                if not live.is_live:
                    summary.spoof_suspected.append(relative)
                    continue
                detection["liveness"] = live.to_dict()
            crop = align_face(pixels, faces[0].landmarks)
            face = NewFace(np.zeros(0), digest, relative, detection, encode_png(crop) if store_crops else None)
            pending.append((person, face, crop, relative))
            present[digest] = person
            if len(pending) >= batch_size:
                flush()
    flush()
    bar.close()
    return summary
