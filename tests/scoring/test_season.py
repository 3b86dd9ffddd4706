"""The seasonal channel: a season found in the series' own history, and a change against it
that the forecast follows and the series' daily range hides."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import lfilter
from series_helpers import fired_channels

from iot_mlops.scoring.calibrate import Calibration
from iot_mlops.scoring.channels import ChannelConfig, SeriesChannels
from iot_mlops.scoring.season import Season, find_period

pytestmark = pytest.mark.unit
CAL = Calibration(threshold=1.5, target_false_alarm_rate=0.002)
DAY = 288  # 5-minute data


def daily(n: int, seed: int, amp: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return amp * np.sin(2 * np.pi * t / DAY) + rng.normal(0, 1, n)


@pytest.mark.parametrize("seed", range(5))
def test_the_period_is_found_in_noisy_data_and_gaps_do_not_hide_it(seed: int) -> None:
    x = daily(3 * 1024, seed)
    assert abs(find_period(x, 2016, 0.3) - DAY) <= 8
    x[np.random.default_rng(seed).random(len(x)) < 0.2] = np.nan  # a fifth of steps missing
    assert abs(find_period(x, 2016, 0.3) - DAY) <= 8


def test_no_season_in_noise_trends_or_random_walks() -> None:
    found = []
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        n = 2048
        found += [
            find_period(rng.normal(0, 1, n), 2016, 0.3),
            find_period(0.01 * np.arange(n) + rng.normal(0, 1, n), 2016, 0.3),
            find_period(np.cumsum(rng.normal(0, 1, n)), 2016, 0.3),
            find_period(lfilter([1], [1, -0.9], rng.normal(0, 1, n)), 2016, 0.3),
        ]
    # Measured: a random walk imitates a season in about 1 of 40 histories; noise, trends and
    # an AR(0.9) process never.
    assert sum(p > 0 for p in found) <= 2


def test_the_lag_counts_grid_steps_not_readings() -> None:
    s = Season(max_period=16)
    for v in range(10):
        s.push(float(v))
    s.gap(3)
    s.push(99.0)
    assert s.lagged(1) == 99.0 and math.isnan(s.lagged(2)) and s.lagged(5) == 9.0


def _fired(values: np.ndarray, config: ChannelConfig, start: int) -> set[str]:
    """With residuals the forecast would give if it followed every change (small, normal)."""
    devs = np.random.default_rng(9).normal(0, 0.4, len(values))
    return fired_channels(values, devs, config, start)


@pytest.mark.parametrize("change", ["level", "amplitude"])
def test_a_change_against_the_season_fires_the_seasonal_channel(change: str) -> None:
    n, onset = 6 * 1024, 5 * 1024
    x = daily(n + DAY, seed=3)
    if change == "level":
        x[onset:] += 3.0  # half the daily swing: inside the daily range
    else:
        x[onset:] = 2.5 * (x[onset:] - np.random.default_rng(3).normal(0, 1, n + DAY - onset))
    config = ChannelConfig()
    assert "seasonal" in _fired(x, config, onset)
    # The same series without the change: the seasonal channel stays quiet there.
    assert "seasonal" not in _fired(daily(n + DAY, seed=3), config, onset)


def test_without_the_channel_no_season_is_kept() -> None:
    ch = SeriesChannels.create(ChannelConfig(channels=("residual", "level")), CAL)
    assert ch.season is None


def test_the_history_grows_with_the_series_and_keeps_its_order() -> None:
    s = Season(max_period=200)  # capacity 600, starts at 256
    for v in range(1000):
        s.push(float(v))
        if v == 299:
            assert len(s.buf) == 512  # a young series holds little
    assert len(s.buf) == 600 and s.count == 600
    assert [s.lagged(k) for k in (1, 2, 600)] == [999.0, 998.0, 400.0]
    assert math.isnan(s.lagged(601))


def _history(s: Season) -> tuple[np.ndarray, int, int]:
    return np.roll(s.buf, -s.head)[len(s.buf) - s.count :], s.count, len(s.buf)


@pytest.mark.parametrize(("filled", "missing"), [(10, 5), (250, 20), (300, 700), (590, 40),
                                                 (900, 3), (900, 250), (100, 5000)])  # fmt: skip
def test_a_gap_at_once_leaves_what_as_many_missing_pushes_leave(filled: int, missing: int) -> None:
    one, each = Season(max_period=200), Season(max_period=200)  # capacity 600, starts at 256
    for v in range(filled):
        one.push(float(v))
        each.push(float(v))
    one.gap(missing)
    for _ in range(min(missing, each.capacity)):
        each.push(math.nan)
    (h1, c1, n1), (h2, c2, n2) = _history(one), _history(each)
    assert (c1, n1, one.head, one.mute) == (c2, n2, each.head, each.mute)
    np.testing.assert_array_equal(h1, h2)  # NaN where NaN, the same values in the same order
    one.push(7.0)
    each.push(7.0)
    assert one.lagged(1) == each.lagged(1) == 7.0


def test_a_week_long_gap_leaves_a_full_history_of_missing_values() -> None:
    import time

    s = Season()  # 5-minute data's weekly season: capacity 6,048
    for v in daily(700, 0):
        s.push(float(v))
    t0 = time.process_time()
    for _ in range(200):
        s.gap(2016)
    per_gap = (time.process_time() - t0) / 200
    assert np.isnan(_history(s)[0]).all() and s.count == s.capacity
    print(f"gap of 2,016 steps: {per_gap * 1e6:.0f} us")
