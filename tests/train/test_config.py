"""Typed YAML configs with dotted overrides; the configs shipped in the package, by name; placeholders."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from ghostfacenets import __version__
from ghostfacenets.cli import main
from ghostfacenets.models.registry import ARCHITECTURES
from ghostfacenets.train.config import (
    MISSING,
    ConfigError,
    load_config,
    missing_values,
    shipped_config_names,
    shipped_config_text,
)

SHIPPED = Path(__file__).resolve().parents[2] / "src" / "ghostfacenets" / "configs"
DATA = ("data.train=/data/faces_emore", "data.val=[/data/faces_emore/lfw.bin]")


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


def test_the_shipped_configs_are_the_files_of_the_package_folder() -> None:
    names = shipped_config_names()
    assert names == sorted(p.stem for p in SHIPPED.glob("*.yaml")) and len(names) == 29
    assert not (SHIPPED.parents[2] / "configs").exists()  # one copy, inside the package
    assert shipped_config_text("quickstart-cpu") == (SHIPPED / "quickstart-cpu.yaml").read_text()


@pytest.mark.parametrize("name", sorted(p.stem for p in SHIPPED.glob("*.yaml")))
def test_shipped_configs_load_by_name_and_path(name: str) -> None:
    given = [] if name == "quickstart-cpu" else list(DATA)
    config = load_config(name, given)
    assert config.model.architecture in ARCHITECTURES and config.data.train and config.output
    assert config.description and "\n" not in config.description
    assert load_config(SHIPPED / f"{name}.yaml", given) == config


def test_paper_recipe_configs_cover_the_table() -> None:
    names = set(shipped_config_names())
    assert "quickstart-cpu" in names
    for name in (
        "ghostfacenetv1-1.3-1-arcface-ms1mv2",
        "ghostfacenetv1-1.3-2-cosface-ms1mv2",
        "ghostfacenetv1-1.3-2-subcenter-ms1mv2",
        "ghostfacenetv2-1.3-2-arcface-ms1mv3",
        "ghostfacenetv1-2-1-arcface-ms1mv2",
    ):
        assert name in names
    config = load_config("ghostfacenetv1-1.3-1-arcface-ms1mv2", DATA)
    assert (config.model.gdc_bias, config.train.batch_size, config.train.epochs) == (True, 128, 51)
    assert (config.optim.lr, config.optim.weight_decay, config.optim.schedule) == (0.1, 5e-4, "official")
    assert config.loss.scale == [(0.0, 32.0), (1.0, 64.0)]
    assert load_config("ghostfacenetv1-1.3-2-subcenter-ms1mv2", DATA).loss.subcenters == 3


@pytest.mark.parametrize(
    ("name", "reported"),
    [  # the official README's numbers (spec 4.2), written out here
        ("ghostfacenetv1-1.3-1-arcface-ms1mv3", "LFW 99.73, CFP-FP 96.83, AgeDB-30 98, IJB-B 93.12, IJB-C 94.94"),
        ("ghostfacenetv1-0.5-2-arcface-ms1mv2", "LFW 99.783 (sic), CFP-FP 83.4, AgeDB-30 91.13"),
        ("ghostfacenetv2-1.3-2-cosface-ms1mv2", "LFW 99.584, CFP-FP 91.931, AgeDB-30 95.6"),
        ("ghostfacenetv2-1.3-2-arcface-ms1mv3", "LFW 99.683, CFP-FP 94.2857, AgeDB-30 96.833, IJB-B 91.889"),
    ],
)
def test_recipe_descriptions_say_model_loss_data_and_the_reported_numbers(name: str, reported: str) -> None:
    description = load_config(name, allow_missing=True).description
    model, loss, data = re.fullmatch(r"ghostfacenet(v\d-[\d.]+-\d)-(arcface|cosface)-(ms1mv\d)", name).groups()
    assert description.startswith(f"GhostFaceNet{model.upper()}, {'ArcFace' if loss == 'arcface' else 'CosFace'}")
    assert data.upper() in description and description.endswith(f"reported {reported}")


@pytest.mark.parametrize("name", [n for n in sorted(p.stem for p in SHIPPED.glob("*.yaml")) if n != "quickstart-cpu"])
def test_recipes_leave_their_data_to_be_given(name: str) -> None:
    raw = yaml.safe_load(shipped_config_text(name))
    assert (raw["data"]["train"], raw["data"]["val"]) == (MISSING, MISSING)
    with pytest.raises(ConfigError) as error:
        load_config(name)
    message = str(error.value)
    assert message.startswith("data.train, data.val must be given") and "data.train=/" in message
    assert "'data.val=[" in message and "working directory" in message
    with pytest.raises(ConfigError, match=r"^data.val must be given"):
        load_config(name, ["data.train=/x"])
    shown = load_config(name, allow_missing=True)
    assert missing_values(shown) == ["data.train", "data.val"] and shown.data.train == MISSING


def test_a_placeholder_anywhere_is_named(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text('output: ???\ndata:\n  train: /x\n  val: [a.bin, "???"]\ntrain:\n  epochs: ???\n')
    with pytest.raises(ConfigError, match=r"^output, data.val, train.epochs must be given .* train.epochs=VALUE"):
        load_config(path)
    assert load_config(path, ["output=runs/x", "data.val=[]", "train.epochs=2"]).train.epochs == 2


def test_the_quickstart_says_where_its_data_comes_from() -> None:
    text = shipped_config_text("quickstart-cpu")
    for words in ("ORL / AT&T", "att_faces", "s1 ... s40", "relative to the working directory", "data.train=DIR"):
        assert words in text
    config = load_config("quickstart-cpu")
    assert config.data.train == "../shared/data/att_faces" and config.data.val == ["../shared/data/att_faces"]
    assert missing_values(config) == []


def test_a_config_is_a_file_first_then_a_shipped_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quickstart-cpu").write_text("data:\n  train: mine\n")  # an existing path always wins
    assert load_config("quickstart-cpu").data.train == "mine"
    with pytest.raises(ConfigError, match=r"configs/quickstart-cpu.yaml: no such config file.*-c quickstart-cpu$"):
        load_config("configs/quickstart-cpu.yaml")
    with pytest.raises(ConfigError, match="did you mean ghostfacenetv1-1.3-1-arcface-ms1mv3"):
        load_config("ghostfacenetv1-1.3-1-arcface-ms1m3")
    with pytest.raises(ConfigError, match=r"no shipped config of that name"):
        shipped_config_text("nothing-like-it")


def test_cli_configs_lists_names_and_descriptions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = shipped_config_names()
    listed = {line.split()[0]: line.split(None, 1)[1] for line in lines[: len(names)]}
    assert list(listed) == names
    assert listed["quickstart-cpu"] == load_config("quickstart-cpu").description
    assert main(["configs", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in records] == names
    recipe = next(r for r in records if r["name"] == "ghostfacenetv2-1.3-2-subcenter-ms1mv2")
    assert (recipe["architecture"], recipe["loss"], recipe["epochs"]) == ("ghostfacenetv2-1.3-2", "subcenter", 51)
    assert recipe["to_give"] == ["data.train", "data.val"]
    assert next(r for r in records if r["name"] == "quickstart-cpu")["to_give"] == []
    assert main(["configs", "quickstart-cpu"]) == 0
    assert capsys.readouterr().out == shipped_config_text("quickstart-cpu")
    assert main(["configs", "quickstart"]) == 2
    assert "did you mean quickstart-cpu" in capsys.readouterr().err


def test_cli_train_by_name_print_config_and_placeholders(capsys: pytest.CaptureFixture[str]) -> None:
    name = "ghostfacenetv1-1.3-1-arcface-ms1mv3"
    assert main(["train", "-c", name, "--print-config"]) == 0
    out, err = capsys.readouterr()
    header, _, body = out.partition("\n")
    assert header == f"# ghostfacenets {__version__}: the resolved config of {name}"
    printed = yaml.safe_load(body)  # the comment keeps it a loadable config
    assert printed["data"]["train"] == MISSING and printed["model"]["architecture"] == "ghostfacenetv1-1.3-1"
    assert err.startswith("note: data.train, data.val must be given")
    assert main(["train", "-c", name, *DATA, "--print-config"]) == 0
    out, err = capsys.readouterr()
    assert yaml.safe_load(out)["data"]["val"] == ["/data/faces_emore/lfw.bin"] and err == ""
    assert main(["train", "-c", name]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.train, data.val must be given" in err[0]
