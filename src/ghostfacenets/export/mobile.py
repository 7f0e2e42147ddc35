"""What the on-device exports (LiteRT, ExecuTorch) share: their metadata, the check of int8 calibration faces and
the cache of conversions."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import GhostFaceNetsError
from ..models.ghostfacenet import GhostFaceNet

# Calibration runs the observed model on batches of this many faces.
CALIBRATION_BATCH = 32
# Files of one kind (one stem in one folder) that the package cache keeps, the most recently written.
CACHE_KEPT = 16
_CONVERTING = threading.Lock()


def cached_conversion(
    folder: str, stem: str, key: list[Any], build: Callable[[], bytes], weights: torch.nn.Module | None = None
) -> Path:
    """The file that ``build`` makes, kept in the package cache (``GHOSTFACENETS_HOME/folder``) under a hash of
    ``key``, ``weights``' tensors and the torch and package versions: converting takes tens of seconds, loading
    milliseconds. ``stem`` names the file (its suffix included) before the hash; the :data:`CACHE_KEPT` newest files
    of a stem stay. Threads asking at once wait for one conversion."""
    from .. import __version__
    from ..files import atomic_write
    from ..hub import cache_dir
    from ..model_io import weights_fingerprint

    fingerprint = weights_fingerprint(weights) if weights is not None else None
    digest = hashlib.sha256(json.dumps([*key, fingerprint, __version__, torch.__version__], sort_keys=True).encode())
    name, _, suffix = stem.partition(".")
    path = cache_dir() / folder / f"{name}-{digest.hexdigest()[:32]}.{suffix}"
    with _CONVERTING:
        if not path.is_file():
            data = build()
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(path, "wb") as f:
                f.write(data)
            kind = sorted(path.parent.glob(f"{name}-*.{suffix}"), key=lambda p: p.stat().st_mtime, reverse=True)
            for old in kind[CACHE_KEPT:]:  # the least recently written
                old.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def progress_to_stderr() -> Iterator[None]:
    """The converters' progress lines (litert-torch prints them to stdout) on stderr, so that stdout stays clean for
    ``--json`` reports."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


# Loggers whose import-time warnings concern torchao's own packaging, not an export: its CUDA-only kernels failing to
# load on a machine without them ("Failed to load ..._C_mxfp8.so"), and torch deprecating how torchao registers its
# enums. A user reads "Failed to load" as a broken install.
_IMPORT_NOISE = ("torchao", "torch.utils._pytree")


def import_quietly(module: str) -> Any:
    """``importlib.import_module(module)`` with the warnings of :data:`_IMPORT_NOISE` below ERROR held back while
    it imports (the converters import torchao); errors still show."""
    loggers = [logging.getLogger(name) for name in _IMPORT_NOISE]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        return importlib.import_module(module)
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@contextlib.contextmanager
def quiet_lowering() -> Iterator[None]:
    """Exporting without torch's deprecation of ``isinstance(treespec, LeafSpec)``, which the exporters' own copies
    of pytree specs trigger once per copied node (dozens of lines on a first run); nothing else is hidden. Also a
    decorator."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r".*isinstance\(treespec, LeafSpec\)", FutureWarning)
        yield


def check_calibration(calibration: np.ndarray, size: int) -> np.ndarray:
    """uint8 RGB aligned crops (N, size, size, 3), N > 0, or a one-line error."""
    if (
        not isinstance(calibration, np.ndarray)
        or calibration.dtype != np.uint8
        or calibration.ndim != 4
        or calibration.shape[1:] != (size, size, 3)
        or len(calibration) == 0
    ):
        shape = getattr(calibration, "shape", None)
        raise GhostFaceNetsError(
            f"calibration faces must be uint8 RGB crops (N, {size}, {size}, 3) with N > 0, got "
            f"{getattr(calibration, 'dtype', type(calibration).__name__)} {shape}"
        )
    return calibration


def mobile_metadata(
    model: GhostFaceNet,
    runtime: str,
    precision: str,
    layout: str,
    input_facts: dict[str, Any],
    output_facts: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """The model's own metadata (architecture, source, licence, preprocessing...) plus, under ``runtime``, the facts
    a mobile developer needs to feed the file: input layout, shape, dtype (and int8 scale / zero point), output."""
    from .. import __version__
    from ..model_io import model_metadata

    meta = model_metadata(model)
    for key in ("format", "format_version"):  # those describe the package's safetensors files
        meta.pop(key, None)
    meta["preprocessing"] = {**meta.get("preprocessing", {}), "layout": layout}
    meta["embedding_size"] = model.config.embedding_size
    meta[runtime] = {
        "precision": precision,
        "input": {**input_facts, "layout": layout, "content": "aligned face crop, RGB, (pixel - 127.5) / 128"},
        "output": {**output_facts, "content": "raw embedding, not L2-normalised; compare with cosine similarity"},
        "exported_by": f"ghostfacenets {__version__} (torch {torch.__version__})",
        **extra,
    }
    return meta
