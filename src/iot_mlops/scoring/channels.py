"""The evidence channels of one series and how they become one score. Pure, no I/O.

Each channel turns the stream into one statistic per reading and asks its own ``TailModel``
how rare the statistic is under this series' recent history (a log tail probability), so every
channel is calibrated per series on its own, whatever the series' scale, noise or burstiness:

* ``residual``: ``|deviation|`` of the reading from the forecast, in half-interval units on the
  side it lies (the model's own quantiles: scale-free, heteroscedastic-aware). Before the
  series has history, the model's calibration is the prior (an exponential tail that reaches
  the target rate exactly at the calibrated threshold).
* ``shift``: ``|sum of the last w signed deviations| / sqrt(w)``: a change of level or a drift
  smaller than the noise, which one reading cannot show (a two-window test on the residuals).
* ``level``: ``|mean of the last w values - median of the reference| / spread of the reference``
  where the reference is the series' recent values: a departure the forecast
  has followed (the model sees the new level in its context) or a value outside the range the
  series has shown.
* ``stuck``: the same value repeated exactly, for longer than this series' runs get.
* ``seasonal``: the mean ``|difference from one season ago|`` over the last w steps, the season
  found in the series' own history (``scoring/season.py``): a level or amplitude that changes
  against a season longer than the model's context.

``combine`` takes the smallest channel probability with a Bonferroni factor (the number of
channels that spoke), and ``score_of`` maps it to ``anomaly_score`` in [0, 1): ``L / (L + L*)``
with ``L = -log p`` and ``L* = -log target_rate``. It is 0.5 exactly at the target rate, monotone,
and never saturates: scores rank however rare the evidence.
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from dataclasses import dataclass, field, replace

from iot_mlops.scoring.calibrate import Calibration
from iot_mlops.scoring.names import CHANNELS
from iot_mlops.scoring.season import Season
from iot_mlops.scoring.tail import TailModel

# A width floor relative to the series' level, so a perfectly flat forecast (zero-width
# interval) gives a large but finite deviation instead of a division by zero.
_REL_EPS = 1e-6
_ABS_EPS = 1e-9


@dataclass(frozen=True)
class ChannelConfig:
    """How the channels learn (settings ``IOT_MLOPS_CHANNELS``, ``IOT_MLOPS_TAIL_*``)."""

    channels: tuple[str, ...] = CHANNELS
    window: int = 2000  # values each channel's TailModel remembers
    min_points: int = 100  # before this many, a channel is silent (residual: model prior)
    tail_share: float = 0.05
    conservative: float = 0.5
    shift_window: int = 8
    level_window: int = 8
    stuck_after: int = 10
    stuck_clustering: float = 3.0  # how much longer than geometric a normal run may be
    stuck_max_repeat_rate: float = 1.0  # silent above this repeat probability (1: never)
    season_max_period: int = 2016  # the longest season looked for, in steps (0 = none)
    season_min_acf: float = 0.3
    season_window: int = 16

    def __post_init__(self) -> None:
        unknown = set(self.channels) - set(CHANNELS)
        if unknown or not self.channels:
            raise ValueError(f"channels must be among {', '.join(CHANNELS)}; got {self.channels}")

    def tail(self, prior_beta: float = 0.0) -> TailModel:
        return TailModel(
            self.window, self.tail_share, self.min_points, prior_beta, self.conservative
        )


def deviation(actual: float, median: float, lower: float, upper: float) -> float:
    """Signed distance from the median in half-interval units on the side the value lies."""
    eps = max(_ABS_EPS, _REL_EPS * abs(median))
    if actual >= median:
        return (actual - median) / max(upper - median, eps)
    return -(median - actual) / max(median - lower, eps)


def prior_beta(calibration: Calibration) -> float:
    """Scale of the exponential tail that clean holdout deviations follow: P(|d| >= threshold)
    equals the target rate, as calibrated."""
    return calibration.threshold / -math.log(calibration.target_false_alarm_rate)


def score_of(log_p: float, log_rate: float) -> float:
    """[0, 1): 0.5 where p equals the target rate; monotone in -log p; never 1."""
    lp = max(-log_p, 0.0)
    return lp / (lp - log_rate)


@dataclass(frozen=True)
class PointScore:
    deviation: float
    score: float
    outlier: bool


def score_point(
    actual: float, median: float, lower: float, upper: float, calibration: Calibration
) -> PointScore:
    """What the model's calibration alone says of one reading (no series history)."""
    d = deviation(actual, median, lower, upper)
    log_p = max(-745.0, -abs(d) / prior_beta(calibration))
    s = score_of(log_p, math.log(calibration.target_false_alarm_rate))
    return PointScore(d, s, s >= 0.5)


