"""The training loop on CPU: exact resume, outputs, validation, damaged data, weight decay groups, clipping, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from ghostfacenets import create_model, load_model
from ghostfacenets.cli import main
from ghostfacenets.data.verification_bin import load_verification_bin
from ghostfacenets.train.checkpoint import CheckpointError
from ghostfacenets.train.config import load_config
from ghostfacenets.train.distributed import DistributedContext
from ghostfacenets.train.loop import clip_gradients, parameter_groups, train
from tests.conftest import shared_path

TINY = ["model.architecture=ghostfacenetv1-0.5-2", "model.embedding_size=32", "train.batch_size=8",
        "data.workers=0", "train.tensorboard=false", "train.progress=false", "optim.schedule=cosine",
        "optim.warmup_epochs=1", "optim.lr=0.05", "data.augment.rotation=8", "data.augment.shift=0.05",
        "loss.scale=[[0, 16], [1, 32]]", "train.log_every=1"]


def tiny_config(output: Path, *overrides: str):
    return load_config(None, [*TINY, "data.train=synthetic:32:4", f"output={output}", *overrides])


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic and fast on a shared machine
    yield
    torch.set_num_threads(threads)


def test_resume_continues_exactly(tmp_path: Path) -> None:
    straight = train(tiny_config(tmp_path / "a", "train.epochs=2", "train.max_steps=6"))
    assert straight.steps == 6
    first = train(tiny_config(tmp_path / "b", "train.epochs=2", "train.max_steps=3", "train.checkpoint_every=3"))
    assert first.steps == 3
    resumed = train(tiny_config(tmp_path / "b", "train.epochs=2", "train.max_steps=6"))
    assert resumed.steps == 6
    a, b = load_file(straight.final), load_file(resumed.final)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # The class centres and their momentum continue too.
    for name in ("centres-00000.pt", "trainer.pt"):
        sa = torch.load(tmp_path / "a" / "checkpoints" / "step-000000006" / name, weights_only=True)
        sb = torch.load(tmp_path / "b" / "checkpoints" / "step-000000006" / name, weights_only=True)
        if name == "trainer.pt":
            for key, value in sa["optimizer"]["state"].items():
                assert torch.equal(value["momentum_buffer"], sb["optimizer"]["state"][key]["momentum_buffer"])
        else:
            assert torch.equal(sa["weight"], sb["weight"]) and torch.equal(sa["momentum"], sb["momentum"])
    # metrics.jsonl of the resumed run has each step once
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_final_model_loads_with_training_metadata(tmp_path: Path) -> None:
    result = train(tiny_config(tmp_path, "train.epochs=1"))
    model = load_model(tmp_path / "final.safetensors")
    assert model.config.embedding_size == 32 and model.config.width == 0.5 and model.config.stem_stride == 2
    meta = model.metadata
    assert meta["training_data"] == "synthetic:32:4"
    assert meta["loss"].startswith("arcface (m1=1, m2=0.5, m3=0")
    assert meta["training"]["steps"] == result.steps == 4 and meta["training"]["identities"] == 4
    assert meta["training"]["config"]["train"]["batch_size"] == 8
    assert model(torch.zeros(2, 3, 112, 112)).shape == (2, 32)


def test_resume_refuses_another_batch_size(tmp_path: Path) -> None:
    train(tiny_config(tmp_path, "train.epochs=1"))
    with pytest.raises(CheckpointError, match="batch_size"):
        train(tiny_config(tmp_path, "train.epochs=2", "train.batch_size=16"))


def _folder(root: Path, identities: int, per_identity: int) -> Path:
    rng = np.random.default_rng(0)
    for k in range(identities):
        (root / f"id{k}").mkdir(parents=True)
        base = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        for i in range(per_identity):
            image = cv2.resize(base, (92, 112), interpolation=cv2.INTER_LINEAR)
            noisy = np.clip(image + rng.normal(0, 10, image.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / f"id{k}" / f"{i}.png"), noisy)
    return root


def test_folder_training_with_validation_and_damaged_images(tmp_path: Path) -> None:
    data = _folder(tmp_path / "faces", 6, 4)
    (data / "id0" / "9.png").write_bytes(b"broken")
    config = tiny_config(tmp_path / "run", f"data.train={data}", "train.epochs=2",
                         "data.train_identities=[id0, id1, id2, id3]", f"data.val=[{data}]",
                         "data.val_identities=[id4, id5]", "data.val_pairs=20", "data.val_flip=false")
    result = train(config)
    assert result.steps == 4  # 17 images, batch 8: 2 steps per epoch
    assert len(result.damaged) == 1 and "9.png" in result.damaged[0]
    assert json.loads((tmp_path / "run" / "damaged_images.json").read_text()) == result.damaged
    metrics = result.validation["faces"]
    assert metrics["pairs"] == 20 and metrics["flip"] is False
    assert (tmp_path / "run" / "val" / "faces.bin").is_file()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    validations = [r for r in records if "val" in r]
    assert [r["step"] for r in validations] == [2, 4]
    assert {"step", "epoch", "loss", "lr", "img_per_s"} <= set(records[0])
    # The evaluation command on the final model reproduces the last validation.
    assert main(["evaluate", "--model", str(result.final), "--bin", str(tmp_path / "run" / "val" / "faces.bin"),
                 "--no-flip", "--json", str(tmp_path / "eval.json"), "--quiet"]) == 0
    evaluated = json.loads((tmp_path / "eval.json").read_text())["faces"]
    assert evaluated["best_threshold_accuracy"] == pytest.approx(metrics["best_threshold_accuracy"])
    assert evaluated["auc"] == pytest.approx(metrics["auc"], abs=1e-6)
    best = load_model(tmp_path / "run" / "best.safetensors")
    assert best.metadata["training"]["validation"]["faces"]["pairs"] == 20
    assert result.best_value == max(r["val"]["faces"]["accuracy_10fold_mean"] for r in validations)


def test_weight_decay_only_on_conv_and_linear_weights() -> None:
    model = create_model("ghostfacenetv2-0.5-2", embedding_size=16)
    decay, no_decay = parameter_groups(model, 5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert {id(p) for p in decay["params"]} == {id(p) for p in convs}
    others = {id(p) for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d, nn.PReLU))
              for p in m.parameters(recurse=False)}
    others |= {id(m.bias) for m in model.modules() if isinstance(m, nn.Conv2d) and m.bias is not None}
    assert {id(p) for p in no_decay["params"]} == others
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_clip_gradients_scales_to_the_global_norm() -> None:
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(1, 1, 2))
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([[[0.0, 4.0]]])
    norm = clip_gradients([a], b, 1.0, DistributedContext())
    assert float(norm) == pytest.approx(5.0)
    torch.testing.assert_close(a.grad, torch.tensor([0.6, 0.0]))
    torch.testing.assert_close(b.grad, torch.tensor([[[0.0, 0.8]]]))
    clip_gradients([a], b, 10.0, DistributedContext())
    torch.testing.assert_close(a.grad, torch.tensor([0.6, 0.0]))


def test_cli_train_print_config_and_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["train", "data.train=/x", "train.epochs=3", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "epochs: 3" in out and "train: /x" in out
    assert main(["train", "data.train=/x", "train.epochz=3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.epochz" in err[0]
    assert main(["train", f"data.train={tmp_path / 'missing'}"]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_cli_train_json_summary(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["train", *TINY, "data.train=synthetic:16:2", f"output={tmp_path}", "train.epochs=1", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 2 and summary["final"] == str(tmp_path / "final.safetensors")


def test_quickstart_config_runs(tmp_path: Path) -> None:
    faces = shared_path("data", "att_faces")
    config = load_config(Path(__file__).resolve().parents[2] / "configs" / "quickstart-cpu.yaml",
                         [f"data.train={faces}", f"data.val=[{faces}]", f"output={tmp_path}", "train.max_steps=1",
                          "data.workers=0", "train.progress=false", "train.tensorboard=false"])
    result = train(config)
    assert result.steps == 1 and load_model(result.final).config.embedding_size == 128
    images, issame = load_verification_bin(tmp_path / "val" / "att_faces.bin")
    assert images.shape == (1800, 112, 112, 3) and issame.sum() == 450 and len(issame) == 900
    assert (images[:, :, :10] == 0).all()  # 92x112 photos padded with black
    assert result.validation["att_faces"]["pairs"] == 900 and result.validation["att_faces"]["flip"] is False
