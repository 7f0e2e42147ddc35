"""The quickstart (``ghostfacenets train -c quickstart-cpu``) against raw-pixel cosine, over several seeds and pair
samples of the people it never saw.

For each seed it trains the quickstart (or resumes a finished run: the run folder is kept), embeds the 100 photos of
the validation people (s31-s40, no flip, as the quickstart validates) and scores, with the same 10-fold accuracy,
the trained model and raw pixels (the padded 112x112 grey image as one vector, cosine) on:

  val       the quickstart's own 900 validation pairs (all 450 same-person pairs, 450 different; pair seed 0);
  samples   ``--samples`` other samples of ``--pairs`` pairs each (half same-person) of the same people (pair
            seeds 1, 2, ...): the worst and the mean margin over raw pixels;
  all       every pair of the 100 photos (450 same, 4,500 different): ROC AUC.

    nice -n 10 python bench/quickstart_seeds.py --seeds 0 1 2 3 4
    nice -n 10 python bench/quickstart_seeds.py --seeds 0 1 --tag wide model.architecture=ghostfacenetv1-1-2

Prints one row per seed, then the spread over seeds, with the CPU and the load average (``uptime``) at the start
and the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ghostfacenets.data.datasets import FolderSource
from ghostfacenets.evaluate.metrics import kfold_accuracy, l2_normalize, roc_auc, roc_curve
from ghostfacenets.evaluate.pairs import make_pairs
from ghostfacenets.inference import load_embedder

IDENTITIES = [f"s{i}" for i in range(31, 41)]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def accuracy(embeddings: np.ndarray, pairs: np.ndarray, issame: np.ndarray) -> float:
    normalised = l2_normalize(embeddings.astype(np.float64))
    folds, _ = kfold_accuracy(normalised[pairs[:, 0]], normalised[pairs[:, 1]], issame)
    return float(np.mean(folds))


def auc(embeddings: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of cosine similarity over every pair."""
    normalised = l2_normalize(embeddings.astype(np.float64))
    i, j = np.triu_indices(len(labels), k=1)
    return roc_auc(*roc_curve(np.sum(normalised[i] * normalised[j], axis=1), labels[i] == labels[j])[:2])


def train(seed: int, output: Path, overrides: list[str], data: str) -> float:
    """Train (or find finished) one seed's run; seconds taken (0 when it was there)."""
    if (output / "final.safetensors").exists():
        return 0.0
    command = [sys.executable, "-m", "ghostfacenets.cli", "train", "-c", "quickstart-cpu", f"output={output}"]
    command += [f"train.seed={seed}", f"data.train={data}", f"data.val=[{data}]", *overrides]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--data", default="../shared/data/att_faces", help="the att_faces folder")
    parser.add_argument("--runs", default="runs/quickstart-seeds", help="where the runs go (kept: re-runs resume)")
    parser.add_argument("--tag", default="shipped", help="a name for this config (a sub-folder of --runs)")
    parser.add_argument("--samples", type=int, default=20, help="other pair samples")
    parser.add_argument("--pairs", type=int, default=300, help="pairs per other sample")
    parser.add_argument("overrides", nargs="*", help="config overrides for the quickstart (key=value)")
    args = parser.parse_args()

    source = FolderSource(args.data, IDENTITIES, 112, "pad")
    images = np.stack([source.load(i)[0] for i in range(len(source))])  # (100, 112, 112, 3) uint8
    labels = np.asarray(source.labels)
    pixels = images[..., 0].reshape(len(images), -1).astype(np.float64)  # grey: the three channels are equal
    val = make_pairs(labels, 900, 0)
    samples = [make_pairs(labels, args.pairs, seed) for seed in range(1, args.samples + 1)]
    raw_val = accuracy(pixels, *val)
    raw_samples = np.array([accuracy(pixels, *s) for s in samples])
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; load average at start {load_average()}")
    print(f"config {args.tag}: quickstart-cpu {' '.join(args.overrides)}")
    print(f"raw pixels: val {raw_val:.4f}, samples mean {raw_samples.mean():.4f}, AUC {auc(pixels, labels):.4f}")
    print("seed  seconds  val     samples mean  worst margin  mean margin  AUC")
    rows = []
    for seed in args.seeds:
        output = Path(args.runs) / args.tag / f"seed{seed}"
        seconds = train(seed, output, args.overrides, args.data)
        embedder = load_embedder(output / "final.safetensors", device="cpu", backend="fused")
        embeddings = embedder.embed_batch(images, flip=False)
        model_samples = np.array([accuracy(embeddings, *s) for s in samples])
        margins = model_samples - raw_samples
        row = (seed, seconds, accuracy(embeddings, *val), model_samples.mean(), margins.min(), margins.mean(),
               auc(embeddings, labels))  # fmt: skip
        rows.append(row)
        print("{:<4d}  {:7.0f}  {:.4f}  {:.4f}        {:+.4f}       {:+.4f}      {:.4f}".format(*row), flush=True)
    table = np.array([r[2:] for r in rows])
    low, high = table.min(axis=0), table.max(axis=0)
    print(
        f"over {len(rows)} seeds: val {low[0]:.4f}-{high[0]:.4f}, samples mean {low[1]:.4f}-{high[1]:.4f}, "
        f"worst margin over raw pixels {low[2]:+.4f}, AUC {low[4]:.4f}-{high[4]:.4f}"
    )
    print(f"load average at the end {load_average()}")


if __name__ == "__main__":
    main()
