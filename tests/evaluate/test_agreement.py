"""The agreement summary of two embedding sets, against a hand-worked example."""

from __future__ import annotations

import numpy as np
import pytest

from ghostfacenets.evaluate.agreement import agreement


def test_agreement_by_hand() -> None:
    reference = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    candidate = np.array([[1.0, 1.0], [0.0, 5.0], [-3.0, -4.0]])
    result = agreement(reference, candidate)
    assert result.faces == 3
    assert result.min == pytest.approx(-1.0)
    assert result.mean == pytest.approx((2**-0.5 + 1.0 - 1.0) / 3)
