"""Pure scoring rules: the per-series tail threshold."""

from __future__ import annotations

import numpy as np
import pytest

from iot_mlops.scoring.calibrate import Calibration
from iot_mlops.scoring.channels import ResidualScale, TailThreshold, score_point

pytestmark = pytest.mark.unit


def _false_alarm_rate(devs: np.ndarray, tail: TailThreshold | None, calibrated: float) -> float:
    flagged = 0
    for d in devs:
        t = tail.threshold(calibrated) if tail is not None else calibrated
        flagged += d >= t
        if tail is not None:
            tail.update(float(d), calibrated)
    return flagged / len(devs)


def test_tail_threshold_holds_the_target_rate_on_heavy_tailed_deviations() -> None:
    # Student-t (df=2) deviations scaled like a calibrated interval: the global threshold
    # (right for gaussian deviations at 0.2 %) fires far more often; the series' own tail does not.
    rng = np.random.default_rng(3)
    devs = np.abs(rng.standard_t(2, 20_000)) / 2.33
    calibrated = 2.88 / 2.33
    global_rate = _false_alarm_rate(devs, None, calibrated)
    tail_rate = _false_alarm_rate(devs, TailThreshold(rate=0.002), calibrated)
    assert global_rate > 0.05
    # 0.2 % estimated from 1,000 deviations is noisy (~3 points above it), so the realised rate
    # is a few times the target, yet an order of magnitude below the global rule's.
    assert tail_rate < min(0.01, global_rate / 5)


def test_tail_threshold_never_goes_below_the_calibrated_one() -> None:
    tail = TailThreshold(rate=0.002, min_points=10)
    for _ in range(100):
        tail.update(0.01, calibrated=1.5)
    assert tail.value == pytest.approx(0.01)
    assert tail.threshold(1.5) == 1.5


def test_tail_threshold_waits_for_min_points_and_clips_outliers() -> None:
    tail = TailThreshold(rate=0.002, min_points=50, clip=5.0)
    for _ in range(49):
        tail.update(1e9, calibrated=1.0)
    assert tail.threshold(1.0) == 1.0  # not enough evidence yet
    tail.update(float("inf"), calibrated=1.0)
    assert tail.threshold(1.0) == 5.0  # clipped, not 1e9


def test_tail_threshold_depends_only_on_the_last_window() -> None:
    # What a detector rebuilding a series from its recent log relies on.
    rng = np.random.default_rng(5)
    devs = np.abs(rng.standard_t(3, 3000))
    full, rebuilt = TailThreshold(window=1000), TailThreshold(window=1000)
    for d in devs:
        full.update(float(d), 1.0)
    for d in devs[-1000:]:
        rebuilt.update(float(d), 1.0)
    assert full.ordered == rebuilt.ordered
    assert full.threshold(1.0) == rebuilt.threshold(1.0) > 1.0


def test_score_point_uses_the_series_threshold_once_learnt() -> None:
    cal = Calibration(threshold=1.0)
    tail = TailThreshold(rate=0.002, min_points=20)
    scale = ResidualScale()
    for i in range(40):  # a noisy series: deviations up to ~3 on both sides
        v = 3.0 if i % 2 else -3.0
        score_point(v, 0.0, -1.0, 1.0, cal, scale, tail)
    assert tail.threshold(cal.threshold) > 1.0
    p = score_point(1.5, 0.0, -1.0, 1.0, cal, scale, tail)
    assert not p.outlier  # beyond the global threshold, inside this series' own tail
    assert score_point(1.5, 0.0, -1.0, 1.0, cal).outlier  # without the tail it would fire
