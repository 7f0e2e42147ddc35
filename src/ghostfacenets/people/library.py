"""The people of one gallery (:class:`PeopleLibrary`): unlabelled faces added from photos, videos or a caller's own
embeddings, grouped into persons, and the user's corrections.

    from ghostfacenets.gallery import open_store
    from ghostfacenets.people import PeopleLibrary, PhotoFaces
    from ghostfacenets.pipeline import FaceRecognizer

    recognizer = FaceRecognizer()
    with open_store("library.sqlite") as store:
        people = PeopleLibrary(store, "family", recognizer)
        people.add_folder("photos/")                         # every face of every photo; again: only new photos
        people.add_image("beach.jpg")                        # one photo, its faces grouped at once
        faces = people.describe(crops, detections)           # a caller's aligned crops: embeddings and quality
        people.add([PhotoFaces("clip.mp4@12.3s", faces)])    # ... added with a free-form reference
        for person in people.people():
            ...
        people.name(person_id, "Ada")                        # identify finds Ada from now on

The CLI (``ghostfacenets people``) and the service's ``/v1/galleries/{gallery}/people`` routes are thin layers over
this class. A gallery keeps its grouping settings: the first ones used are stored, and later runs use them (incremental
and full runs agree only under one set of settings) until :meth:`PeopleLibrary.save_settings` changes them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.images import ImageError, ImageSource, encode_png, load_image
from ..errors import GhostFaceNetsError
from ..gallery.people import (
    AddedPhotos,
    CorrectionSession,
    PeopleSummary,
    Person,
    PersonFace,
    PhotoFaces,
    UnlabelledFace,
)
from . import corrections
from .faces import describe_faces
from .grouping import SETTINGS_FAR, GroupingSettings, GroupingSummary, place_pending
from .quality import DEFAULT_QUALITY, QualityModel

if TYPE_CHECKING:
    from ..gallery import GalleryStore, ModelId
    from ..pipeline.detect import Face
    from ..pipeline.recognizer import FaceRecognizer

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".pgm", ".ppm", ".tif", ".tiff"})
BULK_PENDING = 2_000  # more faces waiting than this: read every embedding once for exact neighbours (docs/people.md)


@dataclass
class FolderSummary:
    """What :meth:`PeopleLibrary.add_folder` did, photo by photo (paths relative to the folder)."""

    photos: int = 0
    added: int = 0
    faces: int = 0
    already_done: int = 0
    no_face: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    grouping: GroupingSummary | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "photos": self.photos,
            "photos_added": self.added,
            "faces_added": self.faces,
            "already_done": self.already_done,
            "no_face": self.no_face,
            "unreadable": self.unreadable,
            "grouping": None if self.grouping is None else self.grouping.to_dict(),
        }


def photo_files(folder: str | Path) -> list[Path]:
    """Every image file under ``folder`` (recursively, hidden ones left out), in path order."""
    root = Path(folder)
    if not root.is_dir():
        raise GhostFaceNetsError(f"{root}: {'not a folder' if root.exists() else 'no such folder'}")
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not any(s.startswith(".") for s in p.parts)
    )


def default_settings(recognizer: FaceRecognizer | None) -> GroupingSettings:
    """Grouping settings for the recognizer's model: :meth:`GroupingSettings.for_threshold` at its threshold
    calibrated at FAR 1e-2, else at its decision threshold (given, calibrated at 1e-3, or the fallback)."""
    if recognizer is None:
        return GroupingSettings()
    from ..pipeline.results import ThresholdError

    try:
        threshold = recognizer.threshold(far=SETTINGS_FAR)
    except ThresholdError:
        threshold = recognizer.threshold()
    return GroupingSettings.for_threshold(round(threshold.value, 4))


class PeopleLibrary:
    """Unlabelled faces of ``gallery`` in ``store`` and the people they form.

    ``recognizer`` detects and embeds photos (:meth:`add_image`, :meth:`add_folder`, :meth:`describe`); without one,
    only faces with embeddings can be added (:meth:`add`) and ``model`` names their embedding space. ``settings``
    replaces the gallery's stored grouping settings for this object (:meth:`save_settings` stores them);
    ``quality`` is how faces are scored.
    """

    def __init__(
        self,
        store: GalleryStore,
        gallery: str,
        recognizer: FaceRecognizer | None = None,
        *,
        model: ModelId | None = None,
        settings: GroupingSettings | None = None,
        quality: QualityModel = DEFAULT_QUALITY,
    ) -> None:
        if model is None:
            if recognizer is None:
                raise GhostFaceNetsError("a PeopleLibrary needs a recognizer (to embed photos) or the faces' model")
            model = recognizer.model_id
        self.store: Any = store  # a GalleryStore with the people methods of both backends
        self.gallery = gallery
        self.recognizer = recognizer
        self.model = model
        self.quality = quality
        self._settings = settings
        self._kept = False  # the gallery holds settings (checked once per object)

    # ---------------------------------------------------------------------------------------------- settings
    @property
    def settings(self) -> GroupingSettings:
        """The grouping settings in force: those given, else the gallery's stored ones, else the defaults for the
        recognizer's model (:meth:`GroupingSettings.for_threshold` at its threshold calibrated at FAR 1e-2, or its
        decision threshold), else :class:`GroupingSettings`' own."""
        if self._settings is None:
            stored = self._stored_settings()
            self._settings = stored if stored is not None else default_settings(self.recognizer)
        return self._settings

    def _stored_settings(self) -> GroupingSettings | None:
        from ..gallery import NotFoundError

        try:
            stored = self.store.people_settings(self.gallery)
        except NotFoundError:
            return None
        if stored is None:
            return None
        known = {f.name for f in fields(GroupingSettings)}
        return GroupingSettings(**{k: v for k, v in stored.items() if k in known})

    def save_settings(self, settings: GroupingSettings) -> None:
        """Store ``settings`` as the gallery's (a full re-run applies them to the faces already placed)."""
        self.store.set_people_settings(self.gallery, settings.to_dict())
        self._settings, self._kept = settings, True

    def _keep_settings(self) -> None:
        """Store the settings in force when the gallery has none yet: later runs group as this one does."""
        if not self._kept and self._stored_settings() is None:
            self.store.set_people_settings(self.gallery, self.settings.to_dict())
        self._kept = True

    # ---------------------------------------------------------------------------------------------- adding
    def known(self, keys: Iterable[str]) -> set[str]:
        """The photo keys among ``keys`` that the gallery holds already (their photos are skipped)."""
        return set(self.store.known_photos(self.gallery, list(keys)))

    def add(self, photos: Sequence[PhotoFaces], *, place: bool = True) -> AddedPhotos:
        """Add photos with their faces in one transaction (photos whose key the gallery holds are skipped), then
        group the new faces unless ``place`` is False (:meth:`cluster` does it later)."""
        added: AddedPhotos = self.store.add_photos(self.gallery, photos, self.model)
        if place and added.faces:
            added.grouping = self.cluster(pending=added.faces)
        return added

    def describe(
        self, crops: np.ndarray, faces: Sequence[Face | None] | None = None, *, store_crops: bool = False
    ) -> list[UnlabelledFace]:
        """Embeddings and quality of aligned 112x112 RGB ``crops`` (N, 112, 112, 3) as unlabelled faces, each with
        the detected face it came from (its box, score and landmarks; None or no list: a crop given as is).
        ``store_crops`` keeps each crop (PNG) with its face."""
        recognizer = self._recognizer()
        crops = np.asarray(crops, np.uint8)
        found = list(faces) if faces is not None else [None] * len(crops)
        if len(found) != len(crops):
            raise GhostFaceNetsError(f"{len(crops)} crops but {len(found)} faces")
        embeddings, parts, scores = describe_faces(recognizer, crops, found, self.quality)
        return [
            UnlabelledFace(
                embedding=vector,
                quality=score,
                box=None if face is None else [round(float(v), 2) for v in face.box],
                detection={**({} if face is None else face.to_dict()), "quality": part.to_dict()},
                crop=encode_png(crop) if store_crops else None,
            )
            for crop, face, vector, part, score in zip(crops, found, embeddings, parts, scores)
        ]

    def _recognizer(self) -> FaceRecognizer:
        if self.recognizer is None:
            raise GhostFaceNetsError("detecting and embedding faces needs a recognizer (a model)")
        return self.recognizer

    def _photo(self, pixels: np.ndarray, reference: str, key: str | None, store_crops: bool) -> PhotoFaces:
        from ..data.align import align_face

        found = self._recognizer().detect(pixels)
        crops = np.stack([align_face(pixels, f.landmarks) for f in found]) if found else np.zeros((0, 112, 112, 3))
        return PhotoFaces(reference, self.describe(crops, found, store_crops=store_crops), key)

    def add_image(
        self,
        image: ImageSource,
        reference: str | None = None,
        *,
        key: str | None = None,
        store_crops: bool = False,
        place: bool = True,
    ) -> AddedPhotos:
        """Detect, embed and add every face of one photo (a path, bytes, a PIL image or an RGB array), then group
        them. ``reference`` defaults to the path; ``key`` to the sha256 of the file's bytes (for other images: of
        the reference)."""
        if isinstance(image, (str, Path)):
            from ..files import sha256_file

            reference = reference or str(image)
            key = key or sha256_file(image)
        if reference is None:
            raise GhostFaceNetsError("give a reference for an image that is not a file path")
        if key is not None and self.known([key]):
            return AddedPhotos(skipped=[reference])
        return self.add([self._photo(load_image(image), reference, key, store_crops)], place=place)

    def add_folder(
        self,
        folder: str | Path,
        *,
        store_crops: bool = False,
        place: bool = True,
        batch: int = 32,
        progress: Callable[[int], None] | None = None,
    ) -> FolderSummary:
        """Every face of every photo under ``folder`` (references: paths relative to it; keys: sha256 of the
        bytes). Photos the gallery holds are skipped before they are decoded, so a re-run adds only what is new;
        ``batch`` photos are stored per transaction. Then the new faces are grouped unless ``place`` is False.
        ``progress(photos)`` after each photo."""
        from ..files import sha256_file

        if batch < 1:
            raise GhostFaceNetsError(f"batch must be at least 1, got {batch}")
        root = Path(folder)
        files = photo_files(root)
        summary = FolderSummary(photos=len(files))
        pending: list[PhotoFaces] = []

        def flush() -> None:
            added = self.add(pending, place=False)
            summary.added += len(added.added)
            summary.faces += added.faces
            summary.already_done += len(added.skipped)
            pending.clear()

        for start in range(0, len(files), batch):
            chunk = files[start : start + batch]
            keys = {}
            for path in chunk:
                try:
                    keys[path] = sha256_file(path)
                except OSError:
                    summary.unreadable.append(str(path.relative_to(root)))
            known = self.known(keys.values())
            for path, key in keys.items():
                relative = str(path.relative_to(root))
                if key in known:
                    summary.already_done += 1
                elif key not in {p.key for p in pending}:
                    try:
                        photo = self._photo(load_image(path), relative, key, store_crops)
                    except (ImageError, OSError):
                        summary.unreadable.append(relative)
                    else:
                        pending.append(photo)
                        if not photo.faces:
                            summary.no_face.append(relative)
                else:
                    summary.already_done += 1  # the same bytes twice in the folder
                if progress is not None:
                    progress(1)
            if pending:
                flush()
        if place:
            summary.grouping = self.cluster()
        return summary

    # ---------------------------------------------------------------------------------------------- grouping
    def cluster(
        self, *, full: bool = False, progress: Callable[[int], None] | None = None, pending: int | None = None
    ) -> GroupingSummary:
        """Place every face waiting to be placed; ``full``: forget every automatic placement first and place the
        whole gallery again (what users did stays: pinned faces, their people, "not this person"). ``pending``: how
        many faces wait, when the caller knows (it chooses between the store's index and every embedding read at
        once, not what is placed)."""
        self._keep_settings()
        if full:
            self.store.reset_people(self.gallery)
        if pending is None or full:
            pending = self.store.people_pending(self.gallery)
        bulk = pending > BULK_PENDING
        return place_pending(
            lambda: self.store.people_batch(self.gallery),
            self.settings,
            batch_size=1024 if bulk else 256,
            progress=progress,
            exact=self.store.people_vectors(self.gallery) if bulk else None,
        )

    # ---------------------------------------------------------------------------------------------- reading
    def summary(self) -> PeopleSummary:
        return self.store.people_summary(self.gallery, self.settings.min_quality)

    def people(self, offset: int = 0, limit: int = 100) -> list[Person]:
        """People, largest first."""
        return self.store.people(self.gallery, offset, limit)

    def person(self, person: int) -> Person:
        return self.store.person(self.gallery, person)

    def faces(self, person: int | None, after: int | None = None, limit: int = 100) -> list[PersonFace]:
        """The faces of ``person`` (None: the unsorted faces), by id after ``after``."""
        return self.store.person_faces(self.gallery, person, after, limit)

    def face(self, face: int) -> PersonFace:
        return self.store.person_face(self.gallery, face)

    def crop(self, face: int) -> bytes | None:
        """A face's stored crop (PNG), None when faces were added without crops."""
        return self.store.crop(self.gallery, face)

    # ---------------------------------------------------------------------------------------------- corrections
    @contextlib.contextmanager
    def _correcting(self) -> Iterator[CorrectionSession]:
        with self.store.people_corrections(self.gallery) as session:
            yield session

    def name(self, person: int, name: str) -> Person:
        """Name (or rename) a person: it becomes the gallery's subject ``name``, which ``identify`` finds; its
        faces are pinned."""
        with self._correcting() as session:
            corrections.name_person(session, person, name)
        return self.person(person)

    def merge(self, target: int, sources: Sequence[int]) -> Person:
        """Merge ``sources`` into ``target`` (every face pinned there)."""
        with self._correcting() as session:
            corrections.merge_people(session, target, sources)
        return self.person(target)

    def split(self, person: int, faces: Collection[int]) -> Person:
        """Move ``faces`` of ``person`` to a new person; returns the new one."""
        with self._correcting() as session:
            new = corrections.split_person(session, person, faces)
        return self.person(new)

    def reject(self, face: int, person: int | None = None, *, place: bool = True) -> GroupingSummary | None:
        """ "Not this person": ``face`` leaves ``person`` (default: its own) for good and is placed again (now,
        unless ``place`` is False)."""
        with self._correcting() as session:
            corrections.reject_face(session, face, person)
        return self.cluster() if place else None

    def move(self, faces: Collection[int], person: int) -> Person:
        """Put ``faces`` in ``person`` (pinned; recorded as not the people they leave)."""
        with self._correcting() as session:
            corrections.move_faces(session, faces, person)
        return self.person(person)

    def ignore(self, faces: Collection[int]) -> None:
        """Never group ``faces`` (not a face, a stranger): pinned unsorted."""
        with self._correcting() as session:
            corrections.ignore_faces(session, faces)
