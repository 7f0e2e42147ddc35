"""The one normalisation, in torch and in numpy, against the official formula written out here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ghostfacenets.data.transforms import to_array, to_tensor


def _official(images: np.ndarray) -> np.ndarray:
    """Keras_insightface's preprocessing: (x - 127.5) / 128 on RGB, then channels first for PyTorch."""
    out = np.empty((images.shape[0], 3, images.shape[1], images.shape[2]), dtype=np.float64)
    for n in range(images.shape[0]):
        for c in range(3):
            out[n, c] = (images[n, :, :, c].astype(np.float64) - 127.5) / 128.0
    return out


def test_numpy_and_torch_normalise_as_the_official_code() -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(3, 112, 112, 3), dtype=np.uint8)
    images[0, 0, 0] = (0, 255, 128)  # the ends of the range
    expected = _official(images)
    array = to_array(images)
    assert array.dtype == np.float32 and array.flags.c_contiguous and array.shape == (3, 3, 112, 112)
    np.testing.assert_allclose(array, expected, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(array, to_tensor(images).numpy())
    np.testing.assert_array_equal(to_array(images[0]), array[:1])  # one image (H, W, 3)


@pytest.mark.parametrize("shape", [(112, 112), (2, 112, 112, 4), (2, 3, 112, 112)])
def test_wrong_shapes_are_refused(shape: tuple[int, ...]) -> None:
    images = np.zeros(shape, dtype=np.uint8)
    with pytest.raises(ValueError, match="RGB images shaped"):
        to_array(images)
    with pytest.raises(ValueError, match="RGB images shaped"):
        to_tensor(torch.from_numpy(images))
