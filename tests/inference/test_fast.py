"""FastEmbedder backends give the model's embeddings for any batch size; bucket planning; CUDA graphs where CUDA is."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ghostfacenets.errors import GhostFaceNetsError
from ghostfacenets.inference import embed_images
from ghostfacenets.inference.fast import FastEmbedder, bucket_plan, optimize_for_inference
from ghostfacenets.models.fuse import is_fused
from ghostfacenets.models.registry import create_model
from tests.helpers.models import randomized


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return randomized(create_model("ghostfacenetv1-0.5-2"), seed=5)


@pytest.fixture(scope="module")
def inputs() -> torch.Tensor:
    return torch.randn(9, 3, 112, 112, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def expected(model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(inputs)


def _assert_same(out: torch.Tensor, ref: torch.Tensor) -> None:
    assert out.shape == ref.shape and out.dtype == torch.float32
    cosine = torch.nn.functional.cosine_similarity(out.double(), ref.double(), dim=1)
    assert cosine.min() >= 0.99999
    assert (out - ref).abs().max() <= 1e-4 * ref.abs().max()


@pytest.mark.parametrize("buckets", [(1,), (4,), (1, 8, 32), (3, 5, 7), (2, 64)])
def test_bucket_plan_properties(buckets: tuple[int, ...]) -> None:
    largest = max(buckets)
    for n in range(0, 3 * largest + 2):
        plan = bucket_plan(n, buckets)
        assert sum(rows for rows, _ in plan) == n
        assert all(0 < rows <= bucket and bucket in buckets for rows, bucket in plan)
        assert all(rows == bucket == largest for rows, bucket in plan[:-1])
        if plan:  # the last piece uses the smallest bucket that holds it: no smaller bucket would do
            rows, bucket = plan[-1]
            assert not [b for b in buckets if rows <= b < bucket]
    with pytest.raises(ValueError):
        bucket_plan(3, ())
    with pytest.raises(ValueError):
        bucket_plan(3, (0, 2))


def test_optimize_for_inference_is_fused_and_channels_last(model: torch.nn.Module) -> None:
    ready = optimize_for_inference(model)
    assert is_fused(ready)
    assert ready.stem[0][1].weight.is_contiguous(memory_format=torch.channels_last)  # stem: ZeroPad2d, Conv2d


@pytest.mark.parametrize("channels_last", [True, False])
def test_torch_backend_matches_model(
    model: torch.nn.Module, inputs: torch.Tensor, expected: torch.Tensor, channels_last: bool
) -> None:
    embedder = FastEmbedder(model, channels_last=channels_last)
    for rows in (1, 9) if channels_last else (3,):
        _assert_same(embedder(inputs[:rows]), expected[:rows])
    assert embedder(inputs[:0]).shape == (0, 512)


def test_static_buckets_pad_without_leaking(
    model: torch.nn.Module, inputs: torch.Tensor, expected: torch.Tensor
) -> None:
    embedder = FastEmbedder(model, buckets=(1, 4))
    for rows in (3, 9):  # 3 runs in the 4-bucket with one zero row; 9 = 4 + 4 + 1
        _assert_same(embedder(inputs[:rows]), expected[:rows])
    _assert_same(embedder(inputs[5:8]), expected[5:8])  # reused buffers hold no stale rows


def test_onnxruntime_backend_matches_model(
    model: torch.nn.Module, inputs: torch.Tensor, expected: torch.Tensor
) -> None:
    embedder = FastEmbedder(model, backend="onnxruntime", threads=1)
    _assert_same(embedder(inputs[:1]), expected[:1])
    _assert_same(embedder(inputs), expected)


def test_compile_backend_compiles_once_per_bucket(
    model: torch.nn.Module, inputs: torch.Tensor, expected: torch.Tensor
) -> None:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    # The "eager" compiler backend traces with dynamo like inductor does, without building C++ kernels (minutes here).
    embedder = FastEmbedder(model, backend="compile", buckets=(2, 4), compile_options={"backend": "eager"})
    for rows in (1, 3, 9):
        _assert_same(embedder(inputs[:rows]), expected[:rows])
    assert counters["stats"]["unique_graphs"] == 2


def test_embed_batch_with_flip_and_embed_images(model: torch.nn.Module) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() - 127.5) / 128
    with torch.no_grad():
        plain = model(x)
        flipped = plain + model(torch.flip(x, dims=[3]))
    embedder = FastEmbedder(model)
    _assert_same(torch.from_numpy(embedder.embed_batch(images, flip=False)), plain)
    _assert_same(torch.from_numpy(embedder.embed_batch(images, flip=True)), flipped)
    _assert_same(torch.from_numpy(embed_images(embedder, images, batch_size=2, progress=False)), flipped)


def test_bad_arguments_are_refused(model: torch.nn.Module) -> None:
    with pytest.raises(GhostFaceNetsError, match="backend"):
        FastEmbedder(model, backend="tensorrt")
    with pytest.raises(GhostFaceNetsError, match="CUDA"):
        FastEmbedder(model, backend="cuda-graph", device="cpu")
    with pytest.raises(GhostFaceNetsError, match="float32"):
        FastEmbedder(model, backend="onnxruntime", dtype=torch.float16)
    with pytest.raises(GhostFaceNetsError, match="GhostFaceNet"):
        FastEmbedder(torch.nn.Linear(2, 2))  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_graph_backend_matches_model(
    model: torch.nn.Module, inputs: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype
) -> None:
    embedder = FastEmbedder(model, backend="cuda-graph", device="cuda", dtype=dtype, buckets=(1, 4)).warm_up()
    for rows in (1, 3, 9):
        out = embedder(inputs[:rows]).cpu()
        cosine = torch.nn.functional.cosine_similarity(out.double(), expected[:rows].double(), dim=1)
        assert cosine.min() >= (0.99999 if dtype == torch.float32 else 0.999)
