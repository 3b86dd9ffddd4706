"""Per-series state: a bounded window of recent values on the model's time grid, the current
forecast for the next steps, and the alarm state. Pure: no I/O, no model.

Readings are aligned to the grid (rounded to the nearest step). A reading for a grid step that
was already seen is a duplicate, an earlier one is late: both are counted and skipped, never
scored twice. Missing steps (gaps) enter the window as NaN, which the model fills. A flagged
value enters the window as the forecast median, so an anomaly does not pollute later forecasts.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from iot_mlops.scoring.alarms import AlarmPolicy, AlarmState
from iot_mlops.scoring.calibrate import Calibration
from iot_mlops.scoring.channels import Flatline, ResidualScale, TailThreshold, score_point


class Outcome(StrEnum):
    SCORED = "scored"
    WARMING_UP = "warming_up"
    LATE = "late"
    DUPLICATE = "duplicate"
    NEEDS_FORECAST = "needs_forecast"  # internal: the engine refreshes, then retries


@dataclass(frozen=True)
class Forecast:
    """The model's forecast for steps ``start_ms, start_ms + step_ms, ...``."""

    start_ms: int
    step_ms: int
    # Python lists: element access on them is several times cheaper than on numpy arrays.
    median: list[float]
    lower: list[float]
    upper: list[float]
    model_version: str

    def index(self, grid_ms: int) -> int | None:
        i, rem = divmod(grid_ms - self.start_ms, self.step_ms)
        return int(i) if rem == 0 and 0 <= i < len(self.median) else None


@dataclass(frozen=True)
class Scored:
    deviation: float
    predicted: float
    lower: float
    upper: float
    score: float
    outlier: bool
    alarm: bool
    model_version: str


@dataclass
class SeriesState:
    step_ms: int
    context_length: int
    values: deque[float] = field(init=False)
    last_ms: int | None = None  # grid time of the newest value in ``values``
    observed: int = 0  # real (non-gap) values seen
    forecast: Forecast | None = None
    alarm: AlarmState = field(default_factory=AlarmState)
    scale: ResidualScale | None = None
    tail: TailThreshold | None = None
    flatline: Flatline = field(default_factory=Flatline)
    # The current run of outliers: (grid time, real value), for regime acceptance.
    outlier_run: list[tuple[int, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.values = deque(maxlen=self.context_length)

    def align(self, ts_ms: int) -> int:
        return round(ts_ms / self.step_ms) * self.step_ms

    def classify(self, grid_ms: int, min_history: int) -> Outcome:
        """What would happen to a reading at ``grid_ms`` (no mutation)."""
        if self.last_ms is not None and grid_ms <= self.last_ms:
            return Outcome.DUPLICATE if grid_ms == self.last_ms else Outcome.LATE
        if self.observed < min_history:
            return Outcome.WARMING_UP
        if self.forecast is None or self.forecast.index(grid_ms) is None:
            return Outcome.NEEDS_FORECAST
        return Outcome.SCORED

    def _advance_to(self, grid_ms: int) -> None:
        """Append NaN for the grid steps missing before ``grid_ms``."""
        if self.last_ms is None:
            return
        missing = (grid_ms - self.last_ms) // self.step_ms - 1
        if missing >= self.context_length:
            # A long outage: the old window says nothing about now. Start over.
            self.values.clear()
            self.observed = 0
            self.forecast = None
        elif missing > 0:
            self.values.extend([math.nan] * int(missing))

    def fill_gap_before(self, grid_ms: int) -> None:
        """Before a forecast for a reading after a gap: the missing steps become NaN so the
        forecast starts exactly at the reading's step."""
        if self.last_ms is not None and grid_ms - self.step_ms > self.last_ms:
            self._advance_to(grid_ms)
            if self.observed:  # not reset by a long outage
                self.last_ms = grid_ms - self.step_ms

    def warm(self, grid_ms: int, value: float) -> None:
        self.flatline.step(value)
        self._advance_to(grid_ms)
        self.values.append(value)
        self.last_ms = grid_ms
        self.observed += 1

    def score(
        self,
        grid_ms: int,
        value: float,
        calibration: Calibration,
        policy: AlarmPolicy,
        accept_after: int = 0,
    ) -> Scored:
        fc = self.forecast
        assert fc is not None
        i = fc.index(grid_ms)
        assert i is not None
        med, lo, hi = fc.median[i], fc.lower[i], fc.upper[i]
        if self.scale is None:
            self.scale = ResidualScale(upper_quantile=calibration.upper_quantile)
        if self.tail is None:
            self.tail = TailThreshold(rate=calibration.target_false_alarm_rate)
        p = score_point(value, med, lo, hi, calibration, self.scale, self.tail)
        stuck = self.flatline.step(value)
        score, outlier = max(p.score, stuck), p.outlier or stuck >= 0.5
        alarm = self.alarm.step(outlier, policy)
        self._advance_to(grid_ms)
        # Outliers enter the context as the forecast so they do not drag later forecasts.
        self.values.append(med if outlier else value)
        self.last_ms = grid_ms
        self.observed += 1
        if outlier:
            self.outlier_run.append((grid_ms, value))
            if accept_after and len(self.outlier_run) >= accept_after:
                self._accept_regime()
        else:
            self.outlier_run.clear()
        return Scored(p.deviation, med, lo, hi, score, outlier, alarm, fc.model_version)

    def _accept_regime(self) -> None:
        """Write the run's real values back into the window and forecast afresh from them."""
        assert self.last_ms is not None
        n = len(self.values)
        for t, v in self.outlier_run:
            back = (self.last_ms - t) // self.step_ms
            if back < n:
                self.values[n - 1 - back] = v
        self.outlier_run.clear()
        self.forecast = None
        # A flat line that lasted this long is this series' new normal (e.g. a valve closed):
        # repeats stop counting as stuck until the series varies for a while again.
        self.flatline.repeat_rate = 1.0

    def context(self) -> tuple[int, np.ndarray]:
        """(grid time of the first value, values) for a forecast from ``last_ms``."""
        assert self.last_ms is not None
        vals = np.fromiter(self.values, dtype=np.float64, count=len(self.values))
        return self.last_ms - (len(vals) - 1) * self.step_ms, vals
