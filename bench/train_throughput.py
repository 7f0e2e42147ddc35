"""Training throughput (images/s) of the real training step, on synthetic and RecordIO data, from one run.

Three measurements with the same model, batch and precision:
  device     the training step alone, on a batch already on the device (upper bound, no data loading);
  synthetic  the whole training loop on random images through the DataLoader (workers, pinning, transfer);
  recordio   the whole loop on a RecordIO set (JPEG reading and decoding included): --rec PATH, or a temporary
             set of --rec-images synthetic face-sized JPEGs built with ghostfacenets' own writer.
Each row shows its ratio to the device-only step and to the anchor: timm GhostNet-1.3, 112x112, bf16,
channels_last, batch 512 trains at about 10.7k img/s on one H100 (eager); the aim for GhostFaceNetV1-1.3-2 there is
twice that (2.0x), data loading included. Ratios to the anchor mean something only on an H100.

    python bench/train_throughput.py                                  # CUDA if present: bf16, channels_last
    python bench/train_throughput.py --device cpu --batch 64 --steps 6 --arch ghostfacenetv1-0.5-2
    python bench/train_throughput.py --compile --rec /data/faces_emore
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from ghostfacenets.data.recordio import write_insightface_records
from ghostfacenets.train.config import load_config
from ghostfacenets.train.loop import Trainer

ANCHOR_IMG_S = 10_700.0


def _config(args: argparse.Namespace, data: str, output: Path, steps: int) -> list[str]:
    return [
        f"data.train={data}",
        f"output={output}",
        f"model.architecture={args.arch}",
        f"train.batch_size={args.batch}",
        f"train.device={args.device}",
        f"train.amp={args.amp}",
        f"train.channels_last={str(args.channels_last).lower()}",
        f"train.compile={str(args.compile).lower()}",
        f"data.workers={args.workers}",
        f"train.max_steps={steps}",
        f"train.log_every={args.warmup}",
        "train.epochs=1",
        "train.resume=none",
        "train.tensorboard=false",
        "train.progress=false",
        f"train.checkpoint_every={steps}",
        "optim.schedule=constant",
        "loss.scale=[[0, 64]]",
    ]


def device_only(args: argparse.Namespace, output: Path) -> float:
    """Images/s of forward_backward + optimiser_step on a batch resident on the device."""
    images = args.batch * (args.warmup + args.steps + 1)
    trainer = Trainer(load_config(None, _config(args, f"synthetic:{images}:{args.classes}", output, 1)))
    x = torch.randint(0, 256, (args.batch, 112, 112, 3), dtype=torch.uint8, device=trainer.device)
    y = torch.randint(0, args.classes, (args.batch,), device=trainer.device)
    trainer.model.train()

    def step() -> None:
        trainer.forward_backward(x, y)
        trainer.optimiser_step()

    for _ in range(args.warmup):
        step()
    _sync(trainer.device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    _sync(trainer.device)
    return args.steps * args.batch / (time.perf_counter() - start)


def whole_loop(args: argparse.Namespace, data: str, output: Path) -> float:
    """Images/s of Trainer.run over the windows after the first (warm-up) one, from its metrics.jsonl."""
    steps = args.warmup + args.steps
    Trainer(load_config(None, _config(args, data, output, steps))).run()
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    rates = [r["img_per_s"] for r in records if "img_per_s" in r][1:]
    return len(rates) / sum(1.0 / r for r in rates)  # equal windows: total images / total time


def face_like_jpegs(count: int, classes: int, seed: int = 0):
    """(JPEG bytes, label) of smooth random 112x112 images, grouped by label (sizes close to aligned faces)."""
    rng = np.random.default_rng(seed)
    per_class = count // classes
    for label in range(classes):
        base = rng.integers(0, 256, (14, 14, 3), dtype=np.uint8)
        for _ in range(per_class):
            image = cv2.resize(base, (112, 112), interpolation=cv2.INTER_CUBIC)
            image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
            yield cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes(), label


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ghostfacenetv1-1.3-2")
    parser.add_argument("--batch", type=int, default=None, help="global batch (512 on CUDA, 64 on CPU)")
    parser.add_argument("--steps", type=int, default=None, help="measured steps (50 on CUDA, 6 on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps, also the log window (10 / 2)")
    parser.add_argument("--classes", type=int, default=10_000, help="identities of the synthetic sets (10000)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "none"))
    parser.add_argument(
        "--channels-last",
        dest="channels_last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="NHWC memory layout (default: on)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    parser.add_argument("--rec", help="a RecordIO set to read; default: a temporary synthetic one")
    parser.add_argument("--rec-images", type=int, default=None, help="images of the temporary RecordIO set")
    args = parser.parse_args()
    cuda = torch.cuda.is_available() and args.device != "cpu"
    args.batch = args.batch or (512 if cuda else 64)
    args.steps = args.steps or (50 if cuda else 6)
    args.warmup = args.warmup or (10 if cuda else 2)
    args.classes = min(args.classes, args.batch * (args.warmup + args.steps + 1))
    needed = args.batch * (args.warmup + args.steps + 1)
    threads = f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    device = torch.cuda.get_device_name(0) if cuda else threads
    print(
        f"torch {torch.__version__}, {device}; {args.arch}, batch {args.batch}, amp {args.amp}, channels_last "
        f"{args.channels_last}, compile {args.compile}, "
        f"{args.workers} workers, {args.steps} measured steps after {args.warmup}"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows.append(("device (no data loading)", device_only(args, root / "device")))
        rows.append(("synthetic (DataLoader)", whole_loop(args, f"synthetic:{needed}:{args.classes}", root / "syn")))
        rec = args.rec
        if rec is None:
            count = args.rec_images or needed
            classes = min(args.classes, count // 4)
            write_insightface_records(root / "rec", face_like_jpegs(count - count % classes, classes))
            rec = str(root / "rec")
        label = f"recordio ({'given' if args.rec else 'synthetic JPEG'})"
        rows.append((label, whole_loop(args, rec, root / "rec-run")))
    base = rows[0][1]
    print(f"\n{'data':<28} {'img/s':>10} {'x device':>9} {'x anchor':>9}")
    for name, rate in rows:
        print(f"{name:<28} {rate:>10.1f} {rate / base:>9.2f} {rate / ANCHOR_IMG_S:>9.3f}")
    print("\nanchor: timm GhostNet-1.3 bf16 channels_last batch 512 on an H100 = 10.7k img/s; target 2.0x")


if __name__ == "__main__":
    main()
