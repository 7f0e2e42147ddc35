"""Evaluation: verification metrics, ``.bin`` sets, identity folders, pairs files, IJB-B/C, MegaFace, RFW, per-group
fairness, and embedding sharded over ``torchrun`` processes.

Public names are imported lazily (``from ghostfacenets.evaluate import evaluate_bin``).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "verification_metrics": "ghostfacenets.evaluate.metrics",
    "roc_curve": "ghostfacenets.evaluate.metrics",
    "threshold_at_far": "ghostfacenets.evaluate.metrics",
    "evaluate_bin": "ghostfacenets.evaluate.verification",
    "evaluate_folder": "ghostfacenets.evaluate.pairs",
    "make_pairs": "ghostfacenets.evaluate.pairs",
    "evaluate_ijb": "ghostfacenets.evaluate.ijb",
    "evaluate_megaface": "ghostfacenets.evaluate.megaface",
    "evaluate_rfw": "ghostfacenets.evaluate.rfw",
    "read_pairs_set": "ghostfacenets.evaluate.fairness",
    "read_grouped_folder": "ghostfacenets.evaluate.fairness",
    "embed_job": "ghostfacenets.evaluate.distributed",
    "embed_job_sharded": "ghostfacenets.evaluate.distributed",
    "compare_embedders": "ghostfacenets.evaluate.agreement",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ghostfacenets.evaluate' has no attribute {name!r}")
