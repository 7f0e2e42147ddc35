"""Behaviour of the model beyond shapes: gates, BN in train mode, from-scratch initialisation (spec 1.8, 1.13)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ghostfacenets.models.ghost import GhostModuleDFC
from ghostfacenets.models.ghostfacenet import GhostFaceNetConfig, GhostFaceNetV1, GhostFaceNetV2
from ghostfacenets.models.layers import Conv2dSame, HardSigmoidKeras2, HardSigmoidTorch


def test_se_gates_differ_by_version() -> None:
    x = torch.linspace(-5, 5, 101)
    assert torch.allclose(HardSigmoidKeras2()(x), (0.2 * x + 0.5).clamp(0, 1))
    assert torch.allclose(HardSigmoidTorch()(x), (x / 6 + 0.5).clamp(0, 1))
    v1, v2 = GhostFaceNetV1(0.5), GhostFaceNetV2(0.5)
    assert isinstance(v1.blocks[3].se.gate, HardSigmoidKeras2)
    assert isinstance(v2.blocks[3].se.gate, HardSigmoidTorch)


def test_v1_uses_tf_same_padding_and_v2_symmetric() -> None:
    v1, v2 = GhostFaceNetV1(1.0, 2), GhostFaceNetV2(1.0, 2)
    assert isinstance(v1.stem[0], Conv2dSame) and isinstance(v1.blocks[1].down_conv, Conv2dSame)
    assert not any(isinstance(m, Conv2dSame) for m in v2.modules())
    assert v2.blocks[3].down_conv.padding == (2, 2)


def test_dfc_only_in_v2_blocks_3_to_16() -> None:
    v2 = GhostFaceNetV2(1.0)
    assert [isinstance(b.ghost1, GhostModuleDFC) for b in v2.blocks] == [False, False] + [True] * 14
    assert not any(isinstance(m, GhostModuleDFC) for m in GhostFaceNetV1(1.0).modules())


def test_prelu_is_per_channel_everywhere() -> None:
    model = GhostFaceNetV1(1.3)
    prelus = [m for m in model.modules() if isinstance(m, nn.PReLU)]
    assert len(prelus) == 41  # stem + 2 x 16 ghost-1 + 7 SE + final (spec 5.1)
    assert all(p.num_parameters > 1 for p in prelus)


def test_batchnorm_train_mode_uses_batch_statistics_and_keras_momentum() -> None:
    torch.manual_seed(0)
    model = GhostFaceNetV1(0.5, 2)
    x = torch.randn(4, 3, 112, 112) * 2 + 1
    bn = model.stem[1]
    assert bn.eps == 1e-5 and bn.momentum == pytest.approx(0.1)  # Keras momentum 0.9
    model.train()
    with torch.no_grad():
        stem_out = model.stem[0](x)
        train_out = model(x)
    batch_mean = stem_out.mean(dim=(0, 2, 3))
    assert torch.allclose(bn.running_mean, 0.1 * batch_mean, atol=1e-5)
    model.eval()
    with torch.no_grad():
        eval_out = model(x)
    assert not torch.allclose(train_out, eval_out)


def _keras_fan_out_std(conv: nn.Conv2d) -> float:
    kh, kw = conv.kernel_size
    depthwise = conv.groups == conv.in_channels and conv.groups > 1
    return math.sqrt(2.0 / (kh * kw * (1 if depthwise else conv.out_channels)))


def test_initialisation_follows_official_code() -> None:
    torch.manual_seed(0)
    v1 = GhostFaceNetV1(1.3)
    # V1: every backbone conv is VarianceScaling(2, fan_out, truncated normal), Keras fan for depthwise = kh*kw.
    for conv in (v1.blocks[9].ghost1.primary_conv, v1.blocks[11].down_conv, v1.final[0]):
        std = conv.weight.std().item()
        assert std == pytest.approx(_keras_fan_out_std(conv), rel=0.15)
        assert conv.weight.abs().max().item() <= 2 * _keras_fan_out_std(conv) / 0.8796 + 1e-6
    # GDC: depthwise glorot_uniform with Keras fans, 1x1 glorot_normal.
    dw = v1.head.dw
    limit = math.sqrt(6 / (49 * dw.in_channels + 49))
    assert dw.weight.abs().max().item() <= limit and dw.weight.abs().max().item() > 0.9 * limit
    assert v1.head.conv.weight.std().item() == pytest.approx(math.sqrt(2 / (664 + 512)), rel=0.1)
    assert all(torch.all(m.weight == 0.25) for m in v1.modules() if isinstance(m, nn.PReLU))
    assert torch.all(v1.blocks[3].se.reduce.bias == 0)
    # V2: depthwise convs keep Keras' glorot_uniform default.
    v2 = GhostFaceNetV2(1.0)
    cheap = v2.blocks[12].ghost1.cheap_conv
    c = cheap.in_channels
    assert cheap.weight.abs().max().item() <= math.sqrt(6 / (9 * c + 9))
    assert v2.blocks[12].ghost1.primary_conv.weight.std().item() == pytest.approx(
        _keras_fan_out_std(v2.blocks[12].ghost1.primary_conv), rel=0.15
    )


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="version"):
        GhostFaceNetConfig(version=3)
    with pytest.raises(ValueError, match="stem_stride"):
        GhostFaceNetConfig(stem_stride=4)
    assert GhostFaceNetConfig(stem_stride=2).feature_size == 4
    assert GhostFaceNetConfig(input_size=128).feature_size == 8
