"""Typed training configuration: dataclasses loaded from YAML, with dotted ``key=value`` overrides.

``load_config("quickstart-cpu", ["train.epochs=2", "data.val=[a.bin,b.bin]"])``: the config is a YAML file or the
name of a config shipped in the package (``ghostfacenets/configs/NAME.yaml``: the paper's recipes and the
quickstart); values of overrides are parsed as YAML (``null``, numbers, lists), then every field is checked against
its declared type; unknown keys are errors. A value ``???`` is a placeholder that must be given before training
(the shipped recipes leave their data paths so). Relative paths are taken from the working directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..data.datasets import Augmentation, parse_synthetic
from ..data.images import ResizeMode
from ..errors import GhostFaceNetsError
from ..losses.margins import Fallback, margin_from_name

MISSING = "???"  # a value the config leaves to be given (the mark OmegaConf and Hydra use)
PLACEHOLDER_EXAMPLES = {
    "data.train": "data.train=/data/faces_emore",
    "data.val": "'data.val=[/data/faces_emore/lfw.bin,/data/faces_emore/cfp_fp.bin,/data/faces_emore/agedb_30.bin]'",
}
SHIPPED_SUFFIX = ".yaml"


class ConfigError(GhostFaceNetsError):
    """A configuration file or override that does not fit the schema."""


@dataclass
class ModelSection:
    """The network: a registered architecture name and the config fields it allows to change."""

    architecture: str = "ghostfacenetv1-1.3-2"
    embedding_size: int = 512
    gdc_bias: bool = False
    dropout: float = 0.0
    input_size: int = 112
    init: str | None = None  # start from these weights (a model file or pretrained name) instead of from scratch


@dataclass
class DataSection:
    """Where the images come from. ``train``: identity folder, RecordIO folder / ``.rec``, or
    ``synthetic[:IMAGES[:CLASSES]]``."""

    train: str = ""
    train_identities: list[str] | None = None  # shell patterns of sub-folders to train on (identity folders)
    num_classes: int | None = None  # only used for RecordIO sets without 'property' or header record
    val: list[str] = field(default_factory=list)  # .bin files, or identity folders (pairs are written to a .bin)
    val_identities: list[str] | None = None  # sub-folders of folder validation sets
    val_pairs: int | None = 6000  # pairs drawn from folder validation sets (half same); null: every pair
    val_flip: bool = True
    resize: ResizeMode = "pad"  # images not at the input size: pad (keep aspect, black borders) or resize (stretch)
    workers: int = 4
    augment: Augmentation = field(default_factory=Augmentation)


@dataclass
class LossSection:
    """Margin softmax over normalised class centres (Partial FC)."""

    type: str = "arcface"  # arcface | cosface | subcenter | combined
    margin: float | None = None  # null: 0.5 (arcface, subcenter) or 0.35 (cosface); not for combined
    m1: float = 1.0  # combined only: cos(m1 * theta + m2) - m3
    m2: float = 0.5
    m3: float = 0.0
    fallback: Fallback = "official"
    subcenters: int | None = None  # null: 3 for subcenter, 1 otherwise
    scale: list[tuple[float, float]] = field(default_factory=lambda: [(0.0, 32.0), (1.0, 64.0)])  # (epoch, scale)
    sample_rate: float = 1.0

    @property
    def subcenter_count(self) -> int:
        """``subcenters``, or its default: 3 for ``subcenter``, 1 for the other types."""
        return self.subcenters or (3 if self.type == "subcenter" else 1)


@dataclass
class OptimSection:
    """SGD with weight decay on conv, linear and class-centre weights only; the learning-rate schedule."""

    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "official"  # official | cosine | poly | constant
    lr_min: float = 1e-5
    restart_epochs: float = 45.0  # official: first cosine period
    restart_t_mul: float = 2.0
    restart_m_mul: float = 0.5
    cooldown_epochs: float = 1.0  # official: epochs at lr_min after each period
    warmup_epochs: float = 0.0
    warmup_lr: float = 0.0  # learning rate at the start of the warm-up
    power: float = 2.0  # poly decay exponent


@dataclass
class TrainSection:
    epochs: int = 51
    max_steps: int | None = None  # stop after this many optimiser steps (the schedule still spans train.epochs)
    batch_size: int = 128  # global batch per optimiser step, over all processes and accumulation steps
    accumulation: int = 1
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "auto"  # auto (bf16 on CUDA, none on CPU) | bf16 | fp16 | none
    channels_last: bool = True  # NHWC memory layout: faster on GPUs and (measured) on CPU
    compile: bool = False
    clip_grad_norm: float | None = None
    log_every: int = 50
    val_every: int | None = None  # optimiser steps; null: every epoch
    checkpoint_every: int | None = None  # optimiser steps; null: every epoch
    keep_checkpoints: int = 2  # the newest checkpoints kept; 0: all
    best_metric: str = "mean"  # validation set name (file stem) whose accuracy picks best.safetensors, or mean
    best_key: str = "accuracy_10fold_mean"
    resume: str = "auto"  # auto (latest checkpoint in output, if any) | none | a checkpoint folder
    tensorboard: bool = True
    progress: bool = True


@dataclass
class TrainConfig:
    description: str = ""  # what the config trains and reproduces, one line (listed by ``ghostfacenets configs``)
    output: str = "runs/train"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    loss: LossSection = field(default_factory=LossSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """``value`` checked (and converted where lossless: int -> float, list -> tuple) against a type hint; the
    placeholder ``???`` fits every type (:func:`missing_values` finds it)."""
    if isinstance(value, str) and value == MISSING:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is typing.Literal:
        _choice(value, args, key)
        return value
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(typing.cast(type, hint), value, key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} values, got {value!r}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if hint in (int, bool, str) and type(value) is hint:
        return value
    raise ConfigError(f"{key}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        where = prefix or "top level"
        raise ConfigError(
            f"unknown key(s) {', '.join(f'{prefix}.{k}'.lstrip('.') for k in unknown)} ({where} "
            f"has: {', '.join(sorted(known))})"
        )
    kwargs = {name: _coerce(value, hints[name], f"{prefix}.{name}".lstrip(".")) for name, value in values.items()}
    return cls(**kwargs)


def apply_override(tree: dict[str, Any], override: str) -> None:
    """Set ``a.b.c=value`` (value parsed as YAML) in a nested dict."""
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {override!r}: expected key=value, e.g. train.epochs=2")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {override!r}: value is not valid YAML ({exc})") from None
    node = tree
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {override!r}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def config_from_dict(tree: dict[str, Any], allow_missing: bool = False) -> TrainConfig:
    """A checked configuration from nested values. With ``allow_missing`` a config with placeholders (``???``) is
    returned unchecked beyond the types (to show it); otherwise placeholders are an error naming the keys to give."""
    config = _build(TrainConfig, tree)
    if not (allow_missing and missing_values(config)):
        validate(config)
    return config


def missing_values(config: TrainConfig) -> list[str]:
    """The dotted keys whose value is the placeholder ``???`` (alone or in a list), in config order."""
    found: list[str] = []

    def walk(node: Any, key: str) -> None:
        if isinstance(node, dict):
            for name, value in node.items():
                walk(value, f"{key}.{name}".lstrip("."))
        elif node == MISSING or (isinstance(node, list) and MISSING in node):
            found.append(key)

    walk(config.to_dict(), "")
    return found


def missing_message(keys: list[str]) -> str:
    """One line saying which placeholders to give, with an example of each."""
    examples = " ".join(PLACEHOLDER_EXAMPLES.get(key, f"{key}=VALUE") for key in keys)
    return (
        f"{', '.join(keys)} must be given (the config leaves {'them' if len(keys) > 1 else 'it'} as {MISSING}): "
        f"add {examples} (your copies; relative paths are taken from the working directory)"
    )


def _shipped_root() -> Any:
    return resources.files("ghostfacenets").joinpath("configs")


def shipped_config_names() -> list[str]:
    """Names of the configs shipped in the package (``ghostfacenets configs``), sorted."""
    return sorted(
        entry.name.removesuffix(SHIPPED_SUFFIX)
        for entry in _shipped_root().iterdir()
        if entry.name.endswith(SHIPPED_SUFFIX)
    )


def shipped_config_text(name: str) -> str:
    """The YAML text (comments included) of the shipped config ``name``."""
    names = shipped_config_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise ConfigError(f"{name}: no shipped config of that name (ghostfacenets configs lists them){hint}")
    return str(_shipped_root().joinpath(name + SHIPPED_SUFFIX).read_text(encoding="utf-8"))


def read_config_source(source: str | Path) -> str:
    """The YAML text of ``source``: a config file (an existing path is always a file) or a shipped config's name."""
    path = Path(source)
    if path.is_file():
        return path.read_text(encoding="utf-8")
    names = shipped_config_names()
    if str(source) in names:
        return shipped_config_text(str(source))
    stem = path.name.removesuffix(SHIPPED_SUFFIX)
    if stem in names:
        hint = f"; the shipped config of that name is used by name: -c {stem}"
    else:
        close = difflib.get_close_matches(str(source), names, n=3)
        hint = f"; did you mean {' or '.join(close)}?" if close else " (ghostfacenets configs lists the shipped ones)"
    raise ConfigError(f"{source}: no such config file, nor the name of a shipped config{hint}")


