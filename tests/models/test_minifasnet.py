"""MiniFASNetV2 and V1SE of the package against the reference repository's own networks (its MiniFASNet.py and
released weights, vendored in tests/helpers/silent_face_reference)."""

from __future__ import annotations

import pytest
import torch

from ghostfacenets.liveness.model import reference_state_dict
from ghostfacenets.models.minifasnet import fuse_minifasnet, minifasnet_v1se, minifasnet_v2
from tests.helpers.liveness import MODEL_FILES, REFERENCE
from tests.helpers.silent_face_reference import MiniFASNet as reference_code

CASES = [
    (MODEL_FILES[0], minifasnet_v2, reference_code.MiniFASNetV2),
    (MODEL_FILES[1], minifasnet_v1se, reference_code.MiniFASNetV1SE),
]


@pytest.mark.parametrize(("weights", "ours", "theirs"), CASES, ids=["v2", "v1se"])
def test_networks_equal_the_reference_code(weights, ours, theirs) -> None:
    state = reference_state_dict(REFERENCE / weights)
    reference = theirs(conv6_kernel=(5, 5))
    reference.load_state_dict(state)
    model = ours()
    model.load_state_dict(state, strict=True)  # the same parameter names, nothing missing or left over
    x = torch.rand(4, 3, 80, 80, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        expected = reference.eval()(x)
        got = model.eval()(x)
        fused = fuse_minifasnet(model)(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.softmax(fused, 1), torch.softmax(expected, 1), rtol=0, atol=1e-6)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in fuse_minifasnet(model).modules())


def test_parameter_counts_match_the_readme() -> None:
    """The reference's README: MiniFASNetV1 0.414 M and V2 0.435 M parameters (V1SE adds its SE modules)."""
    v2 = sum(p.numel() for p in minifasnet_v2().parameters())
    v1 = sum(p.numel() for n, p in minifasnet_v1se().named_parameters() if "se_module" not in n)
    assert round(v2 / 1e6, 3) == 0.435 and round(v1 / 1e6, 3) == 0.414
