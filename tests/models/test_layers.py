"""Channel rounding and TF-same padding against the spec's tables (1.5 and 1.12)."""

from __future__ import annotations

import pytest
import torch

from ghostfacenets.models.ghostfacenet import GhostFaceNetConfig, build_model
from ghostfacenets.models.layers import Conv2dSame, make_divisible, tf_same_padding

# Spec 1.5: width -> (stem, 16 expansions (V2), 16 outputs, V1 block-16 expansion = V1 final, V2 final,
# SE hidden of blocks 4, 5, 10, 11, 12, 14, 16 (V2), V1's block-16 SE hidden)
SPEC_CHANNELS = {
    0.5: (
        8,
        "8 24 36 36 60 120 100 92 92 240 336 336 480 480 480 480",
        "8 12 12 20 20 40 40 40 40 56 56 80 80 80 80 80",
        256,
        480,
        "12 16 60 84 84 120 120",
        64,
    ),
    1.0: (
        16,
        "16 48 72 72 120 240 200 184 184 480 672 672 960 960 960 960",
        "16 24 24 40 40 80 80 80 80 112 112 160 160 160 160 160",
        512,
        960,
        "20 32 120 168 168 240 240",
        128,
    ),
    1.1: (
        16,
        "16 52 80 80 132 264 220 204 204 528 740 740 1056 1056 1056 1056",
        "16 28 28 44 44 88 88 88 88 124 124 176 176 176 176 176",
        564,
        1056,
        "20 32 132 184 184 264 264",
        140,
    ),
    1.2: (
        20,
        "20 56 88 88 144 288 240 220 220 576 808 808 1152 1152 1152 1152",
        "20 28 28 48 48 96 96 96 96 136 136 192 192 192 192 192",
        616,
        1152,
        "24 36 144 204 204 288 288",
        156,
    ),
    1.3: (
        20,
        "20 64 92 92 156 312 260 240 240 624 872 872 1248 1248 1248 1248",
        "20 32 32 52 52 104 104 104 104 144 144 208 208 208 208 208",
        664,
        1248,
        "24 40 156 220 220 312 312",
        168,
    ),
    1.4: (
        24,
        "24 68 100 100 168 336 280 256 256 672 940 940 1344 1344 1344 1344",
        "24 32 32 56 56 112 112 112 112 156 156 224 224 224 224 224",
        716,
        1344,
        "24 44 168 236 236 336 336",
        180,
    ),
    1.5: (
        24,
        "24 72 108 108 180 360 300 276 276 720 1008 1008 1440 1440 1440 1440",
        "24 36 36 60 60 120 120 120 120 168 168 240 240 240 240 240",
        768,
        1440,
        "28 44 180 252 252 360 360",
        192,
    ),
    2.0: (
        32,
        "32 96 144 144 240 480 400 368 368 960 1344 1344 1920 1920 1920 1920",
        "32 48 48 80 80 160 160 160 160 224 224 320 320 320 320 320",
        1024,
        1920,
        "36 60 240 336 336 480 480",
        256,
    ),
}
SE_BLOCKS = (3, 4, 9, 10, 11, 13, 15)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split()]


@pytest.mark.parametrize("width", sorted(SPEC_CHANNELS))
@pytest.mark.parametrize("version", [1, 2])
def test_channels_match_spec_table(width: float, version: int) -> None:
    stem, exps, outs, v1_last, v2_final, se_hidden, v1_se16 = SPEC_CHANNELS[width]
    with torch.device("meta"):
        model = build_model(GhostFaceNetConfig(version=version, width=width))
    expected_exps = _ints(exps)
    expected_se = _ints(se_hidden)
    if version == 1:
        expected_exps[-1] = v1_last
        expected_se[-1] = v1_se16
    assert model.stem[0].out_channels == stem
    assert [b.ghost1.out_channels for b in model.blocks] == expected_exps
    assert [b.ghost2.out_channels for b in model.blocks] == _ints(outs)
    assert model.final[0].out_channels == (v1_last if version == 1 else v2_final)
    assert [model.blocks[i].se.reduce.out_channels for i in SE_BLOCKS] == expected_se
    assert all(model.blocks[i].se is None for i in set(range(16)) - set(SE_BLOCKS))


def test_make_divisible_rules() -> None:
    assert make_divisible(1.3 * 16) == 20  # int(20.8 + 2) // 4 * 4
    assert make_divisible(2) == 4  # minimum 4
    assert make_divisible(0.5 * 24) == 12
    assert make_divisible(10) == 12  # 10 -> int(12) // 4 * 4 = 12
    assert make_divisible(9.9) == 8 + 4  # 8 < 0.9 * 9.9 -> add 4


# Spec 1.12: (input size, kernel) -> (before, after) for stride-2 TF-same convolutions.
@pytest.mark.parametrize(
    ("size", "kernel", "pads"),
    [
        (112, 3, (0, 1)),
        (56, 3, (0, 1)),
        (56, 5, (1, 2)),
        (28, 5, (1, 2)),
        (28, 3, (0, 1)),
        (14, 3, (0, 1)),
        (14, 5, (1, 2)),
        (7, 5, (2, 2)),
    ],
)
def test_tf_same_padding_table(size: int, kernel: int, pads: tuple[int, int]) -> None:
    assert tf_same_padding(size, kernel, 2) == pads


def test_conv2d_same_equals_explicit_padding() -> None:
    torch.manual_seed(0)
    conv = Conv2dSame(4, 4, 5, 2, groups=4, bias=False)
    x = torch.randn(2, 4, 28, 28)
    reference = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 2, 1, 2)), conv.weight, stride=2, groups=4)
    assert torch.equal(conv(x), reference)
    assert conv(x).shape[-1] == 14
