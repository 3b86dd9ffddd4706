"""Forecast → deviation → score → outlier: the evidence channels. Pure functions, no I/O.

The same code scores the holdout at training time (to calibrate and to report precision and
recall) and every reading in the detector, so what training measured is what runs live.

* ``deviation``: how far the actual value lies from the forecast median, in units of the
  forecast interval's half-width on that side (1.0 = exactly on the interval edge). Using the
  model's own quantiles makes the rule scale-free and heteroscedastic-aware, unlike a flat
  percentage rule.
* ``anomaly_score``: ``1 - 2**(-deviation/threshold)``, in [0, 1), monotone, 0.5 exactly at the
  threshold, so "score >= 0.5" is the decision whatever the series' scale.
* ``ResidualScale``: per-series adaptation. A model's interval can be systematically too
  narrow or too wide for one series (or on one side). Each series tracks the typical size of
  its own deviations on points judged normal and rescales new deviations by it, relative to
  what a well-calibrated interval would give; a series whose interval is right is unchanged.
* ``TailThreshold``: per-series false-alarm control. A series whose residuals are heavier-tailed
  than the calibration data (student-t noise, a season the model cannot see) exceeds the
  global threshold far more often than the target rate even after rescaling. Each series
  therefore also tracks the ``1 - target_false_alarm_rate`` quantile of its own recent
  deviations (outliers included, clipped) and uses it when it is above the calibrated
  threshold. On ``iot-mlops evaluate`` corpora this cut false-positive events by ~5x for a
  small loss of recall (docs/quality.md).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, field

from iot_mlops.scoring.calibrate import Calibration

# A width floor relative to the series' level, so a perfectly flat forecast (zero-width
# interval) gives a large but finite deviation instead of a division by zero.
_REL_EPS = 1e-6
_ABS_EPS = 1e-9


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


def _z(q: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(q)


@dataclass
class ResidualScale:
    """Online scale of one series' deviations, per side (above / below the median).

    Tracks an exponentially weighted mean of squared deviations on points judged normal,
    starting from what a well-calibrated interval gives (``1/z**2``, z the interval's normal
    quantile) with ``prior_weight`` points of weight, so a new series trusts the model's
    interval and adapts as evidence comes in. Updates are clipped so an unflagged anomaly
    cannot inflate the scale by much.
    """

    upper_quantile: float = 0.99
    window: int = 500
    prior_weight: int = 50
    clip: float = 3.0
    up: float = field(default=-1.0)
    down: float = field(default=-1.0)
    n_up: int = 0
    n_down: int = 0

    def __post_init__(self) -> None:
        self.prior = 1.0 / _z(self.upper_quantile) ** 2
        if self.up < 0:
            self.up = self.prior
        if self.down < 0:
            self.down = self.prior

    def factor(self, above: bool) -> float:
        """Divide a deviation by this: > 1 when the series' deviations run larger than the
        model's interval implies. Floored so a too-wide interval sharpens at most 4x."""
        ms = self.up if above else self.down
        return max(0.25, math.sqrt(ms / self.prior))

    def update(self, dev: float, above: bool) -> None:
        d2 = min(dev, self.clip) ** 2
        if above:
            self.n_up += 1
            a = 1.0 / min(self.n_up + self.prior_weight, self.window)
            self.up += a * (d2 - self.up)
        else:
            self.n_down += 1
            a = 1.0 / min(self.n_down + self.prior_weight, self.window)
            self.down += a * (d2 - self.down)


@dataclass
class TailThreshold:
    """A series' own threshold: the ``1 - rate`` quantile of its last ``window`` deviations,
    used once ``min_points`` are seen and only where it is above the calibrated threshold.

    Outliers are kept in the window (clipped at ``clip`` times the calibrated threshold):
    leaving them out would censor the tail and the quantile could never rise above the
    threshold it is meant to correct. The window is kept sorted (insert and evict by bisection,
    ~1 µs at 1,000 points), so the quantile is exact at every point and depends only on the
    last ``window`` deviations: a detector that rebuilds a series from its recent log gets the
    same threshold as one that ran uninterrupted.
    """

    rate: float = 0.002
    window: int = 1000
    min_points: int = 500
    clip: float = 5.0
    recent: deque[float] = field(init=False)
    ordered: list[float] = field(init=False)

    def __post_init__(self) -> None:
        self.recent = deque()
        self.ordered = []

    @property
    def value(self) -> float:
        n = len(self.ordered)
        if n < self.min_points:
            return 0.0
        return self.ordered[min(n - 1, math.ceil((1 - self.rate) * n) - 1)]

    def threshold(self, calibrated: float) -> float:
        return max(calibrated, self.value)

    def update(self, dev: float, calibrated: float) -> None:
        cap = self.clip * calibrated
        d = min(dev, cap) if math.isfinite(dev) else cap
        self.recent.append(d)
        bisect.insort(self.ordered, d)
        if len(self.recent) > self.window:
            old = self.recent.popleft()
            del self.ordered[bisect.bisect_left(self.ordered, old)]


@dataclass
class Flatline:
    """A stuck sensor: the same value repeated exactly, by a series that normally varies.

    Forecast deviations cannot see it (a stuck value is usually a plausible one), so it is a
    rule of its own: ``after`` exact repeats in a row make an outlier, unless exact repeats
    are common in this series' normal data (a quantised sensor), tracked as an EWMA.
    """

    after: int = 10
    max_repeat_rate: float = 0.05
    prev: float | None = None
    run: int = 0
    repeat_rate: float = 0.0

    def step(self, value: float) -> float:
        """Advance by one value; returns a score in [0, 1) (>= 0.5 once stuck)."""
        if self.prev is not None and value == self.prev:
            self.run += 1
        else:
            # A run ended: short runs are this series' normal repeat rate; a stuck run is not
            # learnt from (it would teach the rule to accept itself).
            if self.run < self.after:
                for _ in range(self.run):
                    self.repeat_rate += 0.01 * (1.0 - self.repeat_rate)
            self.repeat_rate -= 0.01 * self.repeat_rate
            self.run = 0
        self.prev = value
        if self.after <= 0 or self.run < self.after or self.repeat_rate > self.max_repeat_rate:
            return 0.0
        return 1.0 - 2.0 ** (-self.run / self.after)


@dataclass(frozen=True)
class PointScore:
    deviation: float  # after per-series adaptation, when a scale is given
    score: float
    outlier: bool


def score_point(
    actual: float,
    median: float,
    lower: float,
    upper: float,
    calibration: Calibration,
    scale: ResidualScale | None = None,
    tail: TailThreshold | None = None,
) -> PointScore:
    """Score one point; with a ``scale`` (and a ``tail``), adapt to the series and learn from
    the point."""
    raw = deviation(actual, median, lower, upper)
    above = actual >= median
    dev = raw / scale.factor(above) if scale is not None else raw
    threshold = tail.threshold(calibration.threshold) if tail is not None else calibration.threshold
    s = anomaly_score(dev, threshold)
    outlier = is_outlier(s)
    if scale is not None and not outlier:
        scale.update(raw, above)
    if tail is not None:
        tail.update(dev, calibration.threshold)
    return PointScore(dev, s, outlier)
