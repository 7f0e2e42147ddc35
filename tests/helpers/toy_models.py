"""Tiny stand-ins for face models: average colours of a 4x4 grid, as a torch module and as a hand-built ONNX graph."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from tests.helpers import require_module


def pooled_colour_model(grid: int = 4) -> nn.Module:
    """(N, 3, H, W) -> (N, 3 * grid * grid): tells synthetic identities apart, imperfectly on real faces."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(grid), nn.Flatten())


def pooled_colour_onnx(path: Path, size: int = 112, grid: int = 4) -> Path:
    """The same function for ``size`` x ``size`` inputs as an ONNX file (input "input", output "embedding")."""
    onnx = require_module("onnx")
    from onnx import TensorProto, helper

    cell = size // grid
    nodes = [
        helper.make_node("AveragePool", ["input"], ["pooled"], kernel_shape=[cell, cell], strides=[cell, cell]),
        helper.make_node("Flatten", ["pooled"], ["embedding"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "pooled_colour",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 3 * grid * grid])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path