@dataclass
class Flatline:
    """A stuck sensor: the same value repeated for longer than this series' runs get.

    Forecast deviations cannot see it (a stuck value is usually a plausible one), so it is a
    channel of its own. A run of ``run`` exact repeats reaches the target rate at ``needed``
    repeats and is rarer the longer it lasts (``log_rate * run / needed``), where ``needed``
    is the largest of:

    * ``after`` (a series that normally varies: 10 repeats);
    * what the series' own repeat probability ``r`` (an EWMA over its steps) makes rare,
      ``clustering`` times over: runs of a quantised or counting sensor are geometric at best
      (``r ** n``), and real ones cluster (a quiet night), so the bound is loose on purpose;
    * ``clustering`` times the longest normal run seen lately (decaying by ``memory`` per
      step), so quiet stretches as long as this series shows are normal.

    Runs that did not reach ``needed`` teach the repeat probability and the longest run. A
    stuck spell does not (it would teach the rule to accept itself, and a second stuck spell
    in the same series would pass), nor the run under way when a departure was accepted,
    until ``recur`` of them have come within the memory: a counter idle every night is
    flagged on the first nights, then its nights are its normal."""

    after: int = 10
    clustering: float = 3.0
    max_repeat_rate: float = 1.0  # silent above this (before 2026-12-05: 0.05, no clustering)
    memory: float = 0.9997  # per step: the longest run is remembered for a few thousand steps
    prev: float | None = None
    run: int = 0
    repeat_rate: float = 0.0
    recur: float = 3.0  # stuck spells within the memory that make their length normal
    longest: float = 0.0
    spells: float = 0.0  # stuck spells lately, and the longest of them (both decaying)
    spell_longest: float = 0.0
    accepted: bool = False  # the current run belongs to a departure accepted as normal

    def accept(self) -> None:
        """The departure is the new normal: silent for a while, and the run now under way
        (a stuck value, maybe) teaches nothing when it ends."""
        self.repeat_rate = 1.0
        self.accepted = True

    def _spell(self) -> None:
        """A stuck spell ended: once they recur, their length is this series' normal."""
        self.spells += 1.0
        self.spell_longest = max(self.spell_longest, float(self.run))
        if self.spells >= self.recur:
            self.longest = max(self.longest, self.spell_longest)

    def needed(self, log_rate: float) -> float:
        """The run length that reaches the target rate (inf: every run is normal here)."""
        r, c = self.repeat_rate, self.clustering
        if c > 0 and r >= 1.0:
            return math.inf
        geometric = c * log_rate / math.log(r) if c > 0 and r > 0 else 0.0
        return max(float(self.after), geometric, c * self.longest)

    def step(self, value: float, log_rate: float) -> float:
        """Advance by one value; returns the log probability of the current run."""
        self.longest *= self.memory
        self.spells *= self.memory
        self.spell_longest *= self.memory
        if self.prev is not None and value == self.prev:
            self.run += 1
        else:
            if self.run:  # a run ended; a lone value teaches only the repeat rate's decay
                self._ended(log_rate)
            self.repeat_rate -= 0.01 * self.repeat_rate
            self.run = 0
            self.accepted = False
        self.prev = value
        # A run shorter than ``after`` is never evidence: skip the logarithm (most readings).
        if self.after <= 0 or self.run < self.after:
            return 0.0
        needed = self.needed(log_rate)
        if self.repeat_rate > self.max_repeat_rate or not math.isfinite(needed):
            return 0.0
        return log_rate * self.run / needed

    def _ended(self, log_rate: float) -> None:
        if not self.accepted and self.run < self.needed(log_rate):
            for _ in range(self.run):
                self.repeat_rate += 0.01 * (1.0 - self.repeat_rate)
            self.longest = max(self.longest, float(self.run))
        elif self.run >= self.after:
            self._spell()


@dataclass(frozen=True)
class Evidence:
    log_p: float  # combined, Bonferroni-corrected
    score: float
    fired: tuple[str, ...]  # channels that alone reach the target rate


@dataclass(frozen=True)
class Baseline:
    """The level a series had before an episode's onset: its reference's median and spread and
    its level statistic's tail, frozen (the episode's own readings are not in them)."""

    median: float
    spread: float
    level: TailModel

    def log_p(self, recent: deque[float]) -> float:
        """How far the recent mean is from this level, as the level channel would have said."""
        return self.level.log_sf(abs(sum(recent) / len(recent) - self.median) / self.spread)


