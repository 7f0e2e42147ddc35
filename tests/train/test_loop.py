"""The training loop on CPU: exact resume, outputs, validation, damaged data, weight decay groups, clipping, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from ghostfacenets import __version__, create_model, load_model
from ghostfacenets.cli import main
from ghostfacenets.data.datasets import SyntheticSource
from ghostfacenets.data.verification_bin import load_verification_bin, write_verification_bin
from ghostfacenets.errors import GhostFaceNetsError
from ghostfacenets.model_io import read_metadata
from ghostfacenets.train import loop
from ghostfacenets.train.checkpoint import CheckpointError, list_checkpoints
from ghostfacenets.train.config import load_config
from ghostfacenets.train.distributed import DistributedContext
from ghostfacenets.train.loop import Trainer, train
from ghostfacenets.train.optim import clip_gradients, parameter_groups
from ghostfacenets.train.validation import prepare_validation
from tests.helpers import shared_path

TINY = [
    "model.architecture=ghostfacenetv1-0.5-2",
    "model.embedding_size=32",
    "train.batch_size=8",
    "data.workers=0",
    "train.tensorboard=false",
    "train.progress=false",
    "optim.schedule=cosine",
    "optim.warmup_epochs=1",
    "optim.lr=0.05",
    "data.augment.rotation=8",
    "data.augment.shift=0.05",
    "loss.scale=[[0, 16], [1, 32]]",
    "train.log_every=1",
]


def tiny_config(output: Path, *overrides: str):
    return load_config(None, [*TINY, "data.train=synthetic:32:4", f"output={output}", *overrides])


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic and fast on a shared machine
    yield
    torch.set_num_threads(threads)


def val_bin(path: Path, pairs: int = 20) -> Path:
    """A verification .bin of synthetic images: pair p is (2p, 2p + 1), labelled same for even p."""
    source = SyntheticSource(2 * pairs, 8)
    write_verification_bin(path, [source.load(i)[0] for i in range(2 * pairs)], [p % 2 == 0 for p in range(pairs)])
    return path


def test_resume_continues_exactly(tmp_path: Path) -> None:
    # Dropout draws from the global torch RNG and sampled negatives from the head's own generator: both must be
    # restored and nothing else may draw from them (32 classes, 16 sampled per step: the sampling really runs).
    random = ("data.train=synthetic:32:32", "loss.sample_rate=0.5", "model.dropout=0.2")
    straight = train(tiny_config(tmp_path / "a", "train.epochs=2", "train.max_steps=6", *random))
    assert straight.steps == 6
    first = train(
        tiny_config(tmp_path / "b", "train.epochs=2", "train.max_steps=3", "train.checkpoint_every=3", *random)
    )
    assert first.steps == 3
    resumed = train(tiny_config(tmp_path / "b", "train.epochs=2", "train.max_steps=6", *random))
    assert resumed.steps == 6
    a, b = load_file(straight.final), load_file(resumed.final)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # The class centres and their momentum continue too.
    for name in ("centres-00000.pt", "trainer.pt"):
        sa = torch.load(tmp_path / "a" / "checkpoints" / "step-000000006" / name, weights_only=True)
        sb = torch.load(tmp_path / "b" / "checkpoints" / "step-000000006" / name, weights_only=True)
        assert sa["ghostfacenets_version"] == sb["ghostfacenets_version"] == __version__
        if name == "trainer.pt":
            for key, value in sa["optimizer"]["state"].items():
                assert torch.equal(value["momentum_buffer"], sb["optimizer"]["state"][key]["momentum_buffer"])
        else:
            assert torch.equal(sa["weight"], sb["weight"]) and torch.equal(sa["momentum"], sb["momentum"])
    # metrics.jsonl of the resumed run has each step once, every record with the version that wrote it
    records = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert {r["ghostfacenets_version"] for r in records} == {__version__}


def test_final_model_loads_with_training_metadata(tmp_path: Path) -> None:
    result = train(tiny_config(tmp_path, "train.epochs=1"))
    model = load_model(tmp_path / "final.safetensors")
    assert model.config.embedding_size == 32 and model.config.width == 0.5 and model.config.stem_stride == 2
    meta = model.metadata
    assert meta["training_data"] == "synthetic:32:4"
    assert meta["loss"].startswith("arcface (m1=1, m2=0.5, m3=0")
    assert meta["training"]["steps"] == result.steps == 4 and meta["training"]["identities"] == 4
    assert meta["training"]["config"]["train"]["batch_size"] == 8
    assert meta["ghostfacenets_version"] == __version__
    assert model(torch.zeros(2, 3, 112, 112)).shape == (2, 32)


def test_resume_refuses_another_batch_size(tmp_path: Path) -> None:
    train(tiny_config(tmp_path, "train.epochs=1"))
    with pytest.raises(CheckpointError, match="batch_size"):
        train(tiny_config(tmp_path, "train.epochs=2", "train.batch_size=16"))


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.embedding_size=16", "model.embedding_size=32"),
        ("model.architecture=ghostfacenetv2-0.5-2", "model.architecture"),
        ("loss.type=subcenter", "3 sub-centre"),
    ],
)
def test_resume_refuses_another_model_or_head(tmp_path: Path, override: str, message: str) -> None:
    train(tiny_config(tmp_path, "train.epochs=1"))
    with pytest.raises(CheckpointError, match=message):
        Trainer(tiny_config(tmp_path, "train.epochs=2", override))


def test_fresh_start_in_a_used_output_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train(tiny_config(tmp_path, "train.epochs=1"))
    with pytest.raises(CheckpointError, match="train.resume=auto"):
        train(tiny_config(tmp_path, "train.epochs=1", "train.resume=none"))
    assert main(["train", *TINY, "data.train=synthetic:32:4", f"output={tmp_path}", "train.resume=none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another output" in err[0]
    shutil.rmtree(tmp_path / "checkpoints")  # final.safetensors is still there: not an empty run folder
    with pytest.raises(CheckpointError, match="final.safetensors"):
        train(tiny_config(tmp_path, "train.epochs=1"))


def test_resuming_an_earlier_checkpoint_replaces_the_later_ones(tmp_path: Path) -> None:
    keep = (
        "train.checkpoint_every=1",
        "train.keep_checkpoints=3",
        "train.val_every=1",
        f"data.val=[{val_bin(tmp_path / 'v.bin')}]",
        "data.val_flip=false",
    )
    train(tiny_config(tmp_path / "run", "train.epochs=1", *keep))  # 4 steps: checkpoints 2, 3, 4 are kept

    def names() -> list[str]:
        return [p.name for p in list_checkpoints(tmp_path / "run" / "checkpoints")]

    assert names() == ["step-000000002", "step-000000003", "step-000000004"]
    # best.safetensors written after step 2 belongs to the abandoned steps; make the checkpoint's best value
    # unbeatable so that keeping it would keep that stale file.
    shutil.copy(tmp_path / "run" / "final.safetensors", tmp_path / "run" / "best.safetensors")
    state_path = tmp_path / "run" / "checkpoints" / "step-000000002" / "trainer.pt"
    state = torch.load(state_path, weights_only=True)
    torch.save({**state, "best_value": 2.0}, state_path)
    result = train(
        tiny_config(tmp_path / "run", "train.epochs=1", "train.max_steps=3", *keep, f"train.resume={state_path.parent}")
    )
    assert result.steps == 3 and names() == ["step-000000002", "step-000000003"]
    assert read_metadata(tmp_path / "run" / "best.safetensors")["training"]["steps"] == 3
    assert result.best_value == result.validation["v"]["accuracy_10fold_mean"]


def test_unknown_best_metric_fails_before_training(tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "run", f"data.val=[{val_bin(tmp_path / 'lfw.bin')}]", "train.best_metric=agedb")
    with pytest.raises(GhostFaceNetsError, match="train.best_metric 'agedb'.*lfw"):
        train(config)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_resume_applies_the_configured_optimiser_settings(tmp_path: Path) -> None:
    train(tiny_config(tmp_path, "train.epochs=1"))
    trainer = Trainer(
        tiny_config(tmp_path, "train.epochs=2", "optim.momentum=0.5", "optim.weight_decay=0.001", "optim.nesterov=true")
    )
    assert trainer.step == 4
    groups = trainer.optimizer.param_groups
    assert [(g["momentum"], g["nesterov"], g["weight_decay"]) for g in groups] == [
        (0.5, True, 0.001),
        (0.5, True, 0.0),
        (0.5, True, 0.001),
    ]
    saved = torch.load(tmp_path / "checkpoints" / "step-000000004" / "centres-00000.pt", weights_only=True)
    assert torch.equal(trainer.optimizer.state[trainer.head.weight]["momentum_buffer"], saved["momentum"])
    first = groups[0]["params"][0]
    assert trainer.optimizer.state[first]["momentum_buffer"].abs().sum() > 0  # the backbone momentum is restored


@pytest.mark.parametrize("written_by_0_1", [False, True])
def test_resume_keeps_the_damaged_images_found_before(tmp_path: Path, written_by_0_1: bool) -> None:
    train(tiny_config(tmp_path, "train.epochs=2", "train.max_steps=2"))
    earlier = ["/data/faces/x/1.jpg: not an image"]
    record = earlier if written_by_0_1 else {"ghostfacenets_version": "0.2.0.dev0", "damaged": earlier}
    (tmp_path / "damaged_images.json").write_text(json.dumps(record))
    result = train(tiny_config(tmp_path, "train.epochs=2"))
    assert result.damaged == earlier
    written = json.loads((tmp_path / "damaged_images.json").read_text())
    assert written == {"ghostfacenets_version": __version__, "damaged": earlier}
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["damaged"] for r in records if r["step"] > 2] == [1] * 6


def test_fp16_overflow_skips_backbone_and_centres_together(tmp_path: Path) -> None:
    trainer = Trainer(tiny_config(tmp_path, "optim.warmup_epochs=0"))  # learning rate 0.05 from the first step
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    source = SyntheticSource(32, 4)
    images = torch.stack([torch.from_numpy(source.load(i)[0]) for i in range(8)])
    labels = torch.tensor([source.load(i)[1] for i in range(8)])
    parameters = [*trainer.model.parameters(), trainer.head.weight]
    before = [p.detach().clone() for p in parameters]
    trainer.forward_backward(images, labels)
    with torch.no_grad():
        trainer.head.weight.grad[0, 0, 0] = float("inf")  # an overflow in the class-centre gradients only
    trainer.optimiser_step()
    assert trainer.scaler.get_scale() == 512.0
    assert all(torch.equal(a, b) for a, b in zip(before, parameters))
    trainer.forward_backward(images, labels)
    trainer.optimiser_step()  # a finite step moves both
    assert not torch.equal(before[0], parameters[0]) and not torch.equal(before[-1], parameters[-1])


def test_bf16_autocast_trains_on_a_cpu(tmp_path: Path) -> None:
    """train.amp=bf16 runs the backbone's convolutions in bfloat16 on a CPU, keeps float32 weights and gradients
    (no loss scaling), and a whole run finishes with finite losses and a loadable float32 model."""
    trainer = Trainer(tiny_config(tmp_path / "step", "train.amp=bf16", "optim.warmup_epochs=0"))
    assert trainer.amp == "bf16" and not trainer.scaler.is_enabled()
    seen: list[torch.dtype] = []
    conv = next(m for m in trainer.model.modules() if isinstance(m, nn.Conv2d))
    conv.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    source = SyntheticSource(32, 4)
    images = torch.stack([torch.from_numpy(source.load(i)[0]) for i in range(8)])
    labels = torch.tensor([source.load(i)[1] for i in range(8)])
    before = conv.weight.detach().clone()
    trainer.forward_backward(images, labels)
    assert seen == [torch.bfloat16]
    assert conv.weight.grad is not None and conv.weight.grad.dtype == torch.float32
    assert torch.isfinite(conv.weight.grad).all() and conv.weight.grad.abs().sum() > 0
    trainer.optimiser_step()
    assert conv.weight.dtype == torch.float32 and not torch.equal(conv.weight.detach(), before)

    result = train(tiny_config(tmp_path / "run", "train.amp=bf16", "train.epochs=2"))
    losses = [
        json.loads(line)["loss"]
        for line in (result.output / "metrics.jsonl").read_text().splitlines()
        if "loss" in json.loads(line)
    ]
    assert len(losses) == result.steps and all(np.isfinite(losses))
    model = load_model(result.final)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_weight_decay_reaches_kernels_and_class_centres(tmp_path: Path) -> None:
    trainer = Trainer(
        tiny_config(
            tmp_path, "optim.schedule=constant", "optim.warmup_epochs=0", "optim.lr=0.5", "optim.weight_decay=0.1"
        )
    )
    parameters = [*trainer.model.parameters(), trainer.head.weight]
    for p in parameters:
        p.grad = torch.zeros_like(p)
    before = [p.detach().clone() for p in parameters]
    decayed = {id(p) for p in parameter_groups(trainer.model, 0.1)[0]["params"]} | {id(trainer.head.weight)}
    trainer.optimiser_step()
    for p, old in zip(parameters, before):
        torch.testing.assert_close(p.detach(), old * (1 - 0.5 * 0.1) if id(p) in decayed else old, rtol=1e-6, atol=1e-7)


def test_optimiser_step_clips_the_global_norm(tmp_path: Path) -> None:
    trainer = Trainer(
        tiny_config(
            tmp_path,
            "optim.schedule=constant",
            "optim.warmup_epochs=0",
            "optim.lr=1",
            "optim.weight_decay=0",
            "optim.momentum=0",
            "train.clip_grad_norm=0.5",
        )
    )
    parameters = [*trainer.model.parameters(), trainer.head.weight]
    generator = torch.Generator().manual_seed(0)
    grads = [torch.randn(p.shape, generator=generator) for p in parameters]
    for p, g in zip(parameters, grads):
        p.grad = g.clone()
    norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
    assert norm > 5
    before = [p.detach().clone() for p in parameters]
    trainer.optimiser_step()
    for p, old, g in zip(parameters, before, grads):
        torch.testing.assert_close(old - p.detach(), g * (0.5 / norm), rtol=1e-4, atol=1e-7)


def test_images_per_second_leave_out_checkpoint_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]  # 1 s per optimiser step, 100 s per checkpoint
    monkeypatch.setattr(loop, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    step, save = Trainer.optimiser_step, Trainer.save_checkpoint

    def timed_step(self: Trainer) -> None:
        step(self)
        clock[0] += 1.0

    def timed_save(self: Trainer) -> Path:
        clock[0] += 100.0
        return save(self)

    monkeypatch.setattr(Trainer, "optimiser_step", timed_step)
    monkeypatch.setattr(Trainer, "save_checkpoint", timed_save)
    train(tiny_config(tmp_path, "train.epochs=1", "train.log_every=2", "train.checkpoint_every=1"))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["img_per_s"]) for r in records] == [(2, 8.0), (4, 8.0)]  # 2 steps x 8 images in 2 s


def test_folder_validation_pairs_follow_the_config(tmp_path: Path) -> None:
    data = _folder(tmp_path / "faces", 4, 3)

    def pairs_written(*overrides: str) -> int:
        config = tiny_config(tmp_path / "run", f"data.train={data}", f"data.val=[{data}]", *overrides)
        [path] = prepare_validation(config, tmp_path / "run", DistributedContext())
        assert path == tmp_path / "run" / "val" / "faces.bin"
        return len(load_verification_bin(path)[1])

    assert pairs_written("data.val_pairs=10", "data.val_identities=[id0, id1]") == 10
    assert pairs_written("data.val_pairs=6", "data.val_identities=[id0, id1]") == 6
    assert pairs_written("data.val_pairs=null", "data.val_identities=[id0, id1]") == 15  # 6 images: every pair
    assert pairs_written("data.val_pairs=null", "data.val_identities=[id0, id1, id2]") == 36


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
    config = tiny_config(
        tmp_path / "run",
        f"data.train={data}",
        "train.epochs=2",
        "data.train_identities=[id0, id1, id2, id3]",
        f"data.val=[{data}]",
        "data.val_identities=[id4, id5]",
        "data.val_pairs=20",
        "data.val_flip=false",
    )
    result = train(config)
    assert result.steps == 4  # 17 images, batch 8: 2 steps per epoch
    assert len(result.damaged) == 1 and "9.png" in result.damaged[0]
    assert json.loads((tmp_path / "run" / "damaged_images.json").read_text())["damaged"] == result.damaged
    metrics = result.validation["faces"]
    assert metrics["pairs"] == 20 and metrics["flip"] is False
    assert (tmp_path / "run" / "val" / "faces.bin").is_file()
    made_with = json.loads((tmp_path / "run" / "val" / "faces.json").read_text())
    assert made_with["ghostfacenets_version"] == __version__ and made_with["pairs"] == 20
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    validations = [r for r in records if "val" in r]
    assert [r["step"] for r in validations] == [2, 4]
    assert {"step", "epoch", "loss", "lr", "img_per_s"} <= set(records[0])
    # The evaluation command on the final model reproduces the last validation.
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(result.final),
                "--bin",
                str(tmp_path / "run" / "val" / "faces.bin"),
                "--no-flip",
                "--json",
                str(tmp_path / "eval.json"),
                "--quiet",
            ]
        )
        == 0
    )
    evaluated = json.loads((tmp_path / "eval.json").read_text())["sets"]["faces"]
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
    others = {
        id(p)
        for m in model.modules()
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d, nn.PReLU))
        for p in m.parameters(recurse=False)
    }
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
    assert f"data.train: {tmp_path / 'missing'}: no such file or folder\n" in capsys.readouterr().err


def test_cli_train_json_summary(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["train", *TINY, "data.train=synthetic:16:2", f"output={tmp_path}", "train.epochs=1", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 2 and summary["final"] == str(tmp_path / "final.safetensors")


def test_quickstart_config_runs(tmp_path: Path) -> None:
    faces = shared_path("data", "att_faces")
    config = load_config(
        "quickstart-cpu",
        [
            f"data.train={faces}",
            f"data.val=[{faces}]",
            f"output={tmp_path}",
            "train.max_steps=1",
            "data.workers=0",
            "train.progress=false",
            "train.tensorboard=false",
        ],
    )
    result = train(config)
    assert result.steps == 1 and load_model(result.final).config.embedding_size == 128
    images, issame = load_verification_bin(tmp_path / "val" / "att_faces.bin")
    assert images.shape == (1800, 112, 112, 3) and issame.sum() == 450 and len(issame) == 900
    assert (images[:, :, :10] == 0).all()  # 92x112 photos padded with black
    assert result.validation["att_faces"]["pairs"] == 900 and result.validation["att_faces"]["flip"] is False


def test_missing_data_paths_fail_first_saying_where_they_were_looked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config("quickstart-cpu", [*TINY, "output=run"])
    with pytest.raises(GhostFaceNetsError) as error:
        Trainer(config)
    message = str(error.value)
    assert message.startswith(
        f"data.train: ../shared/data/att_faces: no such file or folder (relative to the working directory, {tmp_path})"
    )
    assert "ORL / AT&T" in message and not (tmp_path / "run").exists()  # nothing written before the check
    (tmp_path / "faces").mkdir()
    config = load_config(None, [*TINY, "data.train=synthetic:8:2", f"data.val=[{tmp_path / 'x.bin'}]"])
    with pytest.raises(GhostFaceNetsError, match=rf"^data.val: {tmp_path / 'x.bin'}: no such file or folder$"):
        Trainer(config)