def load_config(
    source: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), allow_missing: bool = False
) -> TrainConfig:
    """A checked configuration from a YAML file or shipped config name (or the defaults) and dotted overrides.

    Relative data and output paths are relative to the working directory, as on the command line. Placeholders
    (``???``) left after the overrides are an error unless ``allow_missing`` (see :func:`config_from_dict`).
    """
    tree: dict[str, Any] = {}
    if source is not None:
        try:
            tree = yaml.safe_load(read_config_source(source)) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML ({exc})") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{source}: expected a mapping of sections at the top level")
    for override in overrides:
        apply_override(tree, override)
    return config_from_dict(tree, allow_missing)


def _choice(value: Any, options: tuple[Any, ...], key: str) -> None:
    if value not in options:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(options)}")


def validate(config: TrainConfig) -> None:
    """Placeholders left, then cross-field checks, with messages that say what to change."""
    missing = missing_values(config)
    if missing:
        raise ConfigError(missing_message(missing))
    _choice(config.loss.type, ("arcface", "cosface", "subcenter", "combined"), "loss.type")
    _choice(config.loss.fallback, typing.get_args(Fallback), "loss.fallback")
    _choice(config.optim.schedule, ("official", "cosine", "poly", "constant"), "optim.schedule")
    _choice(config.train.amp, ("auto", "bf16", "fp16", "none"), "train.amp")
    _choice(config.data.resize, typing.get_args(ResizeMode), "data.resize")
    positive = {
        "train.epochs": config.train.epochs,
        "train.batch_size": config.train.batch_size,
        "train.accumulation": config.train.accumulation,
        "train.log_every": config.train.log_every,
        "optim.lr": config.optim.lr,
        "optim.restart_epochs": config.optim.restart_epochs,
    }
    for key, value in positive.items():
        if not value > 0:
            raise ConfigError(f"{key} must be positive, got {value}")
    optim = config.optim
    non_negative = {
        "optim.lr_min": optim.lr_min,
        "optim.warmup_epochs": optim.warmup_epochs,
        "optim.warmup_lr": optim.warmup_lr,
        "optim.cooldown_epochs": optim.cooldown_epochs,
    }
    for key, value in non_negative.items():
        if not value >= 0:
            raise ConfigError(f"{key} must be 0 or more, got {value}")
    if not optim.restart_t_mul >= 1:
        raise ConfigError(
            f"optim.restart_t_mul must be at least 1 (each cosine period as long as the one before "
            f"or longer), got {optim.restart_t_mul}"
        )
    for key in ("max_steps", "val_every", "checkpoint_every"):
        value = getattr(config.train, key)
        if value is not None and value < 1:
            raise ConfigError(f"train.{key} must be at least 1 or null, got {value}")
    if not 0 < config.loss.sample_rate <= 1:
        raise ConfigError(f"loss.sample_rate must be in (0, 1], got {config.loss.sample_rate}")
    if config.loss.subcenters is not None and config.loss.subcenters < 1:
        raise ConfigError(f"loss.subcenters must be at least 1, got {config.loss.subcenters}")
    loss = config.loss
    if loss.type == "combined" and loss.margin is not None:
        raise ConfigError("loss.margin does not apply to loss.type=combined: set loss.m1, loss.m2 and loss.m3")
    if loss.type != "combined" and (loss.m1, loss.m2, loss.m3) != (1.0, 0.5, 0.0):
        raise ConfigError(
            f"loss.m1, loss.m2 and loss.m3 apply to loss.type=combined only: set loss.margin for {loss.type}"
        )
    try:
        margin_from_name(loss.type, loss.margin, loss.m1, loss.m2, loss.m3, loss.fallback)
    except ValueError as exc:
        raise ConfigError(f"loss: {exc}") from None
    if not config.data.train:
        raise ConfigError(
            "data.train is not set: give an identity folder, a RecordIO folder or synthetic:N:C "
            "(e.g. data.train=/data/faces_emore)"
        )
    try:
        parse_synthetic(config.data.train)
    except GhostFaceNetsError as exc:
        raise ConfigError(f"data.train: {exc}") from None
    if config.data.workers < 0:
        raise ConfigError(f"data.workers must be 0 or more, got {config.data.workers}")
