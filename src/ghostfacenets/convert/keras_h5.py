"""Read official GhostFaceNets Keras ``.h5`` files (whole model or weights only) with h5py alone, no TensorFlow.

The architecture (version, width, stem stride, GDC bias, embedding size, BN epsilon, input size) is read from the file:
the model config JSON where present, the weight shapes otherwise. V2 layers are paired by their explicit names, V1's
auto-named layers by class and creation order (the numeric suffix), as spec 5.1 and 5.2 describe.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConversionError
from ..models.ghostfacenet import GhostFaceNet, GhostFaceNetConfig, build_model
from ..models.registry import WIDTHS

HEAD_LAYERS = {
    "GDC_dw": "head.dw",
    "GDC_batchnorm": "head.bn",
    "GDC_conv": "head.conv",
    "pre_embedding": "head.bn_embedding",
}
_BN_VARS = ("gamma", "beta", "moving_mean", "moving_variance")


@dataclass
class KerasFile:
    """The weights of a Keras h5 file by layer, and the layer configs where the file has a model config."""

    weights: dict[str, dict[str, np.ndarray]]
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    input_shape: tuple[int, ...] | None = None
    keras_version: str | None = None

    def kind(self, layer: str) -> str:
        """Layer class from its variables: conv, dwconv, dense, bn, prelu or other."""
        variables = self.weights[layer]
        if "depthwise_kernel" in variables:
            return "dwconv"
        if "kernel" in variables:
            return "conv" if variables["kernel"].ndim == 4 else "dense"
        if "moving_mean" in variables:
            return "bn"
        if "alpha" in variables:
            return "prelu"
        return "other"


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_keras_h5(path: str | Path) -> KerasFile:
    """Parse a Keras 2 HDF5 file saved by ``model.save`` or ``model.save_weights``."""
    import h5py

    path = Path(path)
    try:
        handle = h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise ConversionError(f"{path}: not a readable HDF5 file ({exc})") from None
    with handle as f:
        try:
            root = f.get("model_weights", f)
            if "layer_names" not in root.attrs:
                raise ConversionError(
                    f"{path}: no Keras 'layer_names' attribute; not a Keras 2 h5 model or weights file"
                )
            weights: dict[str, dict[str, np.ndarray]] = {}
            for group_name in (_text(n) for n in root.attrs["layer_names"]):
                if group_name not in root:
                    raise ConversionError(f"{path}: layer {group_name!r} is listed but absent (a damaged file?)")
                group = root[group_name]
                for weight_name in (_text(n) for n in group.attrs.get("weight_names", [])):
                    parts = weight_name.split("/")
                    owner = parts[-2] if len(parts) > 1 else group_name
                    variable = re.sub(r"(_\d+)?:\d+$", "", parts[-1])
                    weights.setdefault(owner, {})[variable] = np.asarray(group[weight_name], dtype=np.float32)
            configs: dict[str, dict[str, Any]] = {}
            input_shape = None
            raw = f.attrs.get("model_config")
            if raw is not None:
                configs, input_shape = _flatten_config(json.loads(_text(raw)))
            version = f.attrs.get("keras_version", root.attrs.get("keras_version"))
        except (KeyError, ValueError, TypeError, AttributeError, OSError) as exc:
            raise ConversionError(f"{path}: damaged or unsupported Keras file ({type(exc).__name__}: {exc})") from None
    if not weights:
        raise ConversionError(f"{path}: the file holds no weights")
    return KerasFile(weights, configs, input_shape, _text(version) if version is not None else None)


def _flatten_config(model_config: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], tuple[int, ...] | None]:
    """Layer configs by name, nested models included, and the first input shape."""
    configs: dict[str, dict[str, Any]] = {}
    input_shape = None
    stack = [model_config]
    while stack:
        item = stack.pop()
        for layer in item.get("config", {}).get("layers", []):
            config = layer.get("config", {})
            name = config.get("name", layer.get("name"))
            configs[name] = {"class_name": layer.get("class_name"), **config}
            shape = config.get("batch_input_shape") or config.get("batch_shape")
            if layer.get("class_name") == "InputLayer" and shape and input_shape is None:
                input_shape = tuple(shape)
            if "layers" in config:
                stack.append(layer)
    return configs, input_shape


def _suffix(name: str) -> int:
    match = re.search(r"_(\d+)$", name)
    return int(match.group(1)) if match else 0


def _torch_layers_v1(model: GhostFaceNet) -> dict[str, list[tuple[str, nn.Module]]]:
    """Backbone modules of a V1 model by kind, in the official creation order (= registration order)."""
    groups: dict[str, list[tuple[str, nn.Module]]] = {"conv": [], "dwconv": [], "bn": [], "prelu": []}
    for name, module in model.named_modules():
        if name.startswith("head"):
            continue
        if isinstance(module, nn.Conv2d):
            depthwise = module.groups > 1 and module.groups == module.in_channels
            groups["dwconv" if depthwise else "conv"].append((name, module))
        elif isinstance(module, nn.BatchNorm2d):
            groups["bn"].append((name, module))
        elif isinstance(module, nn.PReLU):
            groups["prelu"].append((name, module))
    return groups


def _v2_names(model: GhostFaceNet) -> dict[str, str]:
    """torch module path -> kecam layer name for GhostFaceNetV2."""
    names = {
        "stem.0": "stem_conv",
        "stem.1": "stem_bn",
        "stem.2": "stem_prelu",
        "final.0": "pre_conv",
        "final.1": "pre_bn",
        "final.2": "pre_prelu",
    }
    ghost = {
        "primary_conv": "prim_conv",
        "primary_bn": "prim_bn",
        "primary_act": "prim_prelu",
        "cheap_conv": "cheap_dw_conv",
        "cheap_bn": "cheap_bn",
        "cheap_act": "cheap_prelu",
        "dfc.conv": "short_1_conv",
        "dfc.bn": "short_1_bn",
        "dfc.conv_h": "short_2_dw_conv",
        "dfc.bn_h": "short_2_bn",
        "dfc.conv_v": "short_3_dw_conv",
        "dfc.bn_v": "short_3_bn",
    }
    block = {
        "down_conv": "down_dw_conv",
        "down_bn": "down_bn",
        "se.reduce": "se_1_conv",
        "se.act": "se_prelu",
        "se.expand": "se_2_conv",
        "shortcut.0": "short_1_dw_conv",
        "shortcut.1": "short_1_bn",
        "shortcut.2": "short_2_conv",
        "shortcut.3": "short_2_bn",
    }
    for prefix in ("ghost1", "ghost2"):
        for torch_name, keras_name in ghost.items():
            block[f"{prefix}.{torch_name}"] = f"ghost_{prefix[-1]}_{keras_name}"
    modules = dict(model.named_modules())
    for i in range(len(model.blocks)):
        for torch_name, keras_name in block.items():
            path = f"blocks.{i}.{torch_name}"
            if path in modules and not isinstance(modules[path], nn.Identity):
                names[path] = f"stack{i + 1}_{keras_name}"
    return names


def _weighted(module: nn.Module) -> bool:
    return isinstance(module, (nn.Conv2d, nn.BatchNorm2d, nn.BatchNorm1d, nn.PReLU))


def _pairs(model: GhostFaceNet, keras: KerasFile) -> list[tuple[str, nn.Module, str]]:
    """(torch module path, module, Keras layer name) for every weighted module of the model."""
    modules = dict(model.named_modules())
    pairs = [(path, modules[path], layer) for layer, path in HEAD_LAYERS.items()]
    if model.config.version == 2:
        pairs += [(path, modules[path], layer) for path, layer in _v2_names(model).items()]
    else:
        head = set(HEAD_LAYERS)
        for kind, torch_modules in _torch_layers_v1(model).items():
            layers = sorted((n for n in keras.weights if n not in head and keras.kind(n) == kind), key=_suffix)
            if len(layers) != len(torch_modules):
                raise ConversionError(
                    f"the file has {len(layers)} {kind} layers where GhostFaceNetV1-{model.config.width:g} has "
                    f"{len(torch_modules)}"
                )
            pairs += [(path, module, layer) for (path, module), layer in zip(torch_modules, layers)]
    expected = {path for path, module in modules.items() if _weighted(module)}
    missing = expected - {path for path, _, _ in pairs}
    if missing:
        raise ConversionError(f"internal error: no Keras layer for {sorted(missing)[:5]}")
    return pairs


def _convert_tensor(module: nn.Module, layer: str, variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Keras variables of one layer -> torch state-dict entries of the module (relative names)."""
    if isinstance(module, nn.Conv2d):
        key = "depthwise_kernel" if "depthwise_kernel" in variables else "kernel"
        if key not in variables:
            raise ConversionError(f"layer {layer}: expected a convolution kernel, found {sorted(variables)}")
        kernel = variables[key]
        out = {"weight": kernel.transpose(2, 3, 0, 1) if key == "depthwise_kernel" else kernel.transpose(3, 2, 0, 1)}
        if "bias" in variables:
            out["bias"] = variables["bias"]
        return out
    if isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
        statistics = [v for v in ("moving_mean", "moving_variance") if v not in variables]
        if statistics:
            raise ConversionError(f"layer {layer}: BatchNormalization without {statistics}")
        ones = np.ones_like(variables["moving_mean"])
        # scale=False / center=False (the official pre_embedding option) mean gamma 1 / beta 0
        values = {"gamma": ones, "beta": np.zeros_like(ones), **variables}
        return dict(zip(("weight", "bias", "running_mean", "running_var"), (values[v] for v in _BN_VARS)))
    if isinstance(module, nn.PReLU):
        alpha = variables.get("alpha")
        if alpha is None or alpha.size != module.weight.numel():
            raise ConversionError(
                f"layer {layer}: expected a per-channel PReLU alpha of {module.weight.numel()} values"
            )
        return {"weight": alpha.reshape(-1)}
    raise ConversionError(f"internal error: cannot convert {type(module).__name__}")


