"""Learning-rate schedules against Keras' closed-form CosineDecayRestarts and hand-worked values."""

from __future__ import annotations

import math

import pytest

from ghostfacenets.train.schedule import LRSchedule


def keras_cosine_decay_restarts(
    step: float, base: float, first: float, t_mul: float, m_mul: float, alpha: float
) -> float:
    """tf.keras.optimizers.schedules.CosineDecayRestarts, written out as in its source."""
    completed = step / first
    i_restart = math.floor(math.log(1.0 - completed * (1.0 - t_mul)) / math.log(t_mul))
    sum_r = (1.0 - t_mul**i_restart) / (1.0 - t_mul)
    completed = (completed - sum_r) / t_mul**i_restart
    decayed = 0.5 * m_mul**i_restart * (1.0 + math.cos(math.pi * completed))
    return base * ((1 - alpha) * decayed + alpha)


def test_official_schedule_is_keras_restarts_with_cooldown_epochs() -> None:
    spe = 10  # steps per epoch
    schedule = LRSchedule(
        "official", 0.1, 1e-5, spe, 51 * spe, restart_epochs=45, t_mul=2, m_mul=0.5, cooldown_epochs=1
    )
    for step in range(0, 51 * spe, 7):
        epoch = step // spe
        if epoch == 45:  # the cool-down epoch after the first period
            assert schedule(step) == pytest.approx(1e-5)
            continue
        keras_step = step - (spe if epoch > 45 else 0)
        expected = keras_cosine_decay_restarts(keras_step, 0.1, 45 * spe, 2.0, 0.5, 1e-4)
        assert schedule(step) == pytest.approx(expected, rel=1e-12), step


def test_official_schedule_spec_values() -> None:
    spe = 100
    schedule = LRSchedule("official", 0.1, 1e-5, spe, 51 * spe)
    assert schedule(0) == pytest.approx(0.1)
    assert schedule(45 * spe - 1) == pytest.approx(1e-5, abs=2e-7)
    assert schedule(45 * spe + 50) == pytest.approx(1e-5)
    assert schedule(46 * spe) == pytest.approx(0.05 * (1 - 1e-4) + 1e-5)  # restart at about 0.05
    assert 0.049 < schedule(51 * spe - 1) < 0.05  # a 90-epoch cosine barely moves in 5 epochs


@pytest.mark.parametrize("t_mul,cooldown", [(0.5, 0.0), (0.0, 0.0), (1.0, -1.0)])
def test_official_schedule_refuses_periods_that_never_end(t_mul: float, cooldown: float) -> None:
    with pytest.raises(ValueError, match="t_mul|cooldown"):
        LRSchedule("official", 0.1, 1e-5, 10, 510, t_mul=t_mul, cooldown_epochs=cooldown)


def test_official_schedule_with_equal_periods() -> None:
    schedule = LRSchedule("official", 0.1, 0.0, 10, 100, restart_epochs=2, t_mul=1.0, m_mul=1.0, cooldown_epochs=0)
    assert schedule(0) == schedule(20) == schedule(80) == pytest.approx(0.1)
    assert schedule(10) == schedule(50) == pytest.approx(0.05)


def test_warmup_then_cosine_and_poly() -> None:
    cosine = LRSchedule("cosine", 0.1, 0.0, 10, 110, warmup_steps=10, warmup_lr=0.01)
    assert cosine(0) == pytest.approx(0.01) and cosine(5) == pytest.approx(0.055)
    assert cosine(10) == pytest.approx(0.1) and cosine(60) == pytest.approx(0.05) and cosine(110) == pytest.approx(0)
    poly = LRSchedule("poly", 0.1, 0.0, 10, 100, power=2.0)
    assert poly(50) == pytest.approx(0.025) and poly(100) == pytest.approx(0.0)
    assert LRSchedule("constant", 0.3, 0.0, 10, 100)(77) == 0.3
