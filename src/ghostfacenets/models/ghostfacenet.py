"""GhostFaceNetV1 and GhostFaceNetV2 with the modified GDC embedding head, equal to the official Keras models."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from .ghost import GhostBottleneck
from .layers import batch_norm, conv2d, make_divisible, prelu

# Base block table (spec 1.4): depthwise kernel, expansion, output channels, SE ratio, stride.
KERNELS = (3, 3, 3, 5, 5, 3, 3, 3, 3, 3, 3, 5, 5, 5, 5, 5)
EXPANSIONS = (16, 48, 72, 72, 120, 240, 200, 184, 184, 480, 672, 672, 960, 960, 960, 960)
OUTPUTS = (16, 24, 24, 40, 40, 80, 80, 80, 80, 112, 112, 160, 160, 160, 160, 160)
SE_RATIOS = (0, 0, 0, 0.25, 0.25, 0, 0, 0, 0, 0.25, 0.25, 0.25, 0, 0.25, 0, 0.25)
STRIDES = (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1)
V1_LAST_WIDTH = 512  # V1: block-16 expansion and final conv are make_divisible(512 w), not 960 w
V2_LAST_WIDTH = 960
V2_PLAIN_BLOCKS = 2  # V2: blocks 1-2 use plain ghost modules, blocks 3-16 the DFC variant


@dataclass(frozen=True)
class GhostFaceNetConfig:
    """Everything that defines a GhostFaceNet architecture."""

    version: int = 1
    width: float = 1.0
    stem_stride: int = 1
    embedding_size: int = 512
    gdc_bias: bool = False
    dropout: float = 0.0
    input_size: int = 112
    bn_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.version not in (1, 2):
            raise ValueError(f"version must be 1 or 2, got {self.version}")
        if self.stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {self.stem_stride}")
        if not self.width > 0:
            raise ValueError(f"width must be positive, got {self.width}")
        if self.embedding_size < 1:
            raise ValueError(f"embedding_size must be positive, got {self.embedding_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.input_size < 32:
            raise ValueError(f"input_size must be at least 32, got {self.input_size}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def feature_size(self) -> int:
        """Spatial size of the last feature map (= GDC kernel): 7 for stride 1 and 4 for stride 2 at 112x112."""
        size = self.input_size
        for stride in (self.stem_stride, *STRIDES):
            size = math.ceil(size / stride)
        return size

    def block_channels(self) -> list[tuple[int, int]]:
        """(expansion, output) channels of the 16 blocks after width scaling and rounding."""
        last = V1_LAST_WIDTH if self.version == 1 else V2_LAST_WIDTH
        expansions = (*EXPANSIONS[:-1], last)
        return [(make_divisible(e * self.width), make_divisible(o * self.width)) for e, o in zip(expansions, OUTPUTS)]

    @property
    def final_channels(self) -> int:
        return make_divisible((V1_LAST_WIDTH if self.version == 1 else V2_LAST_WIDTH) * self.width)


class GDCHead(nn.Module):
    """Modified global depthwise convolution head: DW(k) - BN - Dropout - 1x1 conv - flatten - BN1d."""

    def __init__(self, channels: int, kernel: int, embedding_size: int, bias: bool, dropout: float, eps: float):
        super().__init__()
        self.dw = nn.Conv2d(channels, channels, kernel, groups=channels, bias=False)
        self.bn = batch_norm(channels, eps)
        self.dropout: nn.Module = nn.Dropout(dropout)
        self.conv = nn.Conv2d(channels, embedding_size, 1, bias=bias)
        self.bn_embedding = nn.BatchNorm1d(embedding_size, eps=eps, momentum=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.dropout(self.bn(self.dw(x))))
        return self.bn_embedding(torch.flatten(x, 1))


class GhostFaceNet(nn.Module):
    """GhostFaceNet: (N, 3, H, W) RGB normalised as (pixel - 127.5) / 128 -> (N, embedding) raw embedding."""

    def __init__(self, config: GhostFaceNetConfig | None = None, **kwargs: Any) -> None:
        super().__init__()
        if config is not None and kwargs:
            raise TypeError(f"give either a config or config fields, not both (got {sorted(kwargs)})")
        config = config or GhostFaceNetConfig(**kwargs)
        self.config = config
        self.metadata: dict[str, Any] = {}  # preprocessing, source, licence... filled by load_model
        eps, tf_same = config.bn_eps, config.version == 1
        stem = make_divisible(16 * config.width)
        self.stem = nn.Sequential(
            conv2d(3, stem, 3, config.stem_stride, tf_same=tf_same), batch_norm(stem, eps), prelu(stem)
        )
        blocks, in_channels = [], stem
        for i, (exp, out) in enumerate(config.block_channels()):
            use_dfc = config.version == 2 and i >= V2_PLAIN_BLOCKS
            blocks.append(
                GhostBottleneck(
                    in_channels, exp, out, KERNELS[i], STRIDES[i], SE_RATIOS[i], use_dfc, config.version, eps
                )
            )
            in_channels = blocks[-1].ghost2.out_channels
        self.blocks = nn.Sequential(*blocks)
        final = config.final_channels
        self.final = nn.Sequential(conv2d(in_channels, final, 1), batch_norm(final, eps), prelu(final))
        self.head = GDCHead(final, config.feature_size, config.embedding_size, config.gdc_bias, config.dropout, eps)
        self.reset_parameters()

    @property
    def embedding_size(self) -> int:
        return self.config.embedding_size

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map before the GDC head."""
        return self.final(self.blocks(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """From-scratch initialisation of the official Keras code (spec 1.13), with Keras' fan definitions."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                kh, kw = module.kernel_size
                depthwise = module.groups == module.in_channels and module.groups > 1
                if module is self.head.dw:
                    _glorot_uniform(module.weight, kh * kw * module.in_channels, kh * kw)
                elif module is self.head.conv:
                    _glorot_normal(module.weight, module.in_channels, module.out_channels)
                elif depthwise and self.config.version == 2:
                    # V2's (kecam's) depthwise convs keep Keras' default glorot_uniform.
                    _glorot_uniform(module.weight, kh * kw * module.in_channels, kh * kw)
                else:
                    fan_out = kh * kw * (1 if depthwise else module.out_channels)
                    _truncated_normal(module.weight, math.sqrt(2.0 / fan_out))
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
                module.reset_parameters()
            elif isinstance(module, nn.PReLU):
                module.weight.fill_(0.25)


_TRUNCATED_STD = 0.87962566103423978  # std of a unit normal truncated at +-2, as Keras corrects for it


def _truncated_normal(weight: torch.Tensor, std: float) -> None:
    std = std / _TRUNCATED_STD
    nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)


def _glorot_uniform(weight: torch.Tensor, fan_in: int, fan_out: int) -> None:
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    nn.init.uniform_(weight, -limit, limit)


def _glorot_normal(weight: torch.Tensor, fan_in: int, fan_out: int) -> None:
    _truncated_normal(weight, math.sqrt(2.0 / (fan_in + fan_out)))


class GhostFaceNetV1(GhostFaceNet):
    """GhostFaceNetV1 (GhostNetV1 backbone): TF-same padding, Keras-2 hard-sigmoid SE, narrower last block."""

    def __init__(self, width: float = 1.0, stem_stride: int = 1, **kwargs: Any) -> None:
        super().__init__(GhostFaceNetConfig(version=1, width=width, stem_stride=stem_stride, **kwargs))


class GhostFaceNetV2(GhostFaceNet):
    """GhostFaceNetV2 (GhostNetV2 backbone): symmetric padding and DFC attention in blocks 3-16."""

    def __init__(self, width: float = 1.0, stem_stride: int = 1, **kwargs: Any) -> None:
        super().__init__(GhostFaceNetConfig(version=2, width=width, stem_stride=stem_stride, **kwargs))


def build_model(config: GhostFaceNetConfig, initialise: bool = True) -> GhostFaceNet:
    """Instantiate the right class for a configuration; ``initialise=False`` skips the random initialisation
    (uninitialised weights, for a model whose weights are loaded right after)."""
    cls = GhostFaceNetV1 if config.version == 1 else GhostFaceNetV2
    args = config.to_dict()
    del args["version"]
    if initialise:
        return cls(**args)
    with torch.device("meta"):
        model = cls(**args)
    model = model.to_empty(device="cpu")
    for name, buffer in model.named_buffers():
        if name.endswith("num_batches_tracked"):
            buffer.zero_()
    return model