@dataclass
class SeriesChannels:
    """Every channel of one series: ``observe`` scores a reading, ``learn`` updates them."""

    config: ChannelConfig
    log_rate: float
    residual: TailModel
    shift: TailModel = field(init=False)
    level: TailModel = field(init=False)
    reference: TailModel = field(init=False)  # recent values
    flatline: Flatline = field(init=False)
    seasonal: TailModel = field(init=False)
    season: Season | None = field(init=False)
    recent_dev: deque[float] = field(init=False)
    recent_val: deque[float] = field(init=False)
    baseline: Baseline | None = None  # during an episode: the level before its onset
    _stats: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        c = self.config
        self.shift, self.level, self.reference = c.tail(), c.tail(), c.tail()
        self.flatline = Flatline(c.stuck_after, c.stuck_clustering, c.stuck_max_repeat_rate)
        self.seasonal = c.tail()
        self.season = (
            Season(c.season_max_period, c.season_min_acf, c.season_window)
            if "seasonal" in c.channels and c.season_max_period > 0
            else None
        )
        self.recent_dev = deque(maxlen=c.shift_window)
        self.recent_val = deque(maxlen=c.level_window)

    @classmethod
    def create(cls, config: ChannelConfig, calibration: Calibration) -> SeriesChannels:
        rate = calibration.target_false_alarm_rate
        return cls(config, math.log(rate), config.tail(prior_beta(calibration)))

    def warm(self, value: float) -> None:
        """A reading before scoring starts: it teaches the reference and the stuck rule."""
        self.flatline.step(value, self.log_rate)
        self.recent_val.append(value)
        self.reference.update(value)
        self._remember(value)

    def gap(self, steps: int) -> None:
        """Grid steps without a reading (the season is kept on the series' own grid)."""
        if self.season is not None:
            self.season.gap(steps)

    def _remember(self, value: float) -> None:
        if self.season is not None and self.season.push(value):
            self.seasonal.clear()  # a new period: the old statistics measured something else

    def observe(self, value: float, dev: float) -> Evidence:
        self.recent_dev.append(dev)
        self.recent_val.append(value)
        ev = {k: self._channel(k, value, dev) for k in self.config.channels}
        ev = {k: v for k, v in ev.items() if v is not None}
        bonferroni = math.log(max(1, len(ev)))
        log_p = min(0.0, min(ev.values(), default=0.0) + bonferroni)
        fired = tuple(k for k, v in ev.items() if v + bonferroni <= self.log_rate)
        return Evidence(log_p, score_of(log_p, self.log_rate), fired)

    def _channel(self, name: str, value: float, dev: float) -> float | None:
        """The channel's log tail probability; None while it cannot speak yet."""
        if name == "residual":
            self._stats[name] = abs(dev)
            return self.residual.log_sf(abs(dev))
        if name == "shift":
            if len(self.recent_dev) < self.config.shift_window:
                return None
            s = abs(sum(self.recent_dev)) / math.sqrt(len(self.recent_dev))
            self._stats[name] = s
            return self.shift.log_sf(s) if self.shift.ready else None
        if name == "level":
            s = self._level_stat()
            if s is None:
                return None
            self._stats[name] = s
            return self.level.log_sf(s) if self.level.ready else None
        if name == "seasonal":
            s = self.season.statistic(value) if self.season is not None else None
            if s is None:
                return None
            self._stats[name] = s
            return self.seasonal.log_sf(s) if self.seasonal.ready else None
        return self.flatline.step(value, self.log_rate)

    def _reference_level(self) -> tuple[float, float] | None:
        """(median, spread) of the recent values, once there are enough of them."""
        ref = self.reference
        if ref.n < self.config.min_points or len(self.recent_val) < self.config.level_window:
            return None
        med = ref.quantile(0.5)
        iqr = ref.quantile(0.75) - ref.quantile(0.25)
        # A quantised or nearly constant series has no IQR: fall back on 1 % of its range.
        spread = max(iqr, 0.01 * (ref.ordered[-1] - ref.ordered[0]), 1e-9 * (abs(med) + 1e-9))
        return med, spread

    def _level_stat(self) -> float | None:
        level = self._reference_level()
        if level is None:
            return None
        return abs(sum(self.recent_val) / len(self.recent_val) - level[0]) / level[1]

    def mark_onset(self) -> None:
        """An episode opened at the reading just observed: remember the level before it (a
        copy of the level tail's sorted values: a few KB, once per episode)."""
        level = self._reference_level() if "level" in self.config.channels else None
        if level is None or not self.level.ready:
            self.baseline = None
            return
        frozen = replace(self.level, ring=array("f"), ordered=array("f", self.level.ordered))
        self.baseline = Baseline(level[0], level[1], frozen)

    def departure_log_p(self) -> float | None:
        """The evidence that the series is still away from its pre-onset level."""
        if self.baseline is None or len(self.recent_val) < self.config.level_window:
            return None
        return self.baseline.log_p(self.recent_val)

    def end_episode(self) -> None:
        self.baseline = None

    def learn(self, value: float, entered: float | None = None) -> None:
        """After the decision, every channel learns its statistic, outliers included: bursts
        that recur become this series' normal instead of a false alarm each time (measured:
        freezing the reference during episodes kept false episodes open on drifting sensors).
        ``entered`` is what went into the model's context (an outlier: the forecast), which
        the season remembers so an anomaly does not return one season later."""
        for name, s in self._stats.items():
            getattr(self, name).update(s)
        self._stats.clear()
        self.reference.update(value)
        self._remember(value if entered is None else entered)

    def accept_regime(self) -> None:
        """The departure is the new normal: forget the old level."""
        self.reference.clear()
        self.level.clear()
        self.flatline.accept()
        if self.season is not None:
            self.season.reset_level()
