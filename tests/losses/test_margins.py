"""Margin heads against direct per-element implementations of their formulas, with float64 gradchecks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ghostfacenets.losses import CombinedMargin, PartialFC, ScaleSchedule, margin_from_name


def keras_insightface_target(cos: float, m1: float, m2: float, m3: float) -> float:
    """The official Keras_insightface ``ArcfaceLoss`` (losses.py, used by GhostFaceNets' training) for one target
    cosine, written out as its code reads:

        threshold = np.cos((np.pi - margin2) / margin1)   # grad(theta) == 0
        theta_min = (-1 - margin3) * 2
        if margin1 == 1 and margin2 == 0 and margin3 == 0: theta = y
        elif margin1 == 1 and margin3 == 0:                 theta = cos(acos(y) + margin2)
        else:                                               theta = cos(acos(y) * margin1 + margin2) - margin3
        theta_valid = where(y > threshold, theta, theta_min - theta)
    """
    threshold = math.cos((math.pi - m2) / m1)
    theta_min = (-1 - m3) * 2
    if m1 == 1.0 and m2 == 0.0 and m3 == 0.0:
        theta = cos
    elif m1 == 1.0 and m3 == 0.0:
        theta = math.cos(math.acos(cos) + m2)
    else:
        theta = math.cos(math.acos(cos) * m1 + m2) - m3
    return theta if cos > threshold else theta_min - theta


def direct_logits(cos: torch.Tensor, labels: list[int], m: tuple[float, float, float], scale: float) -> torch.Tensor:
    out = cos.clone()
    for i, label in enumerate(labels):
        out[i, label] = keras_insightface_target(float(cos[i, label]), *m)
    return out * scale


@pytest.mark.parametrize(
    "name,expected", [("arcface", (1.0, 0.5, 0.0)), ("cosface", (1.0, 0.0, 0.35)), ("subcenter", (1.0, 0.5, 0.0))]
)
def test_presets_are_the_papers_margins(name: str, expected: tuple[float, float, float]) -> None:
    head = margin_from_name(name)
    assert (head.m1, head.m2, head.m3) == expected


def test_values_that_do_not_apply_are_refused() -> None:
    assert margin_from_name("cosface", margin=0.4).m3 == 0.4 and margin_from_name("combined", m2=0.3).m2 == 0.3
    with pytest.raises(ValueError, match="combined margin only"):
        margin_from_name("arcface", m2=0.3)
    with pytest.raises(ValueError, match="not margin"):
        margin_from_name("combined", margin=0.3)


def test_arcface_hand_worked_values() -> None:
    head = CombinedMargin(1.0, 0.5, 0.0)
    # theta = 60 deg: cos(60 deg + 0.5 rad)
    assert head.target_logit(torch.tensor(0.5, dtype=torch.float64)).item() == pytest.approx(
        math.cos(math.pi / 3 + 0.5), abs=1e-12
    )
    # theta = 170 deg: theta + m > pi, official fallback -2 - cos(theta + m)
    cos = math.cos(math.radians(170))
    got = head.target_logit(torch.tensor(cos, dtype=torch.float64)).item()
    assert got == pytest.approx(-2 - math.cos(math.radians(170) + 0.5), abs=1e-12)
    assert got < -1.0  # keeps decreasing past the threshold instead of rising again


@pytest.mark.parametrize("m", [(1.0, 0.5, 0.0), (1.0, 0.0, 0.35), (1.0, 0.0, 0.0), (1.0, 0.3, 0.2), (0.9, 0.4, 0.15)])
def test_equals_keras_insightface_over_every_angle(m: tuple[float, float, float]) -> None:
    """Wherever (pi - m2) / m1 <= pi (every preset, and m1 >= 1 - m2 / pi) the package is the official formula,
    the fallback region past pi included."""
    head = CombinedMargin(*m)
    cosines = torch.cos(torch.linspace(1e-3, math.pi - 1e-3, 4001, dtype=torch.float64))
    got = head.target_logit(cosines)
    expected = torch.tensor([keras_insightface_target(float(c), *m) for c in cosines], dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-9)
    assert (cosines <= head.threshold).any() == (m[1] > 0)  # the sweep reaches the fallback region where it exists


def test_where_the_official_threshold_passes_pi_the_package_keeps_the_margin() -> None:
    """m1 = 0.8, m2 = 0: (pi - m2) / m1 = 225 degrees, an angle past pi. Keras_insightface's threshold becomes
    cos(225 deg) = cos(135 deg) and it applies the fallback from theta = 135 degrees on, although m1 * theta + m2 never
    reaches pi there: its logit jumps from cos(108 deg) to -2 - cos(108 deg). The package keeps the threshold at
    cos(pi) and the plain margin formula, which stays continuous. Elsewhere the two agree."""
    m = (0.8, 0.0, 0.0)
    head = CombinedMargin(*m)
    assert head.threshold == -1.0
    official_threshold = math.cos(math.pi / 0.8)
    theta = torch.linspace(1e-3, math.pi - 1e-3, 4001, dtype=torch.float64)
    cosines = torch.cos(theta)
    got = head.target_logit(cosines)
    official = torch.tensor([keras_insightface_target(float(c), *m) for c in cosines], dtype=torch.float64)
    differs = cosines <= official_threshold
    assert differs.any() and not differs.all()
    torch.testing.assert_close(got[~differs], official[~differs], rtol=0, atol=1e-9)
    torch.testing.assert_close(got[differs], torch.cos(0.8 * theta[differs]), rtol=0, atol=1e-9)
    torch.testing.assert_close(official[differs], -2 - torch.cos(0.8 * theta[differs]), rtol=0, atol=1e-9)
    assert torch.max(torch.abs(torch.diff(official))) > 1.0  # the official logit jumps at 135 degrees
    assert torch.max(torch.abs(torch.diff(got))) < 0.01  # the package's does not


def test_fallback_is_continuous_and_decreasing() -> None:
    head = CombinedMargin(1.0, 0.5, 0.0)
    theta = torch.linspace(0.01, math.pi - 0.01, 2001, dtype=torch.float64)
    values = head.target_logit(torch.cos(theta))
    assert torch.all(values[1:] < values[:-1])
    assert torch.max(torch.abs(values[1:] - values[:-1])) < 0.01


@pytest.mark.parametrize("m", [(1.0, 0.5, 0.0), (1.0, 0.0, 0.35), (1.0, 0.3, 0.2), (0.9, 0.4, 0.15), (1.2, 0.0, 0.0)])
@pytest.mark.parametrize("fallback", ["official", "none"])
def test_combined_margin_matches_direct_formula(m: tuple[float, float, float], fallback: str) -> None:
    torch.manual_seed(0)
    cos = torch.empty(12, 7, dtype=torch.float64).uniform_(-0.99, 0.99)
    labels = [i % 7 for i in range(12)]
    cos[0, 0], cos[1, 1] = -0.95, 0.98  # one row deep in the fallback region, one near theta = 0
    head = CombinedMargin(*m, fallback=fallback)
    got = head(cos, torch.tensor(labels), 30.0)
    if fallback == "official":
        expected = direct_logits(cos, labels, m, 30.0)
    else:
        expected = cos.clone()
        for i, label in enumerate(labels):
            expected[i, label] = math.cos(m[0] * math.acos(float(cos[i, label])) + m[1]) - m[2]
        expected *= 30.0
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


def test_insightface_fallback() -> None:
    head = CombinedMargin(1.0, 0.5, 0.0, fallback="insightface")
    cos = math.cos(math.radians(175))
    got = head.target_logit(torch.tensor(cos, dtype=torch.float64)).item()
    assert got == pytest.approx(cos - math.sin(math.pi - 0.5) * 0.5, abs=1e-12)


def test_rows_without_target_are_unchanged() -> None:
    cos = torch.rand(3, 4, dtype=torch.float64)
    got = CombinedMargin()(cos, torch.tensor([-1, 2, -1]), 2.0)
    torch.testing.assert_close(got[[0, 2]], cos[[0, 2]] * 2)
    assert got[1, 2] != cos[1, 2] * 2


@pytest.mark.parametrize("m", [(1.0, 0.5, 0.0), (1.0, 0.0, 0.35), (0.9, 0.4, 0.15)])
def test_margin_gradcheck(m: tuple[float, float, float]) -> None:
    torch.manual_seed(1)
    cos = torch.empty(5, 4, dtype=torch.float64).uniform_(-0.9, 0.9)
    cos[0, 1] = -0.97  # fallback branch
    cos.requires_grad_(True)
    labels = torch.tensor([1, 0, 3, -1, 2])
    head = CombinedMargin(*m)
    assert torch.autograd.gradcheck(lambda c: head(c, labels, 16.0), (cos,))


def _direct_loss(
    emb: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, m: tuple[float, float, float], scale: float
) -> torch.Tensor:
    """Normalised embeddings x normalised centres, max over sub-centres by loops, margin, softmax cross-entropy."""
    n, (c, k, _) = emb.shape[0], weight.shape
    cos = torch.empty(n, c, dtype=emb.dtype)
    for i in range(n):
        e = emb[i] / emb[i].norm()
        for j in range(c):
            cos[i, j] = max(float(e @ (weight[j, s] / weight[j, s].norm())) for s in range(k))
    logits = direct_logits(cos, labels.tolist(), m, scale)
    return F.cross_entropy(logits, labels)


@pytest.mark.parametrize("name,subcenters", [("arcface", 1), ("cosface", 1), ("subcenter", 3)])
def test_full_loss_matches_direct_implementation(name: str, subcenters: int) -> None:
    torch.manual_seed(2)
    head = PartialFC(6, 5, margin_from_name(name), subcenters=subcenters).double()
    emb = torch.randn(8, 6, dtype=torch.float64)
    labels = torch.randint(0, 5, (8,))
    margin = head.margin
    expected = _direct_loss(emb, head.weight.detach(), labels, (margin.m1, margin.m2, margin.m3), 32.0)
    assert head(emb, labels, 32.0).item() == pytest.approx(expected.item(), rel=1e-10)


@pytest.mark.parametrize("name,subcenters", [("arcface", 1), ("cosface", 1), ("subcenter", 3)])
def test_full_loss_gradcheck(name: str, subcenters: int) -> None:
    torch.manual_seed(3)
    head = PartialFC(4, 3, margin_from_name(name), subcenters=subcenters).double()
    emb = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 2, 1, 1, 0])

    def loss(e: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(head, {"weight": w}, (e, labels, 8.0))

    weight = head.weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(loss, (emb, weight))


def test_subcenter_takes_the_closest_subcentre() -> None:
    head = PartialFC(2, 2, margin_from_name("subcenter"), subcenters=2).double()
    head.weight.data = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[-1.0, 0.0], [0.0, -1.0]]], dtype=torch.float64)
    cos = head.cosine(torch.tensor([[0.0, 2.0], [-3.0, 0.1]], dtype=torch.float64), head.weight)
    expected = torch.tensor([[1.0, 0.0], [0.1 / math.hypot(3, 0.1), 3 / math.hypot(3, 0.1)]], dtype=torch.float64)
    torch.testing.assert_close(cos, expected)


def test_scale_schedule_paper_default() -> None:
    schedule = ScaleSchedule.from_pairs([[1, 64], [0, 32]])
    assert [schedule(e) for e in (0, 0.5, 0.999, 1, 7, 50)] == [32, 32, 32, 64, 64, 64]
    with pytest.raises(ValueError):
        ScaleSchedule.from_pairs([[1, 64]])
