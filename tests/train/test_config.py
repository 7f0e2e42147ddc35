"""Typed YAML configs with dotted overrides; every shipped config loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from ghostfacenets.models.registry import ARCHITECTURES
from ghostfacenets.train.config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_overrides_are_parsed_as_yaml_and_type_checked(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("output: runs/a\ndata:\n  train: /data/x\n  augment:\n    rotation: 5\ntrain:\n  epochs: 3\n")
    config = load_config(
        path,
        [
            "train.epochs=7",
            "train.max_steps=20",
            "data.val=[a.bin, b.bin]",
            "optim.lr=1",
            "loss.scale=[[0, 16], [2, 48]]",
            "data.augment.scale=[0.9, 1.1]",
            "output=runs/b",
        ],
    )
    assert config.train.epochs == 7 and config.train.max_steps == 20
    assert config.data.val == ["a.bin", "b.bin"] and config.output == "runs/b"
    assert config.optim.lr == 1.0 and isinstance(config.optim.lr, float)
    assert config.loss.scale == [(0.0, 16.0), (2.0, 48.0)]
    assert config.data.augment.scale == (0.9, 1.1) and config.data.augment.rotation == 5.0
    assert load_config(path, ["train.max_steps=null"]).train.max_steps is None


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.epoch=3", "unknown key"),
        ("train.epochs=three", "train.epochs: expected int"),
        ("train.epochs=2.5", "expected int"),
        ("data.val=x.bin", "expected a list"),
        ("loss.type=sphereface", "loss.type"),
        ("train.batch_size=0", "must be positive"),
        ("data.augment.scale=[1]", "expected 2 values"),
        ("nokey", "key=value"),
        ("train.amp=fp8", "train.amp"),
        ("optim.restart_t_mul=0.5", "optim.restart_t_mul must be at least 1"),
        ("optim.restart_t_mul=0", "optim.restart_t_mul must be at least 1"),
        ("optim.cooldown_epochs=-1", "optim.cooldown_epochs must be 0 or more"),
        ("optim.warmup_epochs=-0.5", "optim.warmup_epochs must be 0 or more"),
        ("optim.lr_min=-0.001", "optim.lr_min must be 0 or more"),
        ("loss.m2=0.3", "combined"),
        ("data.train=synthetic:10:2:3", "synthetic"),
    ],
)
def test_bad_values_say_what_is_wrong(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["data.train=/x", override])


def test_margin_of_a_combined_loss_is_m1_m2_m3() -> None:
    assert load_config(None, ["data.train=/x", "loss.type=combined", "loss.m2=0.3"]).loss.m2 == 0.3
    assert load_config(None, ["data.train=/x", "loss.type=cosface", "loss.margin=0.4"]).loss.margin == 0.4
    with pytest.raises(ConfigError, match="loss.margin"):
        load_config(None, ["data.train=/x", "loss.type=combined", "loss.margin=0.3"])


def test_data_train_is_required() -> None:
    with pytest.raises(ConfigError, match="data.train"):
        load_config(None, [])


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path: Path) -> None:
    config = load_config(path)
    assert config.model.architecture in ARCHITECTURES
    assert config.data.train and config.output


def test_paper_recipe_configs_cover_the_table() -> None:
    names = {p.stem for p in CONFIGS.glob("*.yaml")}
    assert "quickstart-cpu" in names
    for name in (
        "ghostfacenetv1-1.3-1-arcface-ms1mv2",
        "ghostfacenetv1-1.3-2-cosface-ms1mv2",
        "ghostfacenetv1-1.3-2-subcenter-ms1mv2",
        "ghostfacenetv2-1.3-2-arcface-ms1mv3",
        "ghostfacenetv1-2-1-arcface-ms1mv2",
    ):
        assert name in names
    config = load_config(CONFIGS / "ghostfacenetv1-1.3-1-arcface-ms1mv2.yaml")
    assert (config.model.gdc_bias, config.train.batch_size, config.train.epochs) == (True, 128, 51)
    assert (config.optim.lr, config.optim.weight_decay, config.optim.schedule) == (0.1, 5e-4, "official")
    assert config.loss.scale == [(0.0, 32.0), (1.0, 64.0)]
    assert load_config(CONFIGS / "ghostfacenetv1-1.3-2-subcenter-ms1mv2.yaml").loss.subcenters == 3
