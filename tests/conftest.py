"""Fixtures every test gets: an isolated weight cache and no network."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's weight cache or the network from tests."""
    monkeypatch.setenv("GHOSTFACENETS_HOME", str(tmp_path_factory.mktemp("ghostfacenets_home")))
    monkeypatch.delenv("GHOSTFACENETS_BASE_URL", raising=False)
