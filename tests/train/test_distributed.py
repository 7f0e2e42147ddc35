"""Two CPU processes under torchrun (gloo) train the same weights as one process with the same global batch, and
resuming with another number of processes re-shards the class centres."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ghostfacenets.data.datasets import SyntheticSource
from ghostfacenets.data.verification_bin import write_verification_bin
from ghostfacenets.train.config import load_config
from ghostfacenets.train.loop import train

# 6 identities over 2 ranks: 3 class centres each. Global batch 8: one rank with 2 accumulation steps of 4, or two
# ranks with 4 each. BatchNorm sees 4 images per forward either way, so the runs are the same computation.
# No gradient clipping (the gradient norm is 100-200 here: every step would be clipped), so a wrong loss scale under
# accumulation or over ranks shows in the weights; a learning rate small enough that float32 noise stays small.
COMMON = [
    "model.architecture=ghostfacenetv1-0.5-2",
    "model.embedding_size=32",
    "data.train=synthetic:48:6",
    "train.batch_size=8",
    "train.epochs=1",
    "data.workers=0",
    "train.tensorboard=false",
    "train.progress=false",
    "optim.schedule=cosine",
    "optim.lr=0.0003",
    "data.augment.rotation=8",
]
pytestmark = pytest.mark.slow


def torchrun(output: Path, *overrides: str, timeout: float = 120) -> str:
    """Run the CLI under torchrun with two processes; its stdout. A hang fails after ``timeout`` seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GHOSTFACENETS_DEBUG": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "ghostfacenets.cli",
        "train",
        *COMMON,
        f"output={output}",
        *overrides,
    ]
    logs = output.parent / f"{output.name}-torchrun"
    # Files, not pipes: workers that outlive torchrun must not keep the test waiting for the end of a pipe.
    with open(f"{logs}.out", "w") as out, open(f"{logs}.err", "w") as err:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.terminate()  # torchrun stops its workers on SIGTERM
            process.wait(timeout=60)
            pytest.fail(
                f"torchrun still running after {timeout} s (a collective mismatch?): "
                f"{Path(f'{logs}.err').read_text()[-3000:]}"
            )
    assert process.returncode == 0, Path(f"{logs}.err").read_text()[-3000:]
    return Path(f"{logs}.out").read_text()


def val_bin(path: Path, pairs: int = 20) -> Path:
    source = SyntheticSource(2 * pairs, 8)
    write_verification_bin(path, [source.load(i)[0] for i in range(2 * pairs)], [p % 2 == 0 for p in range(pairs)])
    return path


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(a), load_file(b)
    for key in wa:
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue  # DDP keeps rank 0's BN statistics: half of the images, by design
        # float32 summation-order noise (1e-7 after one step) grows to about 2e-5 in six steps while the weights
        # move by up to 0.03; gradients twice too large (a wrong scale) end 0.045 away, a centre mix-up more.
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-3, atol=1e-4, msg=key)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_two_processes_equal_one_process_with_accumulation(tmp_path: Path) -> None:
    single = train(load_config(None, [*COMMON, f"output={tmp_path / 'one'}", "train.accumulation=2"]))
    # With validation: rank 0 evaluates while the other rank waits, at step 4 and at the last step.
    summary = json.loads(
        torchrun(tmp_path / "two", f"data.val=[{val_bin(tmp_path / 'v.bin')}]", "train.val_every=4", "--json")
    )
    assert single.steps == 6 and summary["steps"] == 6
    assert summary["validation"]["v"]["pairs"] == 20 and summary["best"] is not None
    assert_same_weights(single.final, tmp_path / "two" / "final.safetensors")
    one = torch.load(tmp_path / "one" / "checkpoints" / "step-000000006" / "centres-00000.pt", weights_only=True)
    parts = [
        torch.load(tmp_path / "two" / "checkpoints" / "step-000000006" / f"centres-{r:05d}.pt", weights_only=True)
        for r in range(2)
    ]
    assert [(p["start"], p["end"]) for p in parts] == [(0, 3), (3, 6)]
    torch.testing.assert_close(torch.cat([p["weight"] for p in parts]), one["weight"], rtol=1e-3, atol=1e-4)
    # The momentum is a sum of raw gradients (norm 100-200), whose float32 noise is larger in absolute terms.
    momentum = one["momentum"]
    torch.testing.assert_close(
        torch.cat([p["momentum"] for p in parts]), momentum, rtol=1e-3, atol=1e-3 * float(momentum.abs().max())
    )


def test_resume_with_another_number_of_processes(tmp_path: Path) -> None:
    straight = train(load_config(None, [*COMMON, f"output={tmp_path / 'straight'}", "train.accumulation=2"]))
    train(load_config(None, [*COMMON, f"output={tmp_path / 'run'}", "train.accumulation=2", "train.max_steps=3"]))
    torchrun(tmp_path / "run")  # picks up step 3 saved by one process, re-shards 6 centres over 2 ranks
    assert_same_weights(straight.final, tmp_path / "run" / "final.safetensors")
