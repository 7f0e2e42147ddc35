"""Download and check the officially released weight files, once, into a local cache (conversion into the package's
own format is :func:`ghostfacenets.model_io.pretrained_path`).

``GHOSTFACENETS_HOME`` moves the cache (default ``~/.cache/ghostfacenets``); ``GHOSTFACENETS_BASE_URL`` replaces the
release URL's folder (``file:///mirror/folder`` works), for mirrors and offline machines.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from .errors import DownloadError, ModelFileError
from .files import atomic_path, sha256_file
from .models.registry import PRETRAINED, PretrainedWeights

HOME_ENV = "GHOSTFACENETS_HOME"
BASE_URL_ENV = "GHOSTFACENETS_BASE_URL"


def cache_dir() -> Path:
    """Where downloaded and converted weights live."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "ghostfacenets").expanduser()


def download_url(weights: PretrainedWeights) -> str:
    base = os.environ.get(BASE_URL_ENV)
    return f"{base.rstrip('/')}/{weights.filename}" if base else weights.url


def _check(path: Path, weights: PretrainedWeights) -> str | None:
    """None if the file is the release file, else what is wrong with it."""
    size = path.stat().st_size
    if size != weights.size:
        return f"size {size:,} bytes, expected {weights.size:,}"
    digest = sha256_file(path)
    if digest != weights.sha256:
        return f"sha256 {digest}, expected {weights.sha256}"
    return None


def _download(url: str, target: Path, weights: PretrainedWeights, progress: bool) -> None:
    from tqdm.auto import tqdm

    try:
        with urllib.request.urlopen(url, timeout=60) as response, atomic_path(target) as tmp:
            total = int(response.headers.get("Content-Length") or weights.size)
            with (
                open(tmp, "wb") as out,
                tqdm(total=total, unit="B", unit_scale=True, desc=weights.filename, disable=not progress) as bar,
            ):
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
            problem = _check(tmp, weights)
            if problem:
                raise DownloadError(
                    f"{url} is not the official {weights.filename} ({problem}); nothing was kept. "
                    f"Check {BASE_URL_ENV} or download it again."
                )
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(
            f"cannot download {url} ({reason}). If this machine is offline, copy {weights.filename} "
            f"({weights.size:,} bytes) into {target.parent} or set {BASE_URL_ENV}=file:///folder/holding/it"
        ) from None


def release_file(name: str, progress: bool = True) -> Path:
    """Path of the official release file of pretrained weights ``name`` in the cache, downloaded on first use and
    checked (size and sha256)."""
    if name not in PRETRAINED:
        raise ModelFileError(f"unknown pretrained weights {name!r}; known: {', '.join(sorted(PRETRAINED))}")
    weights = PRETRAINED[name]
    original = cache_dir() / weights.filename
    if original.exists():
        problem = _check(original, weights)
        if problem:
            raise DownloadError(f"{original} is not the official release file ({problem}); delete it and try again")
    else:
        _download(download_url(weights), original, weights, progress)
    return original
