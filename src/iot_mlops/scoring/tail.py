"""How rare is a value under a series' own recent history: a tail probability. Pure, no I/O.

``TailModel`` keeps the last ``window`` values of one statistic (a channel's evidence) and
answers ``log_sf(x)``, the log of the probability that the statistic is at least ``x``:

* the body (below the ``1 - tail_share`` quantile ``u``) is the empirical survival;
* the tail (above ``u``) is an exponential fitted to the exceedances over ``u`` (peaks over
  threshold, the shape-0 generalised Pareto of extreme-value theory, as SPOT does for streams),
  so a value beyond everything seen still gets a finite and ever smaller probability: scores
  keep ranking instead of piling up at one value;
* the fitted scale is widened by ``1 + conservative / sqrt(k)`` (k exceedances): a tail fitted
  on few points is uncertain and the error that matters is the false alarm;
* below ``min_points`` values an exponential prior from 0 with scale ``prior_beta`` stands in
  (0 = no prior: the channel says nothing while it warms up).

The answer depends only on the last ``window`` values, in order, so a detector that rebuilds a
series from its recent log gets the same probabilities as one that ran uninterrupted. Values are
stored as float32 (a ring of arrival order plus a sorted copy, 8 bytes per value) to keep a
series' state small.
"""

from __future__ import annotations

import bisect
import math
from array import array
from dataclasses import dataclass, field

# log of the smallest probability reported for an infinite or non-finite statistic.
LOG_FLOOR = -745.0


@dataclass
class TailModel:
    window: int = 2000
    tail_share: float = 0.05
    min_points: int = 100
    prior_beta: float = 0.0
    conservative: float = 0.5
    ring: array = field(default_factory=lambda: array("f"))
    ordered: array = field(default_factory=lambda: array("f"))
    head: int = 0  # index of the oldest value in ``ring`` once it is full

    @property
    def n(self) -> int:
        return len(self.ordered)

    @property
    def ready(self) -> bool:
        """Whether ``log_sf`` says anything yet (own history or a prior)."""
        return len(self.ordered) >= self.min_points or self.prior_beta > 0

    def log_sf(self, x: float) -> float:
        """log P(statistic >= x); 0.0 when nothing is known yet."""
        n = len(self.ordered)
        if n < self.min_points:
            if self.prior_beta <= 0 or x <= 0:
                return 0.0
            return max(LOG_FLOOR, -x / self.prior_beta) if math.isfinite(x) else LOG_FLOOR
        if not math.isfinite(x):
            return LOG_FLOOR
        k = max(2, int(self.tail_share * n))
        u = self.ordered[n - k]
        if x <= u:
            above = n - bisect.bisect_left(self.ordered, x)
            return math.log((above + 1) / (n + 1))
        excess = sum(self.ordered[n - k + 1 :]) / (k - 1) - u
        beta = max(excess, 1e-6 * (abs(u) + 1e-6)) * (1.0 + self.conservative / math.sqrt(k))
        return max(LOG_FLOOR, math.log(k / (n + 1)) - (x - u) / beta)

    def update(self, x: float) -> None:
        if not math.isfinite(x):
            return
        x = array("f", (x,))[0]  # the stored (float32) value, so eviction finds it exactly
        if len(self.ring) < self.window:
            self.ring.append(x)
        else:
            old = self.ring[self.head]
            self.ring[self.head] = x
            self.head = (self.head + 1) % self.window
            del self.ordered[bisect.bisect_left(self.ordered, old)]
        bisect.insort(self.ordered, x)

    def quantile(self, q: float) -> float:
        n = len(self.ordered)
        return float(self.ordered[min(n - 1, max(0, int(q * n)))]) if n else math.nan

    def clear(self) -> None:
        self.ring = array("f")
        self.ordered = array("f")
        self.head = 0
