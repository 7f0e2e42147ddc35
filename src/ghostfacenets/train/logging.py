"""Training logs on rank 0: ``metrics.jsonl`` (one JSON object per line), TensorBoard scalars, and the console.

Every record carries the version of the package that wrote it (``ghostfacenets_version``), which TensorBoard gets as
text at each start or resume."""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

from ..files import VERSION_KEY, atomic_write, written_by


def _scalars(prefix: str, record: dict[str, Any]) -> dict[str, float]:
    """Flatten nested numbers into ``prefix/a/b`` keys (None and text are skipped)."""
    out: dict[str, float] = {}
    for key, value in record.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(_scalars(name, value))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = float(value)
    return out


def _step(line: str) -> float:
    """The step of a JSON-lines record; infinity for a line that is not one (e.g. cut short by a crash)."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf


class MetricsLog:
    """Appends records to ``metrics.jsonl`` and mirrors their numbers to TensorBoard (if installed and wanted).

    On resume from step S the records after S (written by the interrupted run and about to be redone) are dropped.
    """

    def __init__(self, output: Path, tensorboard: bool = True, resume_step: int = 0) -> None:
        self.path = output / "metrics.jsonl"
        if self.path.exists():
            kept = [line for line in self.path.read_text().splitlines() if _step(line) <= resume_step]
            with atomic_write(self.path, "w") as f:
                f.writelines(line + "\n" for line in kept)
        self._file = open(self.path, "a", buffering=1)
        self._writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                warnings.warn(
                    "TensorBoard logging is off: install it with pip install 'ghostfacenets[tensorboard]'", stacklevel=2
                )
            else:
                self._writer = SummaryWriter(
                    str(output / "tensorboard"), purge_step=resume_step + 1 if resume_step else None
                )
        if self._writer is not None:
            self._writer.add_text(VERSION_KEY, written_by()[VERSION_KEY], resume_step)

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps({**record, **written_by()}) + "\n")
        if self._writer is not None:
            step = record["step"]
            for name, value in _scalars("", {k: v for k, v in record.items() if k not in ("step", "time")}).items():
                self._writer.add_scalar(name, value, step)

    def close(self) -> None:
        self._file.close()
        if self._writer is not None:
            self._writer.close()


def console(message: str) -> None:
    """A line on stderr that does not break the progress bar."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)
