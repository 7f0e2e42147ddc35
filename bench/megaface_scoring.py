"""MegaFace scoring: time and peak memory of scoring FaceScrub-sized probes against up to a million distractors.

Random unit features stand in for embeddings (scoring time does not depend on them). Scores every standard size
(10, 100, ... below the count, then all) in one pass, as ``evaluate --megaface`` does, and prints from one run: the
time, distractors per second, the ratio to the bare matrix products of the same shapes (the part no method avoids),
and the resident memory with the features and at its peak while scoring (Linux: the peak is reset just before).

    python bench/megaface_scoring.py [--distractors 100000] [--probes 3530] [--dim 512] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from ghostfacenets.evaluate.megaface import SCORE_CHUNK_ELEMENTS, distractor_sizes, score_distractors


def _status_mib(field: str) -> float:
    """VmRSS (resident now) or VmHWM (peak since the last reset) of this process, in MiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    """Start the peak (VmHWM) afresh from the current resident size (Linux 4.0+: clear_refs 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def _unit_rows(rng: np.random.Generator, n: int, dim: int, rows: int = 1 << 16) -> np.ndarray:
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, rows):
        block = rng.standard_normal((min(rows, n - start), dim), dtype=np.float32)
        out[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--distractors", type=int, default=100_000)
    parser.add_argument("--probes", type=int, default=3530, help="FaceScrub probes (3,530 in MegaFace Challenge 1)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--chunk-elements", type=int, default=SCORE_CHUNK_ELEMENTS)
    args = parser.parse_args()

    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {os.cpu_count()} cores, device {device}")
    rng = np.random.default_rng(0)
    start = _status_mib("VmRSS")
    probes = _unit_rows(rng, args.probes, args.dim)
    distractors = _unit_rows(rng, args.distractors, args.dim)
    noisy = np.zeros(args.distractors, bool)
    noisy[:: max(1, args.distractors // 700)] = True  # about as many as megaface_noises.txt lists
    order = rng.permutation(args.distractors)
    sizes = distractor_sizes(args.distractors)
    features_mib = (probes.nbytes + distractors.nbytes) / 2**20
    _reset_peak()
    before = _status_mib("VmRSS")
    print(
        f"{args.probes} probes x {args.distractors:,} distractors x {args.dim}: features {features_mib:,.0f} MiB; "
        f"sizes {sizes}; blocks of at most {args.chunk_elements:,} scores "
        f"({args.chunk_elements * 4 / 2**20:.0f} MiB float32)"
    )

    started = time.perf_counter()
    results = score_distractors(
        probes, distractors, noisy, sizes, order, device=device, chunk_elements=args.chunk_elements
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
    scoring = time.perf_counter() - started
    peak = _status_mib("VmHWM")

    # baseline: the bare products of the same shapes, block by block, nothing kept
    step = max(1, min(args.chunk_elements, 1 << 24) // args.probes)
    probe = torch.from_numpy(probes).to(device)
    started = time.perf_counter()
    for begin in range(0, args.distractors, step):
        block = probe @ torch.from_numpy(distractors[begin : begin + step]).to(device).T
        del block
    if device.type == "cuda":
        torch.cuda.synchronize()
    products = time.perf_counter() - started

    kept = results[-1].top_impostor_scores.size
    print(
        f"scoring every size: {scoring:.1f} s ({args.distractors / scoring:,.0f} distractors/s, "
        f"{args.probes * args.distractors / scoring / 1e6:,.0f} M scores/s)"
    )
    print(f"bare matrix products of the same blocks: {products:.1f} s; scoring / products = {scoring / products:.2f}x")
    print(f"kept for TAR at FAR 1e-4: {kept:,} impostor scores of {results[-1].impostors:,}")
    print(
        f"resident memory: {start:,.0f} MiB at start, {before:,.0f} MiB with the features; peak while scoring "
        f"{peak:,.0f} MiB (+{peak - before:,.0f} MiB for scoring)"
    )


if __name__ == "__main__":
    main()
