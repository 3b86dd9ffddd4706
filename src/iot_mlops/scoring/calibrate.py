"""The decision rule fitted at training time: how far a deviation may go on clean data.

* ``Calibration.threshold``: the deviation that clean holdout data exceeds with probability
  ``target_false_alarm_rate``; fitted at training time and stored with the model.
* ``lower_quantile`` / ``upper_quantile``: the forecast interval the deviation is measured in
  (quantile levels of the model's ``ForecastBatch``).
* ``step_scale``: per horizon step, how wide the model's interval is against the deviations it
  actually meets there on clean data (``fit_step_scale``). The engine widens or narrows each
  step's interval by it, so a deviation means the same at every step: otherwise the step whose
  interval is tightest against its errors (typically the first of a forecast block) carries
  most of the tail, and most of the false onsets.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# Calibrated thresholds are clamped here: below, the rule would fire inside a sane interval;
# above, it could never fire.
MIN_THRESHOLD = 0.5
MAX_THRESHOLD = 50.0


@dataclass(frozen=True)
class Calibration:
    """The decision rule fitted at training time and versioned with the model."""

    lower_quantile: float = 0.01
    upper_quantile: float = 0.99
    threshold: float = 1.0
    target_false_alarm_rate: float = 0.001
    n_calibration_points: int = 0
    step_scale: tuple[float, ...] = ()  # per horizon step; () = 1 everywhere

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["step_scale"] = list(self.step_scale)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        kw = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        if "step_scale" in kw:
            kw["step_scale"] = tuple(float(v) for v in kw["step_scale"])
        return cls(**kw)

    def scale_at(self, steps: int) -> list[float]:
        """The interval factor of horizon steps ``0 .. steps - 1`` (1 beyond the fitted ones)."""
        s = self.step_scale
        return [s[i] if i < len(s) else 1.0 for i in range(steps)]


# Fewer clean points than this at a horizon step leave its scale at 1 (too few to say).
MIN_STEP_POINTS = 200
# The statistic compared across steps: a high quantile of |deviation|, near the decision's
# tail yet with points beyond it at every step. Not the bulk: one-step-ahead errors are often
# small but heavy-tailed (a real glucose sensor: its q0.9 is half the other steps', its q0.998
# 1.4 times), so equal bulks would make the first step's tail, and its alarms, heavier still.
STEP_SCALE_QUANTILE = 0.99


def fit_step_scale(deviations: np.ndarray, steps: np.ndarray, horizon: int) -> tuple[float, ...]:
    """Per horizon step, the ``STEP_SCALE_QUANTILE`` of |deviation| at that step over the same
    quantile at all steps together: > 1 where the interval is too narrow for the errors."""
    dev = np.abs(np.asarray(deviations, dtype=np.float64))
    steps = np.asarray(steps)
    ok = np.isfinite(dev) & (steps >= 0) & (steps < horizon)
    dev, steps = dev[ok], steps[ok]
    if len(dev) < MIN_STEP_POINTS:
        return ()
    overall = float(np.quantile(dev, STEP_SCALE_QUANTILE))
    if not overall > 0:
        return ()
    out = []
    for h in range(horizon):
        at = dev[steps == h]
        q = float(np.quantile(at, STEP_SCALE_QUANTILE)) if len(at) >= MIN_STEP_POINTS else 0.0
        out.append(q / overall if q > 0 else 1.0)
    return tuple(out)


def calibrate(
    clean_deviations: Iterable[float],
    target_false_alarm_rate: float,
    lower_quantile: float = 0.01,
    upper_quantile: float = 0.99,
    step_scale: tuple[float, ...] = (),
) -> Calibration:
    """The threshold that clean data exceeds at ``target_false_alarm_rate``.

    Uses the empirical (1 - rate) quantile of deviations on clean holdout points. With fewer
    points than 1/rate the empirical tail is unreliable, so the maximum observed is used
    (conservative: fewer false alarms). The deviations are measured in the intervals that
    ``step_scale`` gives (divided by their step's factor).
    """
    devs = sorted(d for d in clean_deviations if math.isfinite(d))
    if not devs:
        raise ValueError("no clean holdout points to calibrate on")
    if not 0 < target_false_alarm_rate < 0.5:
        raise ValueError("target_false_alarm_rate must be in (0, 0.5)")
    idx = min(len(devs) - 1, math.ceil((1 - target_false_alarm_rate) * len(devs)) - 1)
    threshold = min(MAX_THRESHOLD, max(MIN_THRESHOLD, devs[max(idx, 0)]))
    return Calibration(
        lower_quantile=lower_quantile,
        upper_quantile=upper_quantile,
        threshold=threshold,
        target_false_alarm_rate=target_false_alarm_rate,
        n_calibration_points=len(devs),
        step_scale=step_scale,
    )
