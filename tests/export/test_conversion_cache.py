"""The cache of conversions that the on-device exports share."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from ghostfacenets.export import mobile
from ghostfacenets.hub import cache_dir


def test_converts_once_per_key_and_weights_and_keeps_the_newest_of_each_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mobile, "CACHE_KEPT", 3)
    builds: list[bytes] = []

    def build(data: bytes) -> bytes:
        builds.append(data)
        return data

    layer = nn.Linear(2, 2)
    first = mobile.cached_conversion("test_cache", "a.bin", [1], lambda: build(b"one"), weights=layer)
    assert first.parent == cache_dir() / "test_cache" and first.read_bytes() == b"one"
    assert first.stat().st_mode & 0o777 == 0o600
    assert mobile.cached_conversion("test_cache", "a.bin", [1], lambda: build(b"again"), weights=layer) == first
    assert builds == [b"one"]
    with torch.no_grad():
        layer.weight.add_(1.0)
    other = mobile.cached_conversion("test_cache", "a.bin", [1], lambda: build(b"two"), weights=layer)
    assert other != first and other.read_bytes() == b"two"  # other weights, another file

    kept = mobile.cached_conversion("test_cache", "b.bin", [0], lambda: build(b"b"))
    newest = [mobile.cached_conversion("test_cache", "a.bin", [key], lambda: build(b"x")) for key in range(2, 6)]
    files = sorted(p.name for p in (cache_dir() / "test_cache").iterdir())
    assert len([name for name in files if name.startswith("a-")]) == 3 and newest[-1].exists()
    assert kept.exists()  # another kind is not pruned with it


def test_threads_asking_at_once_share_one_conversion() -> None:
    calls: list[int] = []
    started = threading.Barrier(4)

    def build() -> bytes:
        calls.append(1)
        time.sleep(0.2)  # long enough for every thread to ask while it converts
        return b"program"

    paths: list[Path] = []

    def ask() -> None:
        started.wait()
        paths.append(mobile.cached_conversion("test_cache", "c.bin", ["same"], build))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(set(paths)) == 1
