"""Aligned face crops from folders and .bin sets, fitted to 112x112 as training fits them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ghostfacenets.data.crops import load_face_crops, spread
from ghostfacenets.data.images import fit_image
from ghostfacenets.data.verification_bin import load_verification_bin
from ghostfacenets.errors import GhostFaceNetsError
from tests.helpers import shared_path


def test_face_crops_from_folder_and_bin_are_padded_as_training_pads() -> None:
    att = shared_path("data", "att_faces")
    crops = load_face_crops(att, limit=5)
    assert crops.shape == (5, 112, 112, 3) and crops.dtype == np.uint8
    first = cv2.imread(str(sorted(att.rglob("*.pgm"))[0]), cv2.IMREAD_GRAYSCALE)  # 112 high, 92 wide
    np.testing.assert_array_equal(crops[0][:, 10:102, 0], first)
    np.testing.assert_array_equal(crops[0], fit_image(np.repeat(first[..., None], 3, axis=2), 112, "pad"))
    assert (crops[0][:, :10] == 0).all() and (crops[0][:, 102:] == 0).all()  # black, as training pads
    sample = shared_path("fixtures", "formats", "bin_sample", "sample_py3.bin")
    np.testing.assert_array_equal(load_face_crops(sample), load_verification_bin(sample)[0])


def test_spread_picks_evenly_and_refuses_nonsense() -> None:
    np.testing.assert_array_equal(spread(10, 3), [0, 4, 9])  # round(linspace(0, 9, 3)) = 0, 4.5 -> 4, 9
    np.testing.assert_array_equal(spread(4, None), np.arange(4))
    np.testing.assert_array_equal(spread(4, 10), np.arange(4))
    with pytest.raises(GhostFaceNetsError, match="positive"):
        spread(10, 0)
