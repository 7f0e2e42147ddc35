"""Helpers shared by the tests: the ../shared fixtures folder and optional extras, each skipped with its reason on a
user's machine and a failure in CI (``GHOSTFACENETS_REQUIRE_SHARED=1``, set by ``.ci/run``), where everything the
tests claim must run. The only skips left in CI are GPU tests."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import pytest

SHARED = Path(os.environ.get("GHOSTFACENETS_SHARED", Path(__file__).resolve().parents[2].parent / "shared"))
REQUIRE_ENV = "GHOSTFACENETS_REQUIRE_SHARED"


def required() -> bool:
    """Whether missing fixtures and extras are failures (CI) rather than skips."""
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def missing(reason: str) -> None:
    """Skip the test (or the whole module, when called at import) with ``reason``, or fail it where everything is
    required."""
    if required():
        pytest.fail(f"{reason} ({REQUIRE_ENV} is set: CI must run this test)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def shared_path(*parts: str) -> Path:
    """A path under ../shared; skips (fails in CI) when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        missing(f"{path} not found: the shared fixtures folder sits beside the checkout")
    return path


def require_module(name: str, extra: str = "all") -> ModuleType:
    """Import an optional dependency; skips (fails in CI) when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing(f"{name} is not installed ({exc}): pip install 'ghostfacenets[{extra}]'")
        raise AssertionError("unreachable") from exc
