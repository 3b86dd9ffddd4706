"""Channels and the combined score: calibrated per series, ranking, no mass at one value."""

from __future__ import annotations

import math

import numpy as np
import pytest
from series_helpers import fired_channels

from iot_mlops.scoring.calibrate import Calibration
from iot_mlops.scoring.channels import (
    ChannelConfig,
    Flatline,
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


LOG_RATE = math.log(0.002)


def _run_flatline(flat: Flatline, values: np.ndarray) -> np.ndarray:
    return np.array([flat.step(float(v), LOG_RATE) for v in values])


def test_a_counter_stuck_at_one_value_is_flagged_though_its_counts_often_repeat() -> None:
    # A Poisson counter repeats its last count ~15 % of steps: before 2026-12-05 the stuck
    # rule went silent on any series repeating more than 5 % of steps, and missed this.
    rng = np.random.default_rng(3)
    counts = rng.poisson(4.0, 3000).astype(float)
    flat = Flatline()
    normal = _run_flatline(flat, counts)
    assert 0.1 < flat.repeat_rate < 0.25
    assert normal.min() > LOG_RATE  # no normal run reaches the target rate
    stuck = _run_flatline(flat, np.full(40, counts[-1] + 1))
    assert stuck[-1] < 2 * LOG_RATE  # rarer than the target rate, and growing with the run
    assert np.all(np.diff(stuck[stuck < 0]) <= 0)
    # The old rule on the same stream says nothing.
    old = Flatline(clustering=0, max_repeat_rate=0.05)
    assert _run_flatline(old, np.concatenate([counts, np.full(40, counts[-1] + 1)])).min() == 0


def test_quiet_stretches_as_long_as_the_series_shows_are_normal() -> None:
    # A counter idle (exact zeros) for 30-60 steps between busy spells: the idle runs are its
    # normal, so neither the next idle stretch nor its repeat probability raises the alarm;
    # an idle spell far longer than any seen does.
    rng = np.random.default_rng(5)
    parts = []
    for _ in range(20):
        parts += [rng.poisson(6.0, 80).astype(float) + 1, np.zeros(int(rng.integers(30, 61)))]
    flat = Flatline()
    out = _run_flatline(flat, np.concatenate(parts))
    assert out[len(out) // 2 :].min() > LOG_RATE  # after the first few, no alarm at all
    assert flat.longest >= 25
    long_idle = _run_flatline(flat, np.concatenate([[3.0], np.zeros(600)]))
    assert long_idle.min() < LOG_RATE


def test_a_stuck_spell_does_not_teach_the_rule_to_accept_the_next() -> None:
    rng = np.random.default_rng(7)
    wobble = rng.normal(10, 1, 500).round(3)
    flat = Flatline()
    _run_flatline(flat, wobble)
    first = _run_flatline(flat, np.full(45, 9.5))
    _run_flatline(flat, wobble[:300])
    second = _run_flatline(flat, np.full(22, 9.7))
    assert first.min() < LOG_RATE and second.min() < LOG_RATE
    # A departure accepted as the new normal (here: stuck at 30 readings) silences the rule,
    # and the run under way teaches nothing when it ends.
    flat.accept()
    _run_flatline(flat, np.full(50, 9.7))
    assert flat.longest < 10
