"""metrics.jsonl and TensorBoard logs record the version of the package that wrote them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ghostfacenets import __version__
from ghostfacenets.train.logging import MetricsLog
from tests.helpers import require_module


def test_every_record_and_the_tensorboard_log_carry_the_version(tmp_path: Path) -> None:
    require_module("tensorboard", "tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = MetricsLog(tmp_path, tensorboard=True)
    log.write({"step": 1, "loss": 2.5})
    log.write({"step": 2, "val": {"lfw": {"auc": 0.9}}})
    log.close()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records == [
        {"step": 1, "loss": 2.5, "ghostfacenets_version": __version__},
        {"step": 2, "val": {"lfw": {"auc": 0.9}}, "ghostfacenets_version": __version__},
    ]
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"tensors": 0}).Reload()
    assert [e.step for e in events.Scalars("loss")] == [1]
    assert [e.value for e in events.Scalars("val/lfw/auc")] == [pytest.approx(0.9)]
    (text,) = events.Tensors("ghostfacenets_version/text_summary")
    assert text.tensor_proto.string_val == [__version__.encode()]
