"""Per-series state: a bounded window of recent values on the model's time grid, the current
forecast for the next steps, the evidence channels and the episode. Pure: no I/O, no model.

Readings are aligned to the grid (rounded to the nearest step). A reading for a grid step that
was already seen is a duplicate, an earlier one is late: both are counted and skipped, never
scored twice. Missing steps (gaps) enter the window as NaN, which the model fills. An outlier
enters the window as the forecast median, so an anomaly does not pollute later forecasts; when
an episode is accepted as the new normal, its real values are written back.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from iot_mlops.scoring.channels import Evidence, SeriesChannels, deviation
from iot_mlops.scoring.episodes import (
    Change,
    Episode,
    EpisodePolicy,
    EpisodeSummary,
    Onset,
    summarise,
)
from iot_mlops.scoring.liveness import Presence
from iot_mlops.scoring.rules import Rules


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
    deviation: float  # |deviation| from the forecast, in half-interval units
    predicted: float
    lower: float
    upper: float
    score: float  # anomaly_score in [0, 1): how rare the evidence is for this series
    outlier: bool  # score >= 0.5
    alarm: bool  # this reading opened an episode: one alarm per departure
    model_version: str
    grid_ms: int = 0  # the reading's time on the model's grid
    log_p: float = 0.0  # the combined evidence's log tail probability
    in_episode: bool = False  # the series is in an episode after this reading
    closed: bool = False  # this reading closed the series' episode
    fired: tuple[str, ...] = ()
    episode: EpisodeSummary | None = None  # on an open or a close
    hold_log_p: float | None = None  # in an episode: the evidence against the pre-onset level
    horizon_step: int = 0  # the forecast step the reading was scored against (0 = one ahead)

    @property
    def onset(self) -> bool:
        return self.alarm


@dataclass
class SeriesState:
    step_ms: int
    context_length: int
    key: str = ""  # the series id, for episode ids
    device_id: str = ""
    values: deque[float] = field(init=False)
    last_ms: int | None = None  # grid time of the newest value in ``values``
    observed: int = 0  # real (non-gap) values seen
    forecast: Forecast | None = None
    channels: SeriesChannels | None = None
    episode: Episode = field(default_factory=Episode)
    # The current episode's outliers: (grid time, real value), written back on acceptance.
    outlier_run: list[tuple[int, float]] = field(default_factory=list)
    # When it last reported, on its partition's log clock (None: liveness not tracked).
    presence: Presence | None = None

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
        if missing > 0 and self.channels is not None:
            self.channels.gap(int(missing))

    def fill_gap_before(self, grid_ms: int) -> None:
        """Before a forecast for a reading after a gap: the missing steps become NaN so the
        forecast starts exactly at the reading's step."""
        if self.last_ms is not None and grid_ms - self.step_ms > self.last_ms:
            self._advance_to(grid_ms)
            if self.observed:  # not reset by a long outage
                self.last_ms = grid_ms - self.step_ms

    def _channels(self, rules: Rules) -> SeriesChannels:
        if self.channels is None:
            self.channels = SeriesChannels.create(rules.channels, rules.calibration)
        return self.channels

    def warm(self, grid_ms: int, value: float, rules: Rules) -> None:
        ch = self._channels(rules)
        self._advance_to(grid_ms)
        ch.warm(value)
        self.values.append(value)
        self.last_ms = grid_ms
        self.observed += 1

    def score(self, grid_ms: int, value: float, rules: Rules) -> Scored:
        fc = self.forecast
        assert fc is not None
        i = fc.index(grid_ms)
        assert i is not None
        med, lo, hi = fc.median[i], fc.lower[i], fc.upper[i]
        ch = self._channels(rules)
        self._advance_to(grid_ms)  # gaps first: the season is kept on the grid
        dev = deviation(value, med, lo, hi)
        ev = ch.observe(value, dev)
        if rules.observe_only:
            ev = Evidence(0.0, 0.0, ())
        hold = ch.departure_log_p()  # None outside an episode: no baseline then
        change = self.episode.step(
            Onset(grid_ms, value, med, lo, hi),
            ev.log_p,
            ev.score,
            ev.fired,
            rules.log_rate,
            rules.episodes,
            hold,
        )
        if change is Change.OPENED:
            ch.mark_onset()
        elif change in (Change.CLOSED, Change.ACCEPTED):
            ch.end_episode()
        outlier = ev.score >= 0.5
        # Outliers enter the context as the forecast so they do not drag later forecasts.
        entered = med if outlier else value
        ch.learn(value, entered)
        self.values.append(entered)
        self.last_ms = grid_ms
        self.observed += 1
        self._track_outliers(grid_ms, value, outlier, change, rules.episodes)
        return Scored(
            abs(dev),
            med,
            lo,
            hi,
            ev.score,
            outlier,
            change is Change.OPENED,
            fc.model_version,
            grid_ms,
            ev.log_p,
            self.episode.open,
            change in (Change.CLOSED, Change.ACCEPTED),
            ev.fired,
            summarise(self.episode, self.key, change, grid_ms),
            hold,
            i,
        )

    def _track_outliers(
        self, grid_ms: int, value: float, outlier: bool, change: Change, policy: EpisodePolicy
    ) -> None:
        if outlier and (self.episode.open or change is Change.ACCEPTED):
            self.outlier_run.append((grid_ms, value))
        accepted_unlearnt = change is Change.ACCEPTED and not policy.relearns_before_accepting
        if change is Change.RELEARN or accepted_unlearnt:
            self._accept_regime()
        elif not self.episode.open:
            self.outlier_run.clear()

    def _accept_regime(self) -> None:
        """Write the episode's real values back into the window, forecast afresh from them,
        and let the channels relearn the level."""
        assert self.last_ms is not None
        n = len(self.values)
        for t, v in self.outlier_run:
            back = (self.last_ms - t) // self.step_ms
            if back < n:
                self.values[n - 1 - back] = v
        self.outlier_run.clear()
        self.forecast = None
        if self.channels is not None:
            self.channels.accept_regime()

    def context(self) -> tuple[int, np.ndarray]:
        """(grid time of the first value, values) for a forecast from ``last_ms``."""
        assert self.last_ms is not None
        vals = np.fromiter(self.values, dtype=np.float64, count=len(self.values))
        return self.last_ms - (len(vals) - 1) * self.step_ms, vals
