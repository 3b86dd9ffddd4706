"""Forecast → deviation → score → threshold → alarm. Pure functions, no I/O.

The same code scores the holdout at training time (to calibrate and to report precision and
recall) and every reading in the detector, so what training measured is what runs live.

* ``deviation``: how far the actual value lies from the forecast median, in units of the
  forecast interval's half-width on that side (1.0 = exactly on the interval edge). Using the
  model's own quantiles makes the rule scale-free and heteroscedastic-aware, unlike a flat
  percentage rule.
* ``Calibration.threshold``: the deviation that clean holdout data exceeds with probability
  ``target_false_alarm_rate``; fitted at training time and stored with the model.
* ``anomaly_score``: ``1 - 2**(-deviation/threshold)``, in [0, 1), monotone, 0.5 exactly at the
  threshold, so "score >= 0.5" is the decision whatever the series' scale.
* ``AlarmPolicy``/``AlarmState``: alarm hygiene (minimum consecutive outliers, per-series
  cooldown) as a tiny per-series state machine.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

# A width floor relative to the series' level, so a perfectly flat forecast (zero-width
# interval) gives a large but finite deviation instead of a division by zero.
_REL_EPS = 1e-6
_ABS_EPS = 1e-9
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

    @property
    def lower_column(self) -> str:
        return quantile_column(self.lower_quantile)

    @property
    def upper_column(self) -> str:
        return quantile_column(self.upper_quantile)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def quantile_column(q: float) -> str:
    """AutoGluon's column name for a quantile level (``0.01`` → ``"0.01"``)."""
    return str(q)


def deviation(actual: float, median: float, lower: float, upper: float) -> float:
    """Distance from the median in half-interval units on the side the actual value lies."""
    eps = max(_ABS_EPS, _REL_EPS * abs(median))
    if actual >= median:
        return (actual - median) / max(upper - median, eps)
    return (median - actual) / max(median - lower, eps)


def anomaly_score(dev: float, threshold: float) -> float:
    """Map a deviation to [0, 1): 0.5 at the threshold, → 1 far outside it."""
    if not math.isfinite(dev):
        return 1.0
    return 1.0 - 2.0 ** (-max(dev, 0.0) / threshold)


def is_outlier(score: float) -> bool:
    return score >= 0.5


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


@dataclass(frozen=True)
class AlarmPolicy:
    """Alarm hygiene. ``min_consecutive``: outliers in a row before the first alarm;
    ``cooldown``: points after an alarm during which the series does not alarm again."""

    min_consecutive: int = 1
    cooldown: int = 0

    def __post_init__(self) -> None:
        if self.min_consecutive < 1 or self.cooldown < 0:
            raise ValueError("min_consecutive must be >= 1 and cooldown >= 0")


@dataclass
class AlarmState:
    streak: int = 0
    cooldown_left: int = 0

    def step(self, outlier: bool, policy: AlarmPolicy) -> bool:
        """Advance by one scored point; True when this point raises an alarm."""
        self.streak = self.streak + 1 if outlier else 0
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            return False
        if outlier and self.streak >= policy.min_consecutive:
            self.cooldown_left = policy.cooldown
            return True
        return False


@dataclass(frozen=True)
class PointScore:
    deviation: float
    score: float
    outlier: bool


def score_point(
    actual: float, median: float, lower: float, upper: float, calibration: Calibration
) -> PointScore:
    dev = deviation(actual, median, lower, upper)
    s = anomaly_score(dev, calibration.threshold)
    return PointScore(dev, s, is_outlier(s))


def score_series(
    actual: Sequence[float],
    median: Sequence[float],
    lower: Sequence[float],
    upper: Sequence[float],
    calibration: Calibration,
    policy: AlarmPolicy = AlarmPolicy(),
) -> tuple[list[float], list[bool]]:
    """Score one series' points in order: (scores, alarms). The detector does exactly this,
    one point at a time, with the same ``AlarmState``."""
    state = AlarmState()
    scores: list[float] = []
    alarms: list[bool] = []
    for a, m, lo, hi in zip(actual, median, lower, upper, strict=True):
        p = score_point(a, m, lo, hi, calibration)
        scores.append(p.score)
        alarms.append(state.step(p.outlier, policy))
    return scores, alarms


@dataclass(frozen=True)
class Confusion:
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def confusion(predicted: Iterable[bool], labels: Iterable[bool]) -> Confusion:
    tp = fp = fn = tn = 0
    for p, y in zip(predicted, labels, strict=True):
        if p and y:
            tp += 1
        elif p:
            fp += 1
        elif y:
            fn += 1
        else:
            tn += 1
    return Confusion(tp, fp, fn, tn)
