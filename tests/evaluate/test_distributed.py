"""Sharded embedding: two CPU processes (gloo) give rank 0 exactly the embeddings one process computes, and
``torchrun ... -m ghostfacenets.cli evaluate`` gives the numbers of one process on every kind of set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ghostfacenets.cli import main
from ghostfacenets.evaluate import distributed
from ghostfacenets.evaluate.distributed import array_job, embed_job, embed_job_sharded, shard
from ghostfacenets.inference import load_embedder
from ghostfacenets.train.distributed import DistributedContext
from tests.helpers.eval_sets import write_group_pairs, write_megaface_pack, write_rfw, write_synthetic_bin
from tests.helpers.toy_models import pooled_colour_model, pooled_colour_onnx


def test_shards_partition_the_crops() -> None:
    for count in range(14):
        for world in range(1, 6):
            blocks = [shard(count, rank, world) for rank in range(world)]
            assert [i for b in blocks for i in b] == list(range(count))
            assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


def _images(count: int) -> np.ndarray:
    return np.random.default_rng(count).integers(0, 256, (count, 16, 16, 3), dtype=np.uint8)


COUNTS = (11, 1)  # uneven shards of 6 and 5 crops; a single crop, so that rank 1 embeds nothing


def _worker(rank: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        distributed.GATHER_CHUNK_ELEMENTS = 2 * 48  # two rows of 48 values per gather call: several rounds
        context = DistributedContext(rank, rank, 2, torch.device("cpu"), dist.group.WORLD)
        embedder = load_embedder(pooled_colour_model(), "cpu")
        for count in COUNTS:
            result = embed_job_sharded(embedder, array_job("toy", _images(count)), context, batch_size=2, workers=2)
            if rank == 0:
                np.save(f"{out}-{count}.npy", result)
            else:
                Path(f"{out}-{count}.rank1").write_text(repr(result))
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_give_rank_0_what_one_process_embeds(tmp_path: Path) -> None:
    out = str(tmp_path / "embeddings")
    mp.spawn(_worker, args=(str(tmp_path / "store"), out), nprocs=2, join=True)
    for count in COUNTS:
        one = embed_job(load_embedder(pooled_colour_model(), "cpu"), array_job("toy", _images(count)), batch_size=4)
        np.testing.assert_array_equal(np.load(f"{out}-{count}.npy"), one)
        assert one.shape == (count, 48) and Path(f"{out}-{count}.rank1").read_text() == "None"


# -------------------------------------------------------------------------------------------- torchrun, end to end
def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}/{key}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in _flat(item, f"{prefix}/{i}").items()}
    return {prefix: value}


@pytest.mark.slow
def test_torchrun_two_processes_give_the_numbers_of_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = pooled_colour_onnx(tmp_path / "pooled.onnx")
    sets = [
        "--bin", str(write_synthetic_bin(tmp_path / "lfw.bin", 0)),
        "--rfw", str(write_rfw(tmp_path / "rfw")),
        "--megaface", str(write_megaface_pack(tmp_path / "megaface")),
        "--pairs", str(write_group_pairs(tmp_path / "pairs")), "--group-column", "region",
        "--far", "0.1", "--batch-size", "5",
    ]  # fmt: skip
    assert main(["evaluate", "--model", str(model), *sets, "--json", str(tmp_path / "one.json")]) == 0
    capsys.readouterr()
    two = str(tmp_path / "two.json")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               "-m", "ghostfacenets.cli", "evaluate", "--model", str(model), *sets, "--json", two]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GHOSTFACENETS_DEBUG": "1"}
    with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "err.txt", "w") as err:  # files: no pipe to drain
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        try:
            process.wait(timeout=180)
        except subprocess.TimeoutExpired:
            process.terminate()
            process.wait(timeout=60)
            pytest.fail(f"torchrun still running after 180 s: {(tmp_path / 'err.txt').read_text()[-3000:]}")
    assert process.returncode == 0, (tmp_path / "err.txt").read_text()[-3000:]
    printed = (tmp_path / "out.txt").read_text()
    assert printed.count("wrote JSON to") == 1  # rank 0 alone reports
    one = _flat(json.loads((tmp_path / "one.json").read_text()))
    two = _flat(json.loads((tmp_path / "two.json").read_text()))
    assert two.keys() == one.keys() and len(one) > 400
    for key, value in one.items():  # onnxruntime on other batch shapes may differ in the last bit of a score
        assert two[key] == (value if not isinstance(value, float) else pytest.approx(value, abs=1e-6)), key
