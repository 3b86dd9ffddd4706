"""Channels and the combined score: calibrated per series, ranking, no mass at one value."""

from __future__ import annotations

import math

import numpy as np
import pytest
from series_helpers import fired_channels

from iot_mlops.scoring.calibrate import Calibration
from iot_mlops.scoring.channels import (
    ChannelConfig,
    SeriesChannels,
    deviation,
    prior_beta,
    score_of,
    score_point,
)

pytestmark = pytest.mark.unit
CAL = Calibration(threshold=1.5, target_false_alarm_rate=0.002)


def test_score_is_half_at_the_target_rate_monotone_and_below_one() -> None:
    lr = math.log(0.002)
    assert score_of(lr, lr) == pytest.approx(0.5)
    assert score_of(0.0, lr) == 0.0
    xs = [score_of(-k, lr) for k in (1, 5, 50, 500, 5000)]
    assert xs == sorted(xs) and xs[-1] < 1.0


def test_prior_fires_at_the_calibrated_threshold() -> None:
    assert prior_beta(CAL) == pytest.approx(1.5 / -math.log(0.002))
    # deviation 1.5 (the threshold) on the upper side of a [-1, 1] interval around 0
    assert score_point(1.5, 0.0, -1.0, 1.0, CAL).score == pytest.approx(0.5)
    assert not score_point(1.4, 0.0, -1.0, 1.0, CAL).outlier
    assert deviation(-2.0, 0.0, -1.0, 1.0) == -2.0


def _run(values: np.ndarray, devs: np.ndarray) -> list[float]:
    ch = SeriesChannels.create(ChannelConfig(), CAL)
    out = []
    for v, d in zip(values, devs, strict=True):
        out.append(ch.observe(float(v), float(d)).score)
        ch.learn(float(v))
    return out


def test_no_mass_at_one_score_on_a_heavy_tailed_series() -> None:
    rng = np.random.default_rng(5)
    devs = rng.standard_t(1.5, 20_000)  # heavier than any interval the model would give
    values = 100 + devs
    scores = np.asarray(_run(values, devs))
    top = scores.max()
    assert (scores == top).mean() < 0.001
    # per-series calibration keeps the outlier share near the target (0.2 %), not at the
    # share of |t| beyond the calibrated threshold (~10 %)
    assert (scores[2000:] >= 0.5).mean() < 0.01


def test_a_level_shift_the_forecast_follows_still_shows_in_the_level_channel() -> None:
    rng = np.random.default_rng(6)
    n = 1500
    values = np.concatenate([rng.normal(10, 1, n), rng.normal(16, 1, 50)])
    devs = rng.normal(0, 0.4, n + 50)  # the forecast follows: residuals look normal
    fired = fired_channels(values, devs, ChannelConfig(), n)
    assert "level" in fired and "residual" not in fired
