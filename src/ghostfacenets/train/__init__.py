"""Training: typed YAML configs, the training loop (one process or torchrun), checkpoints, schedules and logs.

from ghostfacenets.train import load_config, train
result = train(load_config("quickstart-cpu", ["train.epochs=10"]))   # a shipped config by name, or a YAML path
"""

from .config import TrainConfig, load_config
from .loop import Trainer, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "Trainer", "load_config", "train"]
