"""A series' own season, found in its history, and how far it departs from it. Pure, no I/O.

The forecaster sees ``context_length`` steps (256 by default): 5-minute data has a daily
season of 288 steps and a weekly one of 2,016, so a level or an amplitude that changes against
the season is invisible to the residual (the model follows it within a few steps) and to the
level channel (the daily range is wider than the jump). ``Season`` keeps the last
``3 * max_period`` values on the series' own grid (gaps as NaN) and:

* finds the period from the data itself, not from the sampling interval (``evaluate`` puts
  every file on one synthetic grid, and a fleet's metrics differ): the lag of the highest peak
  of the autocorrelation after its first zero crossing, among lags up to a third of the
  history, accepted when the correlation there is at least ``min_acf`` and well above the one
  at half the lag (a real season alternates; a random walk's correlation only decays; with
  fewer than three seasons of history, a random walk imitates one in a quarter of the cases,
  with three in 1 of 40). It is looked for as history grows and again every ``max_period``
  steps;
* reports the mean ``|x_t - x_{t-P}|`` over the last ``w`` steps (16): how far the series is
  from the same phase one season ago, which the ``seasonal`` channel calibrates per series like
  every other statistic. Absolute, not signed: an amplitude change moves the difference up at
  the peaks and down in the troughs, which a signed sum cancels (measured on the generated
  corpora, docs/quality.md).

The values it keeps are those that entered the model's context (an outlier as the forecast),
so an anomaly does not echo one season later.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field

import numpy as np

_MIN_PERIOD = 4  # shorter "seasons" are the forecaster's business
# History lengths at which the period is looked for before the history is full. Not at 256:
# a season found that young left its tail model too young (false onsets on young series).
_CHECKS = (512, 1024, 2048, 4096)


def find_period(values: np.ndarray, max_period: int, min_acf: float) -> int:
    """The dominant season of ``values`` (NaN = missing) in steps, or 0 when there is none."""
    x = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(x)
    n = len(x)
    if ok.sum() < 4 * _MIN_PERIOD:
        return 0
    t = np.arange(n, dtype=np.float64)
    slope, icept = np.polyfit(t[ok], x[ok], 1)  # a trend is not a season
    z = np.where(ok, x - (slope * t + icept), 0.0)
    m = ok.astype(np.float64)
    size = 1 << (2 * n - 1).bit_length()
    fz, fm = np.fft.rfft(z, size), np.fft.rfft(m, size)
    cov = np.fft.irfft(fz * np.conj(fz), size)[: n // 2 + 1]
    pairs = np.fft.irfft(fm * np.conj(fm), size)[: n // 2 + 1]
    acf = cov / np.maximum(pairs, 1.0)
    if acf[0] <= 0:
        return 0
    acf = acf / acf[0]
    top = min(max_period, n // 3)  # three seasons at least: two are too easy to imitate
    below = np.flatnonzero(acf[1 : top + 1] <= 0)
    if not len(below):
        return 0
    lags = np.arange(int(below[0]) + 1, top + 1)
    lags = lags[lags >= _MIN_PERIOD]
    if not len(lags):
        return 0
    best = float(acf[lags].max())
    if best < min_acf:
        return 0
    # The first peak nearly as strong as the best (a daily season also peaks at 2, 3... days):
    # the first lag that reaches 0.9 of it, then up its slope to the top.
    first = int(lags[np.flatnonzero(acf[lags] >= 0.9 * best)[0]])
    end = min(top, first + first // 4) + 1
    p = first + int(np.argmax(acf[first:end]))
    # A peak at the edge of the lags searched is a trend or a random walk, not a season.
    return p if p < top and acf[p] - acf[p // 2] >= 0.5 else 0


@dataclass
class Season:
    max_period: int = 2016
    min_acf: float = 0.3
    window: int = 16
    period: int = 0
    buf: np.ndarray = field(init=False)
    head: int = 0  # where the next value goes
    count: int = 0  # values (and gaps) seen, capped at the buffer's size
    since_check: int = 0
    mute: int = 0  # steps left without a statistic (after the series' level was reset)
    diffs: deque[float] = field(init=False)  # the last ``window`` |differences|
    total: float = 0.0  # their sum

    def __post_init__(self) -> None:
        # Grown by doubling up to its capacity: a young series holds little.
        self.buf = np.full(min(256, self.capacity), np.nan, dtype=np.float32)
        self.diffs = deque(maxlen=self.window)

    @property
    def capacity(self) -> int:
        return 3 * self.max_period

    def lagged(self, lag: int) -> float:
        """The value ``lag`` steps before the next one (NaN if unknown)."""
        if lag <= 0 or lag > self.count:
            return math.nan
        return float(self.buf[(self.head - lag) % len(self.buf)])

    def statistic(self, value: float) -> float | None:
        """For the reading about to enter: its departure from one season ago; None while
        there is no season (or not enough of it)."""
        if self.period == 0 or self.mute > 0:
            return None
        d = abs(value - self.lagged(self.period))
        if math.isfinite(d):
            if len(self.diffs) == self.window:
                self.total -= self.diffs[0]
            self.diffs.append(d)
            self.total += d  # a running sum: O(1) per reading
        if len(self.diffs) < self.window:
            return None
        return max(self.total, 0.0) / self.window

    def _grow_to_hold(self, n: int) -> None:
        """Room for ``n`` more values: the buffer doubles (up to its capacity) while they do
        not fit. Below capacity it never wrapped, so its values are in order."""
        size = len(self.buf)
        while self.count + n > size < self.capacity:
            size = min(2 * size, self.capacity)
        if size != len(self.buf):
            grown = np.full(size, np.nan, dtype=np.float32)
            grown[: self.count] = self.buf[: self.count]
            self.buf, self.head = grown, self.count

    def push(self, value: float) -> bool:
        """A value enters the history (NaN for a missing step). True when the period changed
        (the channel's learnt statistics then mean something else)."""
        self._grow_to_hold(1)
        before = self.count
        self.buf[self.head] = value
        self.head = (self.head + 1) % len(self.buf)
        self.count = min(self.count + 1, len(self.buf))
        return self._advanced(1, before)

    def gap(self, steps: int) -> None:
        """``steps`` missing values at once, as that many pushes of NaN would leave it (an
        outage of a week is one slice assignment, not thousands of pushes)."""
        n = min(steps, self.capacity)
        if n <= 0:
            return
        self._grow_to_hold(n)
        before, size = self.count, len(self.buf)
        self.buf[(self.head + np.arange(min(n, size))) % size] = np.nan
        self.head = (self.head + n) % size
        self.count = min(self.count + n, size)
        self._advanced(n, before)

    def _advanced(self, n: int, before: int) -> bool:
        """After ``n`` values entered (the history held ``before``): the period is looked for
        when the history reached a check length or, once full, a period after the last look."""
        self.mute = max(0, self.mute - n)
        self.since_check += n
        # A check length in (before, count]: two C calls, not a generator per reading.
        due = bisect_right(_CHECKS, self.count) > bisect_right(_CHECKS, before) or (
            self.count == self.capacity and self.since_check >= self.max_period
        )
        if not due or self.max_period < _MIN_PERIOD:
            return False
        self.since_check = 0
        ordered = np.roll(self.buf, -self.head)[len(self.buf) - self.count :]
        p = find_period(ordered, self.max_period, self.min_acf)
        if p == self.period:
            return False
        self.period = p
        self.diffs.clear()
        self.total = 0.0
        return True

    def reset_level(self) -> None:
        """The series' level changed for good: one season ago says nothing for one season."""
        self.mute = self.period
        self.diffs.clear()
        self.total = 0.0
