"""Shared test fixtures: the project's ../shared folder (reference outputs, format samples, photos)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("GHOSTFACENETS_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test with the reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found: the shared fixtures folder sits beside the checkout in CI")
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's weight cache or the network from tests."""
    monkeypatch.setenv("GHOSTFACENETS_HOME", str(tmp_path_factory.mktemp("ghostfacenets_home")))
    monkeypatch.delenv("GHOSTFACENETS_BASE_URL", raising=False)
