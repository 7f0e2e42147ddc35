"""Atomic writes: the old file survives a failed write, nothing temporary is left, files are private (0600)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from ghostfacenets.files import atomic_path, atomic_write


def test_failed_write_keeps_the_old_content(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target, "w") as f:
        f.write("half of the new")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, under which a plain open() makes files everyone may read."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_written_files_are_private_under_any_umask(tmp_path: Path, umask_022: None) -> None:
    target = tmp_path / "sub" / "model.bin"
    with atomic_write(target) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    with atomic_path(tmp_path / "other.txt") as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".txt")
        tmp.unlink()  # a library that makes its file anew gets the umask's mode
        tmp.write_text("by a library")
    assert (tmp_path / "other.txt").read_text() == "by a library"
    assert stat.S_IMODE((tmp_path / "other.txt").stat().st_mode) == 0o600
