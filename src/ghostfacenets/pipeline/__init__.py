"""From photos to decisions: detect faces, align them to the ArcFace template, embed, verify and identify."""

from ..data.align import align_face, estimate_transform
from ..gallery import ModelId
from .detect import DETECTORS, Face, FaceDetector, RetinaFaceDetector, create_detector
from .recognizer import FaceRecognizer
from .results import Identification, Match, NoFaceError, Threshold, Verification

__all__ = [
    "DETECTORS",
    "Face",
    "FaceDetector",
    "FaceRecognizer",
    "Identification",
    "Match",
    "ModelId",
    "NoFaceError",
    "RetinaFaceDetector",
    "Threshold",
    "Verification",
    "align_face",
    "create_detector",
    "estimate_transform",
]
