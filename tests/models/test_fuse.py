"""BatchNorm folding and the inference-ready model: same outputs as the original, fewer operations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ghostfacenets import load_model
from ghostfacenets.models.fuse import Clamp01, fold_conv_bn, fuse_model, is_fused
from ghostfacenets.models.layers import Conv2dSame, HardSigmoidKeras2, HardSigmoidTorch
from ghostfacenets.models.registry import create_model
from tests.helpers import shared_path
from tests.helpers.models import randomized

FIXTURES = ["v1_w1.3_s1", "v1_w1_s2", "v2_w1_s1"]


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=1)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("groups", [1, 6])
def test_fold_conv_bn_equals_conv_then_bn(bias: bool, groups: int) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 12, 3, stride=2, padding=1, groups=groups, bias=bias)
    bn = randomized(nn.Sequential(nn.BatchNorm2d(12, eps=1e-3)))[0]
    x = torch.randn(2, 6, 9, 9)
    fused = fold_conv_bn(conv, bn)
    with torch.no_grad():
        expected = bn(conv(x))
        # The formula worked by hand: gamma * (conv(x) - mean) / sqrt(var + eps) + beta.
        by_hand = (conv(x) - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + 1e-3)
        by_hand = by_hand * bn.weight[:, None, None] + bn.bias[:, None, None]
        out = fused(x)
    torch.testing.assert_close(expected, by_hand, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert fused.bias is not None and conv.bias is (None if not bias else conv.bias)  # the original is untouched


def test_fold_conv_bn_handles_batchnorm1d_and_no_affine() -> None:
    torch.manual_seed(1)
    conv = nn.Conv2d(8, 5, 1, bias=True)
    bn = randomized(nn.Sequential(nn.BatchNorm1d(5)))[0]
    plain = nn.BatchNorm2d(5, affine=False).eval()
    plain.running_mean.uniform_(-1, 1)
    plain.running_var.uniform_(0.5, 2)
    x = torch.randn(3, 8, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(fold_conv_bn(conv, bn)(x).flatten(1), bn(conv(x).flatten(1)), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fold_conv_bn(conv, plain)(x), plain(conv(x)), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="features"):
        fold_conv_bn(conv, nn.BatchNorm2d(7))


@pytest.mark.parametrize(
    "name", ["ghostfacenetv1-0.5-1", "ghostfacenetv1-0.5-2", "ghostfacenetv2-0.5-1", "ghostfacenetv2-0.5-2"]
)
def test_fused_model_matches_original(name: str) -> None:
    model = randomized(create_model(name, gdc_bias=True), seed=3)
    fused = fuse_model(model)
    x = torch.randn(3, 3, 112, 112)
    with torch.no_grad():
        expected, out = model(x), fused(x)
    assert _cosine(out, expected).min() >= 0.99999
    assert (out - expected).abs().max() <= 1e-4 * expected.abs().max()
    assert is_fused(fused) and not is_fused(model)  # and the original keeps its BatchNorms
    assert not any(
        isinstance(m, (Conv2dSame, HardSigmoidKeras2, HardSigmoidTorch, nn.Dropout)) for m in fused.modules()
    )
    assert sum(isinstance(m, Clamp01) for m in fused.modules()) == 7  # one per SE block
    assert not any(p.requires_grad for p in fused.parameters())
    assert not fused.training


def test_v1_padding_is_frozen_asymmetric_for_even_inputs() -> None:
    fused = fuse_model(create_model("ghostfacenetv1-0.5-2"))
    stem = fused.stem[0]  # stride-2 stem on 112: TF pads 0 before, 1 after
    assert isinstance(stem, nn.Sequential) and stem[0].padding == (0, 1, 0, 1)
    block12 = fused.blocks[11].down_conv  # 5x5 stride 2 on a 7x7 map: symmetric (2, 2) as conv padding
    assert isinstance(block12, nn.Conv2d) and block12.padding == (2, 2)


def test_inplace_and_type_checks() -> None:
    model = create_model("ghostfacenetv2-0.5-2")
    assert fuse_model(model, inplace=True) is model and is_fused(model)
    with pytest.raises(TypeError):
        fuse_model(nn.Conv2d(3, 3, 1))  # type: ignore[arg-type]


@pytest.mark.parametrize("fixture", FIXTURES)
def test_fused_keras_reference_models_match_golden_embeddings(fixture: str) -> None:
    folder = shared_path("fixtures", "keras_reference", fixture)
    model = load_model(folder / "model.h5")
    inputs = torch.from_numpy(np.load(folder / "inputs.npy")).permute(0, 3, 1, 2)
    golden = torch.from_numpy(np.load(folder / "embeddings.npy"))
    with torch.no_grad():
        out = fuse_model(model)(inputs)
    assert _cosine(out, golden).min() >= 0.99999
    assert (out - golden).abs().max() <= 1e-4 * golden.abs().max()
