"""Running the pipeline files as an app does, step by step, from the contract in their metadata
(docs/mobile.md#the-pipeline-files): nothing here uses the package's own detector, alignment or embedder, so that
the tests comparing the two check the files and the documented steps, not one implementation against itself.

    pipeline = MobilePipeline("gfn.detector.tflite", "gfn.align_embed.tflite")
    faces = pipeline.detect(rgb)                       # boxes, scores, landmarks in photo pixels
    embedding = pipeline.embed(rgb, faces[0])          # L2-normalised
    same = float(embedding @ other) > pipeline.threshold()
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import GhostFaceNetsError, ModelFileError

SUFFIXES = {".tflite": "litert", ".pte": "executorch", ".onnx": "onnx"}


@dataclass(frozen=True)
class MobileFace:
    """A face the detector file found: ``box`` x1, y1, x2, y2, ``score``, ``landmarks`` (5, 2), photo pixels."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    @property
    def area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0) * max(self.box[3] - self.box[1], 0))


class DeviceFile:
    """One file in its runtime: ``run(inputs)`` takes and returns numpy arrays in the file's documented order;
    ``metadata`` is its ghostfacenets JSON."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFileError(f"{self.path}: no such file")
        self.runtime = SUFFIXES.get(self.path.suffix.lower())
        if self.runtime is None:
            raise ModelFileError(f"{self.path}: a pipeline file ends in {', '.join(SUFFIXES)}")
        self.metadata: dict[str, Any] = getattr(self, f"_open_{self.runtime}")(threads)
        if "pipeline" not in self.metadata:
            raise ModelFileError(f"{self.path}: not a pipeline file of ghostfacenets export --pipeline")
        self.contract: dict[str, Any] = self.metadata["pipeline"]
        self.role: str = self.contract["role"]

    def _open_litert(self, threads: int | None) -> dict[str, Any]:
        from ai_edge_litert.interpreter import Interpreter

        from ..export.litert import read_litert_metadata

        self._interpreter = Interpreter(model_path=str(self.path), num_threads=threads)
        self._interpreter.allocate_tensors()
        return read_litert_metadata(self.path)

    def _open_executorch(self, threads: int | None) -> dict[str, Any]:
        from ..export.executorch import load_method, load_program, program_metadata

        self._program = load_program(self.path)
        self._forward = load_method(self._program, "forward", str(self.path))
        return program_metadata(self._program, str(self.path)) or {}

    def _open_onnx(self, threads: int | None) -> dict[str, Any]:
        from ..export.onnx import open_session, session_metadata

        self._session = open_session(self.path, threads)
        return session_metadata(self._session) or {}

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Inputs and outputs in the contract's order (LiteRT's tensors are matched by shape and type, as an app
        matches them with ``getInputTensor(i).shape()``)."""
        if self.runtime == "onnx":
            names = [i.name for i in self._session.get_inputs()]
            return list(self._session.run(None, dict(zip(names, inputs))))
        if self.runtime == "executorch":
            import torch

            return [t.numpy() for t in self._forward.execute([torch.from_numpy(x) for x in inputs])]
        details = self._interpreter.get_input_details()
        for x in inputs:
            match = next(d for d in details if tuple(d["shape"]) == x.shape and d["dtype"] == x.dtype)
            self._interpreter.set_tensor(match["index"], x)
        self._interpreter.invoke()
        outputs = {tuple(d["shape"]): d["index"] for d in self._interpreter.get_output_details()}
        declared = self.contract[self.role].get("outputs") or [self.contract[self.role]["output"]]
        return [self._interpreter.get_tensor(outputs[tuple(o["shape"])]) for o in declared]


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy non-maximum suppression: indices kept, highest score first."""
    order = list(np.argsort(-scores, kind="stable"))
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    kept: list[int] = []
    while order:
        best = order.pop(0)
        kept.append(int(best))
        rest = np.array(order, dtype=np.int64)
        if not len(rest):
            break
        width = np.clip(
            np.minimum(boxes[best, 2], boxes[rest, 2]) - np.maximum(boxes[best, 0], boxes[rest, 0]), 0, None
        )
        height = np.clip(
            np.minimum(boxes[best, 3], boxes[rest, 3]) - np.maximum(boxes[best, 1], boxes[rest, 1]), 0, None
        )
        overlap = width * height / np.maximum(areas[best] + areas[rest] - width * height, 1e-12)
        order = [int(i) for i, o in zip(rest, overlap) if o <= iou]
    return kept


def window(photo: np.ndarray, face: MobileFace, side: int, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """The align-and-embed input for ``face``: the ``side`` x ``side`` window of the photo centred on the face box
    (the photo first shrunk when the box's longer side exceeds side / margin), zeros beyond the photo; and the
    landmarks in window pixels."""
    box = face.box.astype(np.float64)
    longer = max(box[2] - box[0], box[3] - box[1])
    scale = min(1.0, side / (margin * max(longer, 1.0)))
    scales = np.ones(2)
    if scale < 1.0:
        height, width = photo.shape[:2]
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        photo = cv2.resize(photo, size, interpolation=cv2.INTER_AREA)
        scales = np.array([size[0] / width, size[1] / height])
    centre = scales * (box[:2] + box[2:]) / 2
    x0, y0 = (np.floor(centre) - side // 2).astype(int)
    canvas = np.zeros((1, side, side, 3), np.uint8)
    h, w = photo.shape[:2]
    left, top, right, bottom = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    if right > left and bottom > top:
        canvas[0, top - y0 : bottom - y0, left - x0 : right - x0] = photo[top:bottom, left:right]
    points = face.landmarks.astype(np.float64) * scales - [x0, y0]
    return canvas, points[None].astype(np.float32)


class MobilePipeline:
    """A detector file and an align-and-embed file of one runtime, run as the contract says."""

    def __init__(self, detector: str | Path, align_embed: str | Path, threads: int | None = None) -> None:
        self.detector = DeviceFile(detector, threads)
        self.align_embed = DeviceFile(align_embed, threads)
        if (self.detector.role, self.align_embed.role) != ("detector", "align_embed"):
            raise ModelFileError(
                f"expected a detector file and an align-and-embed file, got {self.detector.role} and "
                f"{self.align_embed.role}"
            )
        self.contract = self.align_embed.contract
        self.metadata = self.align_embed.metadata

    @classmethod
    def from_stem(cls, stem: str | Path, suffix: str, precision: str = "float32", **options: Any) -> MobilePipeline:
        """The files ``export --pipeline`` wrote for ``stem`` (e.g. ``gfn``) with ``suffix`` (".tflite", ...)."""
        tag = ".int8" if precision == "int8" else ""
        stem = Path(stem)
        return cls(
            stem.with_name(f"{stem.name}.detector{tag}{suffix}"),
            stem.with_name(f"{stem.name}.align_embed{tag}{suffix}"),
            **options,
        )

    def detect(self, photo: np.ndarray) -> list[MobileFace]:
        """Faces in a uint8 RGB photo (H, W, 3), highest score first, in photo pixels."""
        if photo.dtype != np.uint8 or photo.ndim != 3 or photo.shape[2] != 3 or photo.size == 0:
            raise GhostFaceNetsError(f"expected a uint8 RGB photo (H, W, 3), got {photo.dtype} {photo.shape}")
        facts = self.detector.contract["detector"]
        image_facts = facts["inputs"][0]
        side = image_facts["shape"][1]
        height, width = photo.shape[:2]
        scale = min(1.0, side / max(height, width))
        resized = photo
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            resized = cv2.resize(photo, size, interpolation=cv2.INTER_AREA)
        canvas = np.zeros((1, side, side, 3), np.float32)
        h, w = resized.shape[:2]
        canvas[0, :h, :w] = resized.astype(np.float32) - np.array(image_facts["mean_rgb"], np.float32)
        scores, boxes, points = self.detector.run([canvas, np.array([[h, w]], np.float32)])
        decoding = facts["decoding"]
        keep = np.flatnonzero(scores[0] >= decoding["score_threshold"])
        sx, sy = w / width, h / height
        boxes = boxes[0, keep].astype(np.float64) / [sx, sy, sx, sy]
        points = points[0, keep].astype(np.float64).reshape(-1, 5, 2) / [sx, sy]
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        faces = [
            MobileFace(boxes[i], float(scores[0, keep[i]]), points[i])
            for i in nms(boxes, scores[0, keep], decoding["nms_iou"])
            if min(boxes[i, 2] - boxes[i, 0], boxes[i, 3] - boxes[i, 1]) >= 1.0
        ]
        return faces

    def embed(self, photo: np.ndarray, face: MobileFace) -> np.ndarray:
        """The L2-normalised embedding (D,) of ``face`` in ``photo``."""
        facts = self.contract["align_embed"]["window"]
        image, landmarks = window(photo, face, facts["side"], facts["face_margin"])
        return self.align_embed.run([image, landmarks])[0][0]

    def largest(self, photo: np.ndarray) -> tuple[MobileFace, np.ndarray] | None:
        """The largest face and its embedding, or None."""
        faces = self.detect(photo)
        if not faces:
            return None
        face = max(faces, key=lambda f: f.area)
        return face, self.embed(photo, face)

    def threshold(self, far: float = 1e-3) -> float | None:
        """The threshold calibrated at ``far`` with this file's flip setting, from the metadata, or None."""
        flip = self.contract["align_embed"]["flip"]
        for entry in self.metadata.get("thresholds") or []:
            if bool(entry.get("flip", True)) == flip and math.isclose(entry.get("far", -1), far, rel_tol=1e-6):
                return float(entry["threshold"])
        return None
