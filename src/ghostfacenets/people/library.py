"""The people of one gallery (:class:`PeopleLibrary`): unlabelled faces added from photos, videos or a caller's own
embeddings, grouped into persons, and the user's corrections.

    from ghostfacenets.gallery import open_store
    from ghostfacenets.people import PeopleLibrary, PhotoFaces, UnlabelledFace
    from ghostfacenets.pipeline import FaceRecognizer

    recognizer = FaceRecognizer()
    with open_store("library.sqlite") as store:
        people = PeopleLibrary(store, "family", recognizer)
        people.add_image("photos/2024/beach.jpg")            # every face, grouped at once
        # faces found elsewhere (a video tracker): embeddings of the gallery's model, a box and a reference
        crops_faces = people.describe(crops, detections)       # embeddings and quality of aligned crops
        people.add([PhotoFaces("clip.mp4@12.3s", crops_faces)])

The CLI (``ghostfacenets people``) and the service's ``/v1/galleries/{gallery}/people`` routes are thin layers over
this class.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..data.images import ImageSource, encode_png, load_image
from ..errors import GhostFaceNetsError
from ..gallery.people import AddedPhotos, PhotoFaces, UnlabelledFace
from .faces import describe_faces
from .grouping import GroupingSettings, GroupingSummary
from .quality import DEFAULT_QUALITY, QualityModel

if TYPE_CHECKING:
    from ..gallery import GalleryStore, ModelId
    from ..pipeline.detect import Face
    from ..pipeline.recognizer import FaceRecognizer


class PeopleLibrary:
    """Unlabelled faces of ``gallery`` in ``store`` and the people they form.

    ``recognizer`` detects and embeds photos (:meth:`add_image`, :meth:`describe`); without one, only faces with
    embeddings can be added (:meth:`add`) and ``model`` names their embedding space. ``settings`` and ``quality``
    replace the gallery's own grouping settings and quality score for this object's calls.
    """

    def __init__(
        self,
        store: GalleryStore,
        gallery: str,
        recognizer: FaceRecognizer | None = None,
        *,
        model: ModelId | None = None,
        settings: GroupingSettings | None = None,
        quality: QualityModel | None = None,
    ) -> None:
        if model is None:
            if recognizer is None:
                raise GhostFaceNetsError("a PeopleLibrary needs a recognizer (to embed photos) or the faces' model")
            model = recognizer.model_id
        self.store = store
        self.gallery = gallery
        self.recognizer = recognizer
        self.model = model
        self.settings = settings or GroupingSettings()
        self.quality = quality or DEFAULT_QUALITY
        self.reference_norm = 1.0

    # ---------------------------------------------------------------------------------------------- adding
    def known(self, keys: Iterable[str]) -> set[str]:
        """The photo keys among ``keys`` that the gallery holds already (their photos are skipped)."""
        return self.store.known_photos(self.gallery, list(keys))  # type: ignore[attr-defined]

    def add(self, photos: Sequence[PhotoFaces], *, place: bool = True) -> AddedPhotos:
        """Add photos with their faces in one transaction (photos whose key the gallery holds are skipped), then
        group the new faces unless ``place`` is False (``cluster`` does it later)."""
        added = self.store.add_photos(self.gallery, photos, self.model)  # type: ignore[attr-defined]
        if place and added.added:
            added.grouping = self.cluster()
        return added

    def describe(
        self, crops: np.ndarray, faces: Sequence[Face | None] | None = None, *, store_crops: bool = False
    ) -> list[UnlabelledFace]:
        """Embeddings and quality of aligned 112x112 RGB ``crops`` (N, 112, 112, 3) as unlabelled faces, each with
        the detected face it came from (its box, score and landmarks; None or no list: a crop given as is)."""
        if self.recognizer is None:
            raise GhostFaceNetsError("describing crops needs a recognizer")
        crops = np.asarray(crops, np.uint8)
        found = list(faces) if faces is not None else [None] * len(crops)
        if len(found) != len(crops):
            raise GhostFaceNetsError(f"{len(crops)} crops but {len(found)} faces")
        embeddings, parts, scores = describe_faces(self.recognizer, crops, found, self.reference_norm, self.quality)
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

    def add_image(
        self,
        image: ImageSource,
        reference: str | None = None,
        *,
        key: str | None = None,
        store_crops: bool = False,
        place: bool = True,
    ) -> AddedPhotos:
        """Detect, embed and add every face of one photo (a path, bytes, a PIL image or an RGB array).
        ``reference`` defaults to the path; ``key`` to the sha256 of the file's bytes (of the reference for other
        images)."""
        from ..data.align import align_face

        if self.recognizer is None:
            raise GhostFaceNetsError("adding photos needs a recognizer")
        if isinstance(image, (str, Path)):
            from ..files import sha256_file

            reference = reference or str(image)
            key = key or sha256_file(image)
        if reference is None:
            raise GhostFaceNetsError("give a reference for an image that is not a file path")
        if key is not None and key in self.known([key]):
            return AddedPhotos(skipped=[reference])
        pixels = load_image(image)
        found = self.recognizer.detect(pixels)
        crops = np.stack([align_face(pixels, f.landmarks) for f in found]) if found else np.zeros((0, 112, 112, 3))
        photo = PhotoFaces(reference, self.describe(crops, found, store_crops=store_crops), key)
        return self.add([photo], place=place)

    # ---------------------------------------------------------------------------------------------- grouping
    def cluster(self, *, full: bool = False) -> GroupingSummary:
        """Place every face waiting to be placed; ``full``: forget every automatic placement first and place the
        whole gallery again (what users did stays)."""
        from .grouping import place_pending

        if full:
            self.store.reset_people(self.gallery)  # type: ignore[attr-defined]
        return place_pending(lambda: self.store.people_batch(self.gallery), self.settings)  # type: ignore[attr-defined]
