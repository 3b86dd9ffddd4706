"""The decision rule fitted at training time: how far a deviation may go on clean data.

* ``Calibration.threshold``: the deviation that clean holdout data exceeds with probability
  ``target_false_alarm_rate``; fitted at training time and stored with the model.
* ``lower_quantile`` / ``upper_quantile``: the forecast interval the deviation is measured in
  (quantile levels of the model's ``ForecastBatch``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def calibrate(
    clean_deviations: Iterable[float],
    target_false_alarm_rate: float,
    lower_quantile: float = 0.01,
    upper_quantile: float = 0.99,
) -> Calibration:
    """The threshold that clean data exceeds at ``target_false_alarm_rate``.

    Uses the empirical (1 - rate) quantile of deviations on clean holdout points. With fewer
    points than 1/rate the empirical tail is unreliable, so the maximum observed is used
    (conservative: fewer false alarms).
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
    )
