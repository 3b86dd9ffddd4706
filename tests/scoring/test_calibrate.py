"""The decision rule fitted at training time: the threshold and the per-step interval scale."""

from __future__ import annotations

import numpy as np
import pytest

from iot_mlops.scoring.calibrate import (
    MIN_STEP_POINTS,
    Calibration,
    calibrate,
    fit_step_scale,
)

pytestmark = pytest.mark.unit


def test_step_scale_is_wider_where_the_errors_are_wider() -> None:
    rng = np.random.default_rng(0)
    horizon, n = 4, 4000
    steps = np.arange(n) % horizon
    # Step 0's errors are twice as wide as the others' for the same interval.
    devs = np.abs(rng.normal(0, 1, n)) * np.where(steps == 0, 2.0, 1.0)
    scale = fit_step_scale(devs, steps, horizon)
    assert len(scale) == horizon
    assert scale[0] == pytest.approx(2 * np.mean(scale[1:]), rel=0.15)
    # After dividing by the scale every step's tail is the same.
    norm = devs / np.asarray(scale)[steps]
    q = [np.quantile(norm[steps == h], 0.9) for h in range(horizon)]
    assert max(q) / min(q) == pytest.approx(1.0, abs=0.1)


def test_step_scale_needs_points_at_a_step_and_ignores_non_finite() -> None:
    assert fit_step_scale(np.ones(10), np.zeros(10, dtype=int), 4) == ()
    n = 4 * MIN_STEP_POINTS
    devs = np.concatenate([np.full(n, 1.0), [np.nan, np.inf]])
    steps = np.concatenate([np.zeros(n, dtype=int), [1, 2]])
    # Only step 0 has points: the others stay at 1.
    assert fit_step_scale(devs, steps, 3) == (1.0, 1.0, 1.0)


def test_calibration_keeps_its_step_scale_through_the_model_metadata() -> None:
    cal = calibrate(np.linspace(0, 5, 1000), 0.01, 0.01, 0.99, (1.5, 1.0, 0.8))
    back = Calibration.from_dict(cal.to_dict())
    assert back == cal and back.step_scale == (1.5, 1.0, 0.8)
    assert back.scale_at(5) == [1.5, 1.0, 0.8, 1.0, 1.0]
    # A model saved before the scale existed reads as unscaled.
    old = {k: v for k, v in cal.to_dict().items() if k != "step_scale"}
    assert Calibration.from_dict(old).scale_at(2) == [1.0, 1.0]
