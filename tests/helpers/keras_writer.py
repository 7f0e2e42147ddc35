"""Test helper: write a PyTorch GhostFaceNet as an official-layout Keras h5 (the converter's inverse).

V1 layers get Keras auto-names in the official creation order, starting at arbitrary suffix offsets; V2 layers get
kecam's explicit names. ``layer_names`` is shuffled, since real files list layers topologically, not by creation.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import h5py
import numpy as np
from torch import nn

from ghostfacenets.convert.keras_h5 import HEAD_LAYERS, _v2_names
from ghostfacenets.models.ghostfacenet import GhostFaceNet


def _keras_variables(module: nn.Module) -> dict[str, np.ndarray]:
    state = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
    if isinstance(module, nn.Conv2d):
        depthwise = module.groups > 1 and module.groups == module.in_channels
        out = (
            {"depthwise_kernel": state["weight"].transpose(2, 3, 0, 1)}
            if depthwise
            else {"kernel": state["weight"].transpose(2, 3, 1, 0)}
        )
        if "bias" in state:
            out["bias"] = state["bias"]
        return out
    if isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
        return {
            "gamma": state["weight"],
            "beta": state["bias"],
            "moving_mean": state["running_mean"],
            "moving_variance": state["running_var"],
        }
    if isinstance(module, nn.PReLU):
        return {"alpha": state["weight"].reshape(1, 1, -1)}
    raise TypeError(type(module))


def keras_layers(model: GhostFaceNet, offsets: tuple[int, int, int, int] = (7, 3, 11, 5)) -> dict[str, nn.Module]:
    """Keras layer name -> module, in creation order."""
    modules = dict(model.named_modules())
    layers = {name: modules[path] for name, path in HEAD_LAYERS.items()}
    if model.config.version == 2:
        layers.update({keras: modules[path] for path, keras in _v2_names(model).items()})
        return layers
    counters = dict(zip(("conv2d", "depthwise_conv2d", "batch_normalization", "activation"), offsets))
    for path, module in model.named_modules():
        if path.startswith("head"):
            continue
        if isinstance(module, nn.Conv2d):
            prefix = "depthwise_conv2d" if module.groups > 1 and module.groups == module.in_channels else "conv2d"
        elif isinstance(module, nn.BatchNorm2d):
            prefix = "batch_normalization"
        elif isinstance(module, nn.PReLU):
            prefix = "activation"
        else:
            continue
        n = counters[prefix]
        counters[prefix] += 1 if prefix != "activation" else 2  # hard-sigmoid activations share the counter
        layers[f"{prefix}_{n}" if n else prefix] = module
    return layers


def write_keras_h5(
    model: GhostFaceNet, path: Path, whole_model: bool = True, seed: int = 0, policy: str | None = None
) -> Path:
    """Write ``model`` as Keras would save it: whole model (with a minimal model_config) or weights only."""
    layers = keras_layers(model)
    names = list(layers) + ["input_1", "GDC_flatten", "embedding"]
    random.Random(seed).shuffle(names)
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if whole_model else f
        for target in {root, f}:
            target.attrs["keras_version"] = "2.15.0"
            target.attrs["backend"] = "tensorflow"
        root.attrs["layer_names"] = [n.encode() for n in names]
        for name in names:
            group = root.create_group(name)
            variables = _keras_variables(layers[name]) if name in layers else {}
            weight_names = [f"{name}/{var}:0" for var in variables]
            group.attrs["weight_names"] = [w.encode() for w in weight_names]
            for weight_name, array in zip(weight_names, variables.values()):
                group.create_dataset(weight_name, data=array)
        if whole_model:
            f.attrs["model_config"] = json.dumps(_model_config(model, layers, policy))
    return path


def _model_config(model: GhostFaceNet, layers: dict[str, nn.Module], policy: str | None) -> dict:
    dtype = {"module": "keras", "class_name": "Policy", "config": {"name": policy}} if policy else "float32"
    size = model.config.input_size
    config_layers = [
        {
            "class_name": "InputLayer",
            "name": "input_1",
            "config": {"name": "input_1", "batch_input_shape": [None, size, size, 3], "dtype": "float32"},
        }
    ]
    for name, module in layers.items():
        config: dict = {"name": name, "dtype": dtype}
        if isinstance(module, nn.Conv2d):
            depthwise = module.groups > 1 and module.groups == module.in_channels
            cls = "DepthwiseConv2D" if depthwise else "Conv2D"
            config["strides"] = list(module.stride)
        elif isinstance(module, nn.PReLU):
            cls = "PReLU"
        else:
            cls = "BatchNormalization"
            config.update(epsilon=module.eps, momentum=0.9)
        config_layers.append({"class_name": cls, "name": name, "config": config})
    return {"class_name": "Functional", "config": {"name": "GhostNet", "layers": config_layers}}
