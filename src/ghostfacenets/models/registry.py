"""One registry of every GhostFaceNet variant and of the pretrained weights, named as in the paper (lower case)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from ..data.transforms import ARCFACE_TEMPLATE, INPUT_SIZE, PIXEL_MEAN, PIXEL_STD
from ..errors import GhostFaceNetsError, ModelFileError
from .ghostfacenet import GhostFaceNet, GhostFaceNetConfig, build_model

VERSIONS = (1, 2)
WIDTHS = (0.5, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 2.0)
STEM_STRIDES = (1, 2)
NON_COMMERCIAL = (
    "Weights trained on MS1M (MS-Celeb-1M derived) data: for non-commercial research only. "
    "The ghostfacenets code is MIT-licensed; the training data's terms bind the weights."
)


def architecture_name(version: int, width: float, stem_stride: int) -> str:
    """``ghostfacenetv1-1.3-1`` for V1, width 1.3, stem stride 1."""
    return f"ghostfacenetv{version}-{width:g}-{stem_stride}"


ARCHITECTURES: dict[str, GhostFaceNetConfig] = {
    architecture_name(v, w, s): GhostFaceNetConfig(version=v, width=w, stem_stride=s)
    for v in VERSIONS
    for w in WIDTHS
    for s in STEM_STRIDES
}


def default_preprocessing() -> dict[str, Any]:
    """What every GhostFaceNet expects: 112x112 RGB, (pixel - 127.5) / 128, ArcFace five-point alignment."""
    return {
        "input_size": [INPUT_SIZE, INPUT_SIZE],
        "color_order": "RGB",
        "layout": "NCHW",
        "normalization": {"mean": PIXEL_MEAN, "std": PIXEL_STD, "formula": "(pixel - 127.5) / 128"},
        "alignment": {
            "method": "similarity transform of 5 landmarks (eyes, nose, mouth corners)",
            "template": ARCFACE_TEMPLATE.tolist(),
        },
        "flip_test_time_augmentation": True,
    }


@dataclass(frozen=True)
class PretrainedWeights:
    """A released weight file with where it comes from, how to check it, and what it may be used for."""

    name: str
    architecture: str
    overrides: dict[str, Any]
    url: str
    filename: str
    size: int
    sha256: str
    training_data: str
    loss: str
    license: str
    reported_accuracy: dict[str, float]
    notes: str = ""
    thresholds: list[dict[str, Any]] = field(default_factory=list)

    def metadata(self) -> dict[str, Any]:
        """The metadata record stored with the converted weights."""
        record = asdict(self)
        return {
            "architecture": self.architecture,
            "config": self.config().to_dict(),
            "preprocessing": default_preprocessing(),
            "source": {
                "name": self.name,
                "url": self.url,
                "filename": self.filename,
                "size": self.size,
                "sha256": self.sha256,
                "format": "keras-h5",
            },
            **{k: record[k] for k in ("training_data", "loss", "license", "reported_accuracy", "notes", "thresholds")},
        }

    def config(self) -> GhostFaceNetConfig:
        return GhostFaceNetConfig(**{**ARCHITECTURES[self.architecture].to_dict(), **self.overrides})


PRETRAINED: dict[str, PretrainedWeights] = {
    w.name: w
    for w in [
        PretrainedWeights(
            name="ghostfacenetv1-1.3-1.ms1mv3-arcface",
            architecture="ghostfacenetv1-1.3-1",
            overrides={"gdc_bias": True},
            url="https://github.com/HamadYA/GhostFaceNets/releases/download/v1.2/GhostFaceNet_W1.3_S1_ArcFace.h5",
            filename="GhostFaceNet_W1.3_S1_ArcFace.h5",
            size=17_271_840,
            sha256="e4182ca2470dac3eb79974f4d5d54f2abdf66d7e231c6f3df4059a90bded1271",
            training_data="MS1MV3 (ms1m-retinaface-t1)",
            loss="ArcFace (m=0.5, scale 32 then 64)",
            license=NON_COMMERCIAL,
            reported_accuracy={
                "lfw": 99.73,
                "cfp_fp": 96.83,
                "agedb_30": 98.00,
                "ijbb_tar_at_far_1e-4": 93.12,
                "ijbc_tar_at_far_1e-4": 94.94,
            },
            notes="Official GhostFaceNets release v1.2 (Alansari et al., IEEE Access 2023); accuracies as the "
            "authors report them (flip TTA, best threshold on the whole set), not measured here.",
        )
    ]
}


def list_models(pretrained: bool = False, pattern: str | None = None) -> list[str]:
    """Architecture names (or, with ``pretrained=True``, pretrained weight names), optionally filtered by a regex."""
    names = list(PRETRAINED if pretrained else ARCHITECTURES)
    try:
        regex = re.compile(pattern or "")
    except re.error as exc:
        raise GhostFaceNetsError(f"bad filter regular expression {pattern!r}: {exc}") from None
    return [n for n in names if regex.search(n)]


def create_model(name: str, **overrides: Any) -> GhostFaceNet:
    """A freshly initialised model of a registered architecture; ``overrides`` change config fields
    (``embedding_size``, ``gdc_bias``, ``dropout``, ``input_size``, ``bn_eps``)."""
    if name not in ARCHITECTURES:
        hint = " (pretrained weights load with ghostfacenets.load_model)" if name in PRETRAINED else ""
        raise ModelFileError(f"unknown architecture {name!r}{hint}; see ghostfacenets.list_models()")
    fixed = {"version", "width", "stem_stride"} & overrides.keys()
    if fixed:
        raise ModelFileError(f"{sorted(fixed)} are fixed by the name {name!r}; choose another name instead")
    try:
        config = GhostFaceNetConfig(**{**ARCHITECTURES[name].to_dict(), **overrides})
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"bad override for {name}: {exc}") from None
    return build_model(config)