def _state_dict(model: GhostFaceNet, keras: KerasFile) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for path, module, layer in _pairs(model, keras):
        if layer not in keras.weights:
            raise ConversionError(f"the file has no layer {layer!r} needed for {path}")
        own = {k: tuple(v.shape) for k, v in module.state_dict().items() if k != "num_batches_tracked"}
        converted = _convert_tensor(module, layer, keras.weights[layer])
        got = {k: v.shape for k, v in converted.items()}
        if got != own:
            raise ConversionError(f"layer {layer}: weights {got} do not fit {path}, which needs {own}")
        for name, array in converted.items():
            state[f"{path}.{name}"] = torch.from_numpy(np.ascontiguousarray(array))
    return state


def infer_config(keras: KerasFile) -> GhostFaceNetConfig:
    """Read the GhostFaceNet architecture a Keras file holds."""
    version = 2 if "stem_conv" in keras.weights or any(n.startswith("stack1_") for n in keras.weights) else 1
    if "GDC_conv" not in keras.weights or "GDC_dw" not in keras.weights:
        raise ConversionError("no GDC_dw/GDC_conv layers: this is not a GhostFaceNets embedding model")
    gdc = keras.weights["GDC_conv"]
    embedding_size = int(gdc["kernel"].shape[-1])
    gdc_bias = "bias" in gdc
    input_size = 112
    if keras.input_shape is not None:
        if len(keras.input_shape) != 4:
            raise ConversionError(f"unsupported input shape {keras.input_shape}; expected (N, H, H, 3)")
        _, height, input_width, channels = keras.input_shape
        if channels != 3 or height != input_width or height is None:
            raise ConversionError(f"unsupported input shape {keras.input_shape}; expected square RGB (H, H, 3)")
        input_size = int(height)
    epsilons = {c["epsilon"] for c in keras.configs.values() if c.get("class_name") == "BatchNormalization"}
    if len(epsilons) > 1:
        raise ConversionError(f"the file mixes BatchNormalization epsilons {sorted(epsilons)}; not supported")
    bn_eps = float(epsilons.pop()) if epsilons else 1e-5
    dropout = next((float(c.get("rate", 0.0)) for c in keras.configs.values() if c.get("class_name") == "Dropout"), 0.0)
    stem_name = (
        "stem_conv"
        if version == 2
        else min(
            (n for n in keras.weights if n not in HEAD_LAYERS and keras.kind(n) == "conv"), key=_suffix, default=None
        )
    )
    strides = [1, 2]
    stem_config = keras.configs.get(stem_name or "")
    if stem_config and "strides" in stem_config:
        strides = [int(stem_config["strides"][0])]
    for width in _candidate_widths():
        for stride in strides:
            try:
                config = GhostFaceNetConfig(
                    version, width, stride, embedding_size, gdc_bias, dropout, input_size, bn_eps
                )
            except ValueError:
                continue
            with torch.device("meta"):
                model = build_model(config)
            if _matches(model, keras):
                return config
    raise ConversionError(
        f"the weights match no GhostFaceNetV{version} width/stride at input size {input_size} "
        "(is this a GhostFaceNets model?)"
    )


def _candidate_widths() -> list[float]:
    grid = [round(0.05 * i, 2) for i in range(4, 81)]
    return list(WIDTHS) + [w for w in grid if w not in WIDTHS]


def _matches(model: GhostFaceNet, keras: KerasFile) -> bool:
    try:
        _state_dict(model, keras)
    except ConversionError:
        return False
    return True


def load_keras_h5(path: str | Path) -> tuple[GhostFaceNet, KerasFile]:
    """Build the GhostFaceNet a Keras h5 file describes and load its weights; returns (model in eval mode, file)."""
    keras = read_keras_h5(path)
    config = infer_config(keras)
    model = build_model(config, initialise=False)
    missing, unexpected = model.load_state_dict(_state_dict(model, keras), strict=False)
    if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
        raise ConversionError(f"internal error: unloaded weights {missing[:3]}, unexpected {unexpected[:3]}")
    return model.eval(), keras


def keras_param_count(keras: KerasFile) -> int:
    """Total number of values in the file's weights (the Keras 'total params')."""
    return sum(a.size for variables in keras.weights.values() for a in variables.values())
