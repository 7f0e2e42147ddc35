"""The training loop: one process or many under ``torchrun``, CPU or CUDA, resumable exactly.

One optimiser step consumes the global batch ``train.batch_size``, split over processes and ``train.accumulation``
micro-batches; the loss of each micro-batch is divided by the accumulation count and the schedule advances once per
optimiser step. The backbone is wrapped in DDP; the class centres are sharded by :class:`PartialFC`. One SGD
optimiser steps both (the centres are its last parameter group), so an fp16 overflow skips them together; the centres'
momentum is saved per rank with the centres (so it can be re-sharded on resume), not with the backbone's.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..data.datasets import (
    TrainDataset,
    TrainSampler,
    collate,
    open_source,
    parse_synthetic,
    steps_per_epoch,
)
from ..data.transforms import to_tensor
from ..errors import GhostFaceNetsError
from ..export.onnx import onnx_available
from ..files import read_json, written_by
from ..losses import PartialFC, ScaleSchedule, margin_from_name
from ..models.ghostfacenet import GhostFaceNet
from .checkpoint import (
    CentreShard,
    CheckpointError,
    checkpoint_root,
    find_checkpoint,
    list_checkpoints,
    load_centre_shard,
    load_rng_state,
    load_trainer_state,
    save_checkpoint,
)
from .config import TrainConfig
from .distributed import DistributedContext, init_distributed
from .logging import MetricsLog, console
from .optim import clip_gradients, parameter_groups
from .schedule import LRSchedule
from .validation import prepare_validation

LICENSE_NOTE = "Weights trained with ghostfacenets; the terms of the training data bind them."


@dataclass
class TrainResult:
    """What a finished (or already finished) run produced."""

    output: Path
    final: Path
    steps: int
    epochs: float
    best: Path | None = None
    best_value: float | None = None
    validation: dict[str, dict[str, Any]] = field(default_factory=dict)
    damaged: list[str] = field(default_factory=list)


def model_from_config(config: TrainConfig) -> GhostFaceNet:
    """A fresh model of ``model.architecture`` (seeded by ``train.seed``), or initialised from ``model.init``."""
    from ..model_io import load_model
    from ..models.registry import create_model

    section = config.model
    torch.manual_seed(config.train.seed)
    model = create_model(
        section.architecture,
        embedding_size=section.embedding_size,
        gdc_bias=section.gdc_bias,
        dropout=section.dropout,
        input_size=section.input_size,
    )
    if section.init:
        source = load_model(section.init)
        fixed = ("version", "width", "stem_stride", "embedding_size", "gdc_bias", "input_size")
        if any(getattr(source.config, key) != getattr(model.config, key) for key in fixed):
            raise GhostFaceNetsError(
                f"model.init {section.init}: its architecture {source.config} differs from "
                f"the configured {model.config}"
            )
        model.load_state_dict(source.state_dict())
    return model


def loss_description(config: TrainConfig) -> str:
    loss = config.loss
    margin = margin_from_name(loss.type, loss.margin, loss.m1, loss.m2, loss.m3, loss.fallback)
    scales = ", ".join(f"{s:g} from epoch {e:g}" for e, s in loss.scale)
    subcenters = f", {loss.subcenter_count} sub-centres" if loss.subcenter_count > 1 else ""
    return f"{loss.type} (m1={margin.m1:g}, m2={margin.m2:g}, m3={margin.m3:g}{subcenters}; scale {scales})"


def check_data_paths(config: TrainConfig) -> None:
    """Every data path exists, or one line saying where a relative path was looked for (the working directory)."""
    paths = [] if parse_synthetic(config.data.train) is not None else [("data.train", config.data.train)]
    for key, value in [*paths, *(("data.val", entry) for entry in config.data.val)]:
        path = Path(value)
        if not path.exists():
            where = "" if path.is_absolute() else f" (relative to the working directory, {Path.cwd()})"
            about = f"; the config: {config.description}" if config.description else ""
            raise GhostFaceNetsError(f"{key}: {value}: no such file or folder{where}{about}")


def _format(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _without_centres(optimizer_state: dict[Any, Any], layout: dict[str, Any]) -> dict[Any, Any]:
    """Per-parameter optimiser state without the class centres', which are the only parameter of the last group of
    the optimiser state dict ``layout``."""
    centres = layout["param_groups"][-1]["params"][0]
    return {k: v for k, v in optimizer_state.items() if k != centres}


def _model_step(path: Path) -> int | None:
    """The training step recorded in a model file written by a run; None when it records none."""
    from ..model_io import read_metadata

    try:
        return int(read_metadata(path)["training"]["steps"])
    except (GhostFaceNetsError, KeyError, TypeError, ValueError):
        return None


def _rng_state(head: PartialFC, device: torch.device) -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "negatives": head.negative_generator.get_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def _worker_init(_: int) -> None:
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


class Trainer:
    """Builds everything from a :class:`TrainConfig` and runs it; ``Trainer(config).run()``."""

    def __init__(self, config: TrainConfig, context: DistributedContext | None = None) -> None:
        self.config = cfg = config
        self.context = ctx = context or init_distributed(cfg.train.device)
        self.device = ctx.device
        self.output = Path(cfg.output)
        check_data_paths(cfg)
        if ctx.is_main:
            self.output.mkdir(parents=True, exist_ok=True)
        self.source = open_source(
            cfg.data.train, cfg.data.train_identities, cfg.model.input_size, cfg.data.resize, cfg.data.num_classes
        )
        if self.source.num_classes is None:  # open_source refuses such sets; a guard for other sources
            raise GhostFaceNetsError(f"{cfg.data.train}: the number of identities is unknown; set data.num_classes")
        self.num_classes = int(self.source.num_classes)
        self.steps_per_epoch = steps_per_epoch(len(self.source), cfg.train.batch_size)
        self.total_steps = cfg.train.epochs * self.steps_per_epoch
        self.stop_step = min(self.total_steps, cfg.train.max_steps or self.total_steps)
        self.schedule = LRSchedule.from_config(cfg.optim, self.steps_per_epoch, self.total_steps)
        self.scale = ScaleSchedule.from_pairs(cfg.loss.scale)

        self.model = model_from_config(cfg).to(self.device)
        loss = cfg.loss
        margin = margin_from_name(loss.type, loss.margin, loss.m1, loss.m2, loss.m3, loss.fallback)
        self.head = PartialFC(
            cfg.model.embedding_size,
            self.num_classes,
            margin,
            loss.subcenter_count,
            loss.sample_rate,
            ctx.group,
            cfg.train.seed,
        ).to(self.device)
        torch.manual_seed(cfg.train.seed * 1000 + ctx.rank)
        self.memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)  # type: ignore[call-overload]  # torch's stub omits it
        optim = cfg.optim
        groups = [
            *parameter_groups(self.model, optim.weight_decay),
            {"params": [self.head.weight], "weight_decay": optim.weight_decay},
        ]
        self.optimizer = torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum, nesterov=optim.nesterov)
        self.amp = self._amp_mode(cfg.train.amp)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")
        self.step = 0
        self.best_value: float | None = None
        self.damaged: dict[str, None] = {}  # every damaged image known to this rank
        self._unshared: list[str] = []  # found by this rank since the ranks last exchanged their findings
        self._resume()

        self.ddp: nn.parallel.DistributedDataParallel | None = None
        self.forward_model: nn.Module = self.model
        if ctx.distributed:
            self.ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device] if self.device.type == "cuda" else None
            )
            self.forward_model = self.ddp
        if cfg.train.compile:
            self.forward_model = typing.cast(nn.Module, torch.compile(self.forward_model))

    def _amp_mode(self, mode: str) -> str:
        if mode == "auto":
            cuda_bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
            return "bf16" if cuda_bf16 else ("fp16" if self.device.type == "cuda" else "none")
        if mode == "fp16" and self.device.type != "cuda":
            raise GhostFaceNetsError("train.amp=fp16 needs CUDA; use train.amp=none (or bf16) on CPU")
        return mode

    # ------------------------------------------------------------------------------------------------- checkpoints
    def _trainer_state(self) -> dict[str, Any]:
        optimizer = self.optimizer.state_dict()
        optimizer["state"] = _without_centres(optimizer["state"], optimizer)  # their momentum is saved per rank
        return {
            "step": self.step,
            "epoch": self.step / self.steps_per_epoch,
            "model": self.model.state_dict(),
            "optimizer": optimizer,
            "scaler": self.scaler.state_dict(),
            "best_value": self.best_value,
            "config": self.config.to_dict(),
            "num_classes": self.num_classes,
            "num_images": len(self.source),
            "global_batch": self.config.train.batch_size,
        }

    def save_checkpoint(self) -> Path:
        momentum = self.optimizer.state.get(self.head.weight, {}).get("momentum_buffer")
        shard = CentreShard(self.head.class_start, self.head.class_end, self.head.weight, momentum)
        path = save_checkpoint(
            self.context,
            self.output,
            self.step,
            self._trainer_state(),
            shard,
            _rng_state(self.head, self.device),
            self.config.train.keep_checkpoints,
        )
        self._write_damaged()
        return path

    def _refuse_used_output(self, resume: str) -> None:
        """A start that does not continue a checkpoint of ``output`` must not mix with a run already there."""
        used = (["checkpoints"] if list_checkpoints(checkpoint_root(self.output)) else []) + [
            name for name in ("best.safetensors", "final.safetensors") if (self.output / name).exists()
        ]
        if not used:
            return
        if resume == "auto":
            raise CheckpointError(
                f"{self.output} holds {', '.join(used)} but no checkpoint to resume from: choose "
                "another output (or remove those files to start anew there)"
            )
        raise CheckpointError(
            f"{self.output} already holds a training run ({', '.join(used)}): resume it with "
            "train.resume=auto, or choose another output"
        )

    def _resume(self) -> None:
        cfg = self.config
        path = find_checkpoint(self.output, cfg.train.resume)
        if path is None or path.resolve().parent != checkpoint_root(self.output).resolve():
            self._refuse_used_output(cfg.train.resume)
        if path is None:
            if self.context.is_main:  # left by a run stopped before its first checkpoint
                (self.output / "damaged_images.json").unlink(missing_ok=True)
            return
        state = load_trainer_state(path)
        shard = load_centre_shard(path, self.head.class_start, self.head.class_end, int(state["world_size"]))
        saved_model = state["config"]["model"]
        checks = [
            ("num_classes", state.get("num_classes"), self.num_classes),
            ("num_images", state.get("num_images"), len(self.source)),
            ("train.batch_size", state.get("global_batch"), cfg.train.batch_size),
            *(
                (f"model.{key}", saved_model.get(key), getattr(cfg.model, key))
                for key in ("architecture", "embedding_size", "gdc_bias", "input_size")
            ),
        ]
        for key, saved, current in checks:
            if saved != current:
                raise CheckpointError(
                    f"{path}: saved with {key}={saved}, this run has {current}; resume with the "
                    "same data, model and train.batch_size, or choose another output"
                )
        if shard.weight.shape[1:] != self.head.weight.shape[1:]:
            raise CheckpointError(
                f"{path}: its class centres have {shard.weight.shape[1]} sub-centre(s), this run "
                f"{self.head.subcenters} sub-centre(s) (loss.type, loss.subcenters); resume with the "
                "same loss, or choose another output"
            )
        self.model.load_state_dict(state["model"])
        # The backbone's momentum from the checkpoint; momentum, weight decay and nesterov as configured now.
        configured = self.optimizer.state_dict()
        configured["state"] = _without_centres(state["optimizer"]["state"], configured)
        self.optimizer.load_state_dict(configured)
        if state["scaler"]:  # empty when saved without fp16
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.best_value = int(state["step"]), state["best_value"]
        with torch.no_grad():
            self.head.weight.copy_(shard.weight)
        if shard.momentum is not None:
            self.optimizer.state[self.head.weight]["momentum_buffer"] = shard.momentum.to(self.device)
        best = self.output / "best.safetensors"
        if self.best_value is not None and best.exists():
            best_step = _model_step(best)
            if best_step is None or best_step > self.step:  # not the file the checkpoint's best value belongs to
                self.best_value = None
                if self.context.is_main:
                    console(f"{best} was written after step {self.step}; the next validation replaces it")
        earlier = read_json(self.output / "damaged_images.json") if self.context.is_main else None
        if isinstance(earlier, dict):  # {"ghostfacenets_version", "damaged"}; ghostfacenets 0.1 wrote the bare list
            earlier = earlier.get("damaged")
        if isinstance(earlier, list):  # found before the interruption
            self.damaged.update(dict.fromkeys(str(report) for report in earlier))
        if state["world_size"] == self.context.world_size:
            rng = load_rng_state(path, self.context.rank)
            torch.set_rng_state(rng["torch"])
            self.head.negative_generator.set_state(rng["negatives"])
            if rng["cuda"] is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], self.device)
        else:  # new ranks: fresh streams, still a function of (seed, step, rank)
            seed = (self.config.train.seed * 1_000_003 + self.step) * 1000 + self.context.rank
            torch.manual_seed(seed)
            self.head.negative_generator.manual_seed(seed + 1)
        if self.context.is_main:
            console(
                f"resumed from {path} at step {self.step} ({self.step / self.steps_per_epoch:.2f} epochs, "
                f"saved by {state['world_size']} process(es))"
            )

    def _share_damaged(self) -> None:
        """Collective: every rank learns the damaged images the others found since the last exchange."""
        if self.context.distributed:
            for part in self.context.all_gather_object(self._unshared):
                self.damaged.update(dict.fromkeys(part))
        self._unshared = []

    def _write_damaged(self) -> None:
        from ..files import atomic_write

        self._share_damaged()
        if self.context.is_main and self.damaged:
            with atomic_write(self.output / "damaged_images.json", "w") as f:
                json.dump({**written_by(), "damaged": sorted(self.damaged)}, f, indent=1)

    # -------------------------------------------------------------------------------------------------- validation
    def validate(self, val_paths: list[Path], log: MetricsLog | None) -> dict[str, dict[str, Any]]:
        """Evaluate every set on rank 0 (the others wait); keep ``best.safetensors`` by ``train.best_metric``."""
        results: dict[str, dict[str, Any]] = {}
        if self.context.is_main and val_paths:
            from ..evaluate.verification import evaluate_bin
            from ..inference import load_embedder

            # The weights are new at every validation: on a CPU, a runtime that takes them in about a second
            # (onnxruntime) rather than ExecuTorch, whose lowering takes tens of seconds per new weights.
            backend = "onnxruntime" if self.device.type == "cpu" and onnx_available() else "auto"
            embedder = load_embedder(self.model, self.device, backend)
            for path in val_paths:
                results[path.stem] = evaluate_bin(
                    embedder, path, flip=self.config.data.val_flip, batch_size=256, progress=False
                )
            key = self.config.train.best_key
            value = self._selection_value(results, key)
            improved = value is not None and (self.best_value is None or value > self.best_value)
            if improved:
                self.best_value = value
                self.save_model(self.output / "best.safetensors", results)
            summary = ", ".join(f"{name} {_format(r.get(key))}" for name, r in results.items())
            console(
                f"step {self.step} epoch {self.step / self.steps_per_epoch:.2f}: {key} {summary}"
                f"{' (best)' if improved else ''}"
            )
            if log is not None:
                log.write(
                    {
                        "step": self.step,
                        "epoch": self.step / self.steps_per_epoch,
                        "val": results,
                        "best_value": self.best_value,
                    }
                )
        self.best_value = self.context.broadcast_object(self.best_value)
        self.context.barrier()
        return results

    def _selection_value(self, results: dict[str, dict[str, Any]], key: str) -> float | None:
        """The number ``best.safetensors`` is chosen by; None when the sets do not provide it (too few pairs).
        ``train.best_metric`` names one of the sets or is ``mean`` (checked by :func:`prepare_validation`)."""
        metric = self.config.train.best_metric
        if metric == "mean":
            values = [r[key] for r in results.values() if r.get(key) is not None]
            return float(np.mean(values)) if values else None
        value = results[metric].get(key)
        return None if value is None else float(value)

    def save_model(self, path: Path, validation: dict[str, Any] | None = None) -> Path:
        from ..model_io import save_model

        cfg = self.config
        identities = f" (identities {', '.join(cfg.data.train_identities)})" if cfg.data.train_identities else ""
        training = {
            "data": cfg.data.train + identities,
            "images": len(self.source),
            "identities": self.num_classes,
            "steps": self.step,
            "epochs": self.step / self.steps_per_epoch,
            "config": cfg.to_dict(),
            "validation": validation or {},
        }
        return save_model(
            self.model,
            path,
            {
                "training_data": cfg.data.train + identities,
                "loss": loss_description(cfg),
                "training": training,
                "license": LICENSE_NOTE,
            },
        )

    # -------------------------------------------------------------------------------------------------------- run
    def _loader(self) -> DataLoader:
        cfg, ctx = self.config, self.context
        sampler = TrainSampler(
            len(self.source),
            cfg.train.batch_size,
            ctx.rank,
            ctx.world_size,
            cfg.train.accumulation,
            cfg.train.seed,
            self.step,
            self.stop_step,
        )
        workers = cfg.data.workers
        # Its own generator: an iterator draws its base seed from it, not from the global RNG that dropout uses,
        # so a resumed run draws the same dropout masks as an uninterrupted one.
        return DataLoader(
            TrainDataset(self.source, cfg.data.augment, cfg.train.seed),
            batch_size=sampler.micro_batch,
            sampler=sampler,
            num_workers=workers,
            collate_fn=collate,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_worker_init if workers else None,
            prefetch_factor=4 if workers else None,
            persistent_workers=False,
            generator=torch.Generator().manual_seed(cfg.train.seed),
        )

    def forward_backward(self, images: torch.Tensor, labels: torch.Tensor, last_micro: bool = True) -> torch.Tensor:
        """One micro-batch on the device (uint8 (N, H, W, 3) RGB, labels (N,)): forward, loss divided by the
        accumulation count, backward (DDP synchronises gradients only on the ``last_micro``). Returns the loss."""
        x = to_tensor(images).contiguous(memory_format=self.memory_format)
        scale = self.scale(self.step // self.steps_per_epoch)
        sync = self.ddp.no_sync() if self.ddp is not None and not last_micro else contextlib.nullcontext()
        autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16 if self.amp == "bf16" else torch.float16)
            if self.amp != "none"
            else contextlib.nullcontext()
        )
        with sync:
            with autocast:
                embeddings = self.forward_model(x)
            loss = self.head(embeddings.float(), labels, scale) / self.config.train.accumulation
            self.scaler.scale(loss).backward()
        return loss.detach()

    def optimiser_step(self) -> None:
        """Learning rate of this step, optional clipping, SGD on backbone and centres, then the step counter."""
        lr = self.schedule(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.config.train.clip_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            clip_gradients(
                list(self.model.parameters()), self.head.weight, self.config.train.clip_grad_norm, self.context
            )
        # One optimiser, one overflow check: with fp16 an inf or NaN in any gradient skips backbone and centres
        # together. Every rank skips the same steps: an overflow on one rank reaches every rank's backbone
        # gradients, through the all-reduce in the backward of the embedding all-gather and through DDP.
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1

    def run(self) -> TrainResult:
        from tqdm import tqdm

        cfg, ctx = self.config, self.context
        val_paths = prepare_validation(cfg, self.output, ctx)
        log = MetricsLog(self.output, cfg.train.tensorboard, self.step) if ctx.is_main else None
        accumulation = cfg.train.accumulation
        val_every = cfg.train.val_every or self.steps_per_epoch
        checkpoint_every = cfg.train.checkpoint_every or self.steps_per_epoch
        results: dict[str, dict[str, Any]] = {}  # filled on rank 0 only
        validated_at: int | None = None  # the same on every rank
        bar = tqdm(
            total=self.stop_step,
            initial=self.step,
            unit="step",
            desc="train",
            dynamic_ncols=True,
            disable=not (ctx.is_main and cfg.train.progress),
        )
        window_loss, window_steps, window_start = torch.zeros((), device=self.device), 0, time.perf_counter()
        micro = 0
        self.model.train()
        try:
            for images, labels, damaged in self._loader():
                for report in damaged:
                    if report not in self.damaged:
                        self.damaged[report] = None
                        self._unshared.append(report)
                        console(f"damaged image skipped (replaced by the next readable one): {report}")
                last_micro = micro == accumulation - 1
                window_loss += self.forward_backward(
                    images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True), last_micro
                )
                micro += 1
                if not last_micro:
                    continue
                micro = 0
                lr, scale = self.schedule(self.step), self.scale(self.step // self.steps_per_epoch)
                self.optimiser_step()
                window_steps += 1
                bar.update(1)
                epoch_end = self.step % self.steps_per_epoch == 0
                if self.step % cfg.train.log_every == 0 or epoch_end or self.step == self.stop_step:
                    self._share_damaged()
                    mean_loss = float(window_loss) / window_steps
                    if not math.isfinite(mean_loss):
                        raise GhostFaceNetsError(
                            f"the loss is {mean_loss} at step {self.step}: lower optim.lr or use train.clip_grad_norm"
                        )
                    speed = window_steps * cfg.train.batch_size / (time.perf_counter() - window_start)
                    record = {
                        "step": self.step,
                        "epoch": self.step / self.steps_per_epoch,
                        "loss": mean_loss,
                        "lr": lr,
                        "scale": scale,
                        "img_per_s": speed,
                        "damaged": len(self.damaged),
                    }
                    bar.set_postfix(loss=f"{mean_loss:.3f}", lr=f"{lr:.3g}", img_s=f"{speed:.0f}", refresh=False)
                    if log is not None:
                        log.write(record)
                    window_loss.zero_()
                    window_steps, window_start = 0, time.perf_counter()
                paused = time.perf_counter()  # images/s count training time only
                if self.step % val_every == 0 or self.step == self.stop_step:
                    results = self.validate(val_paths, log)
                    validated_at = self.step
                if self.step % checkpoint_every == 0 or self.step == self.stop_step:
                    self.save_checkpoint()
                window_start += time.perf_counter() - paused
                if self.step >= self.stop_step:
                    break
        finally:
            bar.close()
            if log is not None:
                log.close()
        if val_paths and validated_at != self.step:  # resumed at the end: report the final weights anyway
            results = self.validate(val_paths, None)
        self._share_damaged()
        final = self.output / "final.safetensors"
        if ctx.is_main:
            self.save_model(final, results)
        ctx.barrier()
        best = self.output / "best.safetensors"
        return TrainResult(
            self.output,
            final,
            self.step,
            self.step / self.steps_per_epoch,
            best if self.best_value is not None and best.exists() else None,
            self.best_value,
            results,
            sorted(self.damaged),
        )


def train(config: TrainConfig, context: DistributedContext | None = None) -> TrainResult:
    """Train as ``config`` says (resuming when ``train.resume`` finds a checkpoint); see :class:`Trainer`."""
    return Trainer(config, context).run()
